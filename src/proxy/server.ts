/**
 * Server-side proxy: accepts stripes, reads each one's HELLO, lets admission (handshake.ts) decide, and
 * bridges each session to one connection to its target. The registry holds the sessions; this file is
 * the I/O around the two.
 */

import { BrokenError, ProtocolError, StriperError } from "../errors.ts";
import { Bridge } from "../pipe/bridge.ts";
import { DEFAULT_SESSION_OPTIONS, type StripedPipe, type SessionOptions } from "../pipe/striped.ts";
import type { BufferBudget } from "../stripe/budget.ts";
import { connectTcp, formatAddress, listenTcp, type Address, type TcpListener, type TcpPipe } from "../pipe/tcp.ts";
import { STATUS_OK, VERSION } from "../wire/constants.ts";
import { encodeWelcome, helloParser } from "../wire/handshake.ts";
import { admit, readHandshake, type AdmissionPolicy, type RefuseStatus } from "./handshake.ts";
import { sessionEndLine, stderrLog, type LogSink } from "./log.ts";
import { SessionRegistry } from "./registry.ts";
import { SessionFactory } from "./sessions.ts";

/** Options of the server-side proxy. */
export interface ServerOptions {
  listen: Address;
  target: Address;
  session?: Partial<Omit<SessionOptions, "role">>;
  /** Absolute deadline for a stripe's HELLO. */
  handshakeTimeoutMs?: number;
  /** Sessions at once; more are refused. */
  maxSessions?: number;
  /** Highest stripe index + 1 accepted in a session. */
  maxStripes?: number;
  /** Bytes all sessions together may hold unacknowledged (default 32 MiB). */
  maxBuffer?: number;
  log?: LogSink;
}

/** A running server-side proxy. */
export interface StriperServer {
  readonly port: number;
  /** Registered sessions by hex id. */
  readonly sessions: ReadonlyMap<string, StripedPipe>;
  /** The memory budget all sessions share (for statistics and tests). */
  readonly budget: BufferBudget;
  /** Stops accepting and resets every session. */
  stop(): void;
}

/** How long a refused stripe stays open after the refusal, so the WELCOME reaches the client. */
const REFUSE_LINGER_MS = 1000;

/** Starts the server-side proxy. */
export function startServer(opts: ServerOptions): StriperServer {
  const log = opts.log ?? stderrLog;
  const sessionOpts: SessionOptions = { ...DEFAULT_SESSION_OPTIONS, ...opts.session, role: "server" };
  const handshakeTimeout = opts.handshakeTimeoutMs ?? 5000;
  const policy: AdmissionPolicy = { maxStripes: opts.maxStripes ?? 64, target: opts.target };
  const registry = new SessionRegistry<StripedPipe>(opts.maxSessions ?? 1024);
  const factory = new SessionFactory(sessionOpts, opts.maxBuffer);

  const refuse = (pipe: TcpPipe, status: RefuseStatus): void => {
    pipe.send(encodeWelcome({ version: VERSION, status, window: 0 }));
    pipe.shutdown();
    setTimeout(() => pipe.close(), REFUSE_LINGER_MS).unref();
  };

  const openSession = (key: string, peerWindow: number, to: Address): StripedPipe => {
    const session = factory.open(registry.size, peerWindow);
    registry.add(key, session);
    const target = connectTcp(to);
    const started = performance.now();
    log(`session ${key.slice(0, 12)} start target ${formatAddress(to)}`);
    // A target that cannot be reached ends the session at once; the client sees a reset.
    new Bridge(session, target, (r) => {
      registry.remove(key, session);
      log(sessionEndLine(key.slice(0, 12), r.aToB.bytes, r.bToA.bytes, performance.now() - started, session.metrics(), r.error));
    });
    return session;
  };

  const onStripe = (pipe: TcpPipe): void => {
    readHandshake(pipe, helloParser, { deadlineMs: handshakeTimeout }, (r) => {
      if (r instanceof StriperError) {
        // Garbage on the port (the parser's ProtocolError): no detail, no reply, just a close.
        const what = r instanceof ProtocolError ? "not a stripe handshake" : r.message;
        log(`stripe from ${pipe.remote} dropped: ${r.code} ${what}`);
        pipe.close(r);
        return;
      }
      const hello = r.value;
      const a = admit(hello, registry, policy);
      let session: StripedPipe;
      switch (a.kind) {
        case "refuse":
          log(`stripe from ${pipe.remote} refused: ${a.reason}`);
          refuse(pipe, a.status);
          return;
        case "open":
          session = openSession(a.key, hello.window, a.target);
          break;
        case "attach":
          session = a.session;
          break;
        default: {
          const unknown: never = a;
          throw new Error(`unknown admission ${JSON.stringify(unknown)}`);
        }
      }
      pipe.send(encodeWelcome({ version: VERSION, status: STATUS_OK, window: session.opts.window }));
      session.attach(hello.stripeIndex, hello.generation, pipe, r.leftover);
      pipe.resume();
    });
  };

  const listener: TcpListener = listenTcp(opts.listen, onStripe);
  log(`server listening on ${formatAddress({ host: opts.listen.host, port: listener.port })} target ${formatAddress(opts.target)}`);
  return {
    port: listener.port,
    sessions: registry.sessions,
    budget: factory.budget,
    stop() {
      registry.stopOpening();
      factory.stop();
      listener.stop();
      for (const s of registry.sessions.values()) s.close(new BrokenError("E_SHUTDOWN", "server proxy shutting down"));
    },
  };
}
