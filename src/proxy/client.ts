/**
 * Client-side proxy: accepts app connections; for each, opens N stripes to the server proxy under a
 * fresh random session id and bridges the app to the striped session. Dead stripes are re-dialled with
 * jittered exponential backoff.
 */

import { randomBytes } from "node:crypto";
import { BrokenError, ConnectError, StriperError } from "../errors.ts";
import { Bridge } from "../pipe/bridge.ts";
import { DEFAULT_SESSION_OPTIONS, type StripedPipe, type SessionOptions } from "../pipe/striped.ts";
import type { BufferBudget } from "../stripe/budget.ts";
import { SessionFactory } from "./sessions.ts";
import { connectTcp, formatAddress, listenTcp, type Address, type TcpListener, type TcpPipe } from "../pipe/tcp.ts";
import { decodeWelcome, encodeHello } from "../wire/codec.ts";
import {
  HELLO_JOIN,
  HELLO_OPEN,
  SESSION_ID_SIZE,
  STATUS_BAD_VERSION,
  STATUS_OK,
  STATUS_UNKNOWN_SESSION,
  VERSION,
  WELCOME_SIZE,
} from "../wire/constants.ts";
import { readHandshake } from "./handshake.ts";
import { hexId, sessionEndLine, stderrLog, type LogSink } from "./log.ts";

/** Options of the client-side proxy. */
export interface ClientOptions {
  listen: Address;
  peer: Address;
  /** Stripes per session (default 4). */
  stripes?: number;
  session?: Partial<Omit<SessionOptions, "role">>;
  handshakeTimeoutMs?: number;
  /** Bytes all sessions together may hold unacknowledged (default 32 MiB). */
  maxBuffer?: number;
  log?: LogSink;
}

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

const BACKOFF_BASE_MS = 50;
const BACKOFF_MAX_MS = 2000;

/** Starts the client-side proxy. */
export function startClient(opts: ClientOptions): StriperClient {
  const log = opts.log ?? stderrLog;
  const n = opts.stripes ?? 4;
  const sessionOpts: SessionOptions = { ...DEFAULT_SESSION_OPTIONS, ...opts.session, role: "client" };
  const handshakeTimeout = opts.handshakeTimeoutMs ?? 5000;
  const sessions = new Set<StripedPipe>();
  const factory = new SessionFactory(sessionOpts, opts.maxBuffer);

  const onApp = (app: TcpPipe): void => {
    const sessionId = randomBytes(SESSION_ID_SIZE);
    const id = hexId(sessionId);
    const session = factory.open(sessions.size);
    session.id = id;
    sessions.add(session);
    const started = performance.now();
    const generation = new Array<number>(n).fill(0);
    const failures = new Array<number>(n).fill(0);
    let everOpen = false;
    const failedInitial: number[] = [];

    const dial = (index: number): void => {
      if (session.closed) return;
      const gen = (generation[index] = (generation[index]! + 1) & 0xffff);
      const pipe = connectTcp(opts.peer);
      const hello = encodeHello({
        version: VERSION,
        kind: everOpen ? HELLO_JOIN : HELLO_OPEN,
        stripeIndex: index,
        stripeCount: n,
        generation: gen,
        sessionId,
        window: session.opts.window,
      });
      readHandshake(pipe, WELCOME_SIZE, handshakeTimeout, () => pipe.send(hello), (r) => {
        if (session.closed) {
          pipe.close();
          return;
        }
        let err: StriperError | undefined;
        if (r instanceof StriperError) err = r;
        else {
          try {
            const w = decodeWelcome(r.message);
            if (w.version !== VERSION || w.status === STATUS_BAD_VERSION) {
              pipe.close();
              session.close(new ConnectError("E_BAD_VERSION", `server proxy speaks protocol version ${w.version}, not ${VERSION}`));
              return;
            }
            if (w.status === STATUS_OK) {
              failures[index] = 0;
              if (!everOpen) {
                everOpen = true;
                // Stripes whose first dial failed before any succeeded are re-dialled now.
                for (const i of failedInitial.splice(0)) redial(i);
              }
              session.setPeerWindow(w.window);
              session.attach(index, gen, pipe, r.leftover);
              pipe.resume();
              return;
            }
            if (w.status === STATUS_UNKNOWN_SESSION) {
              pipe.close();
              session.close(new BrokenError("E_SESSION_LOST", "server proxy no longer has this session"));
              return;
            }
            err = new ConnectError("E_REFUSED", `server proxy refused the stripe (status ${w.status})`);
          } catch (e) {
            err = e as StriperError;
          }
        }
        pipe.close(err);
        stripeFailed(index, err);
      });
    };

    const stripeFailed = (index: number, err: StriperError): void => {
      if (!everOpen) {
        // Before the session ever opened: fail fast once every initial stripe has failed.
        failedInitial.push(index);
        if (failedInitial.length >= n) {
          session.close(new ConnectError(err.code, `server proxy ${formatAddress(opts.peer)} unreachable: ${err.message}`));
        }
        return;
      }
      redial(index);
    };

    const redial = (index: number): void => {
      if (session.closed) return;
      const k = failures[index]!++;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** k) * (0.5 + Math.random());
      setTimeout(() => dial(index), delay).unref();
    };
    session.redial = redial;

    log(`session ${id} start app ${app.remote} stripes ${n} peer ${formatAddress(opts.peer)}`);
    new Bridge(app, session, (r) => {
      sessions.delete(session);
      log(sessionEndLine(id, r.aToB.bytes, r.bToA.bytes, performance.now() - started, session.metrics(), r.error));
    });
    for (let i = 0; i < n; i++) dial(i);
  };

  const listener: TcpListener = listenTcp(opts.listen, onApp);
  log(`client listening on ${formatAddress({ host: opts.listen.host, port: listener.port })} peer ${formatAddress(opts.peer)} stripes ${n}`);
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
