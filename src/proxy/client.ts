/**
 * Client-side proxy: takes app connections from a front (a plain listener unless another is given); for
 * each, opens N stripes to the server proxy under a fresh random session id and bridges the app to the
 * striped session. The dialer decides what to dial and when, the handshake module judges each WELCOME;
 * this file is the I/O between them and the session.
 */

import { randomBytes } from "node:crypto";
import { BrokenError, ConnectError, StriperError } from "../errors.ts";
import { Bridge } from "../pipe/bridge.ts";
import { DEFAULT_SESSION_OPTIONS, type StripedPipe, type SessionOptions } from "../pipe/striped.ts";
import type { BufferBudget } from "../stripe/budget.ts";
import { connectTcp, formatAddress, type Address } from "../pipe/tcp.ts";
import { SESSION_ID_SIZE, VERSION } from "../wire/constants.ts";
import { encodeHello, welcomeParser } from "../wire/handshake.ts";
import { StripeDialer, type DialAttempt } from "./dialer.ts";
import { plainFront, type AppConnection, type Front } from "./front.ts";
import { judgeWelcome, readHandshake } from "./handshake.ts";
import { hexId, sessionEndLine, stderrLog, type LogSink } from "./log.ts";
import { SessionFactory } from "./sessions.ts";

/** Settings of the client-side proxy, whatever its front. */
export interface ClientSettings {
  /** The server proxy. */
  peer: Address;
  /** Stripes per session (default 4). */
  stripes?: number;
  session?: Partial<Omit<SessionOptions, "role">>;
  /** Absolute deadline for a stripe's WELCOME, ms (default 5000). */
  handshakeTimeoutMs?: number;
  /** Bytes all sessions together may hold unacknowledged (default 32 MiB). */
  maxBuffer?: number;
  log?: LogSink;
}

/** Options of the client-side proxy: app connections come from a plain listener on `listen`, or from `front`. */
export type ClientOptions = ClientSettings & ({ listen: Address; front?: undefined } | { front: Front; listen?: undefined });

/** A running client-side proxy. */
export interface StriperClient {
  readonly port: number;
  /** Live sessions. */
  readonly sessions: Set<StripedPipe>;
  /** The memory budget all sessions share (for statistics and tests). */
  readonly budget: BufferBudget;
  /** Stops accepting and resets every session. */
  stop(): void;
}

/** Starts the client-side proxy. */
export function startClient(opts: ClientOptions): StriperClient {
  const log = opts.log ?? stderrLog;
  const n = opts.stripes ?? 4;
  const sessionOpts: SessionOptions = { ...DEFAULT_SESSION_OPTIONS, ...opts.session, role: "client" };
  const handshakeTimeout = opts.handshakeTimeoutMs ?? 5000;
  const peerName = formatAddress(opts.peer);
  const sessions = new Set<StripedPipe>();
  const factory = new SessionFactory(sessionOpts, opts.maxBuffer);

  // The destination is not used yet: v1 carries none, the server connects every session to its target.
  const onApp = (app: AppConnection): void => {
    const sessionId = randomBytes(SESSION_ID_SIZE);
    const id = hexId(sessionId);
    const session = factory.open(sessions.size);
    session.id = id;
    sessions.add(session);
    const started = performance.now();

    const dialStripe = (a: DialAttempt): void => {
      if (session.closed) return;
      const pipe = connectTcp(opts.peer);
      const hello = encodeHello({
        version: VERSION,
        kind: a.kind,
        stripeIndex: a.index,
        stripeCount: n,
        generation: a.generation,
        sessionId,
        window: session.opts.window,
      });
      const stripeFailed = (err: StriperError): void => {
        pipe.close(err);
        dialer.failed(a.index, err);
      };
      readHandshake(pipe, welcomeParser, { deadlineMs: handshakeTimeout, onReady: () => pipe.send(hello) }, (r) => {
        if (session.closed) {
          pipe.close();
          return;
        }
        if (r instanceof StriperError) return stripeFailed(r);
        const verdict = judgeWelcome(r.value);
        switch (verdict.kind) {
          case "attach":
            dialer.succeeded(a.index);
            session.setPeerWindow(verdict.window);
            session.attach(a.index, a.generation, pipe, r.leftover);
            pipe.resume();
            return;
          case "retry":
            return stripeFailed(verdict.error);
          case "end":
            pipe.close();
            session.close(verdict.error);
            return;
          default: {
            const unknown: never = verdict;
            throw new Error(`unknown WELCOME verdict ${JSON.stringify(unknown)}`);
          }
        }
      });
    };

    const dialer = new StripeDialer({
      stripes: n,
      dial: dialStripe,
      unreachable: (err) => session.close(new ConnectError(err.code, `server proxy ${peerName} unreachable: ${err.message}`)),
    });
    session.redial = (index) => dialer.redial(index);

    log(`session ${id} start app ${app.remote} stripes ${n} peer ${peerName}`);
    new Bridge(app.pipe, session, (r) => {
      dialer.stop();
      sessions.delete(session);
      log(sessionEndLine(id, r.aToB.bytes, r.bToA.bytes, performance.now() - started, session.metrics(), r.error));
    });
    dialer.start();
  };

  const listener = (opts.front ?? plainFront(opts.listen)).listen(onApp);
  log(`client listening on ${listener.address} peer ${peerName} stripes ${n}`);
  return {
    port: listener.port,
    sessions,
    budget: factory.budget,
    stop() {
      factory.stop();
      listener.stop();
      for (const s of sessions) s.close(new BrokenError("E_SHUTDOWN", "client proxy shutting down"));
    },
  };
}
