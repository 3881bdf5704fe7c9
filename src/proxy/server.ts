/**
 * Server-side proxy: accepts stripes, groups them by session id, and bridges each session to one
 * connection to the target.
 */

import { BrokenError, StriperError } from "../errors.ts";
import { Bridge } from "../pipe/bridge.ts";
import { DEFAULT_SESSION_OPTIONS, type StripedPipe, type SessionOptions } from "../pipe/striped.ts";
import type { BufferBudget } from "../stripe/budget.ts";
import { SessionFactory } from "./sessions.ts";
import { connectTcp, formatAddress, listenTcp, type Address, type TcpListener, type TcpPipe } from "../pipe/tcp.ts";
import { decodeHello, encodeWelcome } from "../wire/codec.ts";
import {
  HELLO_JOIN,
  HELLO_OPEN,
  HELLO_SIZE,
  STATUS_BAD_VERSION,
  STATUS_OK,
  STATUS_REFUSED,
  STATUS_UNKNOWN_SESSION,
  VERSION,
} from "../wire/constants.ts";
import { readHandshake } from "./handshake.ts";
import { sessionEndLine, stderrLog, type LogSink } from "./log.ts";

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
  /** Live sessions by hex id. */
  readonly sessions: Map<string, StripedPipe>;
  /** The memory budget all sessions share (for statistics and tests). */
  readonly budget: BufferBudget;
  /** Stops accepting and resets every session. */
  stop(): void;
}

/** Starts the server-side proxy. */
export function startServer(opts: ServerOptions): StriperServer {
  const log = opts.log ?? stderrLog;
  const sessionOpts: SessionOptions = { ...DEFAULT_SESSION_OPTIONS, ...opts.session, role: "server" };
  const handshakeTimeout = opts.handshakeTimeoutMs ?? 5000;
  const maxSessions = opts.maxSessions ?? 1024;
  const maxStripes = opts.maxStripes ?? 64;
  const sessions = new Map<string, StripedPipe>();
  const factory = new SessionFactory(sessionOpts, opts.maxBuffer);
  let stopped = false;

  const reject = (pipe: TcpPipe, status: number): void => {
    pipe.send(encodeWelcome({ version: VERSION, status, window: 0 }));
    pipe.shutdown();
    setTimeout(() => pipe.close(), 1000).unref();
  };

  const openSession = (key: string, peerWindow: number): StripedPipe => {
    const session = factory.open(sessions.size, peerWindow);
    sessions.set(key, session);
    const target = connectTcp(opts.target);
    const started = performance.now();
    log(`session ${key.slice(0, 12)} start target ${formatAddress(opts.target)}`);
    new Bridge(session, target, (r) => {
      sessions.delete(key);
      log(sessionEndLine(key.slice(0, 12), r.aToB.bytes, r.bToA.bytes, performance.now() - started, session.metrics(), r.error));
    });
    // A target that cannot be reached ends the session at once; the client sees a reset.
    return session;
  };

  const onStripe = (pipe: TcpPipe): void => {
    readHandshake(pipe, HELLO_SIZE, handshakeTimeout, () => {}, (r) => {
      if (r instanceof StriperError) {
        log(`stripe from ${pipe.remote} dropped: ${r.code} ${r.message}`);
        pipe.close(r);
        return;
      }
      let hello;
      try {
        hello = decodeHello(r.message);
      } catch (err) {
        // Garbage on the port: no detail, no reply, just a close.
        log(`stripe from ${pipe.remote} dropped: ${(err as StriperError).code} not a stripe handshake`);
        pipe.close(err as StriperError);
        return;
      }
      if (hello.version !== VERSION) {
        log(`stripe from ${pipe.remote} refused: version ${hello.version}`);
        reject(pipe, STATUS_BAD_VERSION);
        return;
      }
      const key = Buffer.from(hello.sessionId).toString("hex");
      let session = sessions.get(key);
      if (hello.stripeIndex >= maxStripes || (hello.kind !== HELLO_OPEN && hello.kind !== HELLO_JOIN)) {
        log(`stripe from ${pipe.remote} refused: index ${hello.stripeIndex} kind ${hello.kind}`);
        reject(pipe, STATUS_REFUSED);
        return;
      }
      if (!session || session.closed) {
        if (hello.kind === HELLO_JOIN) {
          log(`stripe from ${pipe.remote} refused: unknown session ${key.slice(0, 12)}`);
          reject(pipe, STATUS_UNKNOWN_SESSION);
          return;
        }
        if (stopped || sessions.size >= maxSessions) {
          log(`stripe from ${pipe.remote} refused: ${stopped ? "shutting down" : `session limit ${maxSessions}`}`);
          reject(pipe, STATUS_REFUSED);
          return;
        }
        session = openSession(key, hello.window);
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
    sessions,
    budget: factory.budget,
    stop() {
      stopped = true;
      factory.stop();
      listener.stop();
      for (const s of sessions.values()) s.close(new BrokenError("E_SHUTDOWN", "server proxy shutting down"));
    },
  };
}
