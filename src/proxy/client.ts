/**
 * Client-side proxy: takes app connections from a front (a plain listener unless another is given); for
 * each, opens a striped session to the server proxy under a fresh random session id and session secret,
 * and bridges the app to it (docs/protocol.md §3.12):
 *
 *   - stripe 0 is dialled with OPEN and attached to the session at once, so the app's first bytes leave
 *     in the same flight as the first message (0-RTT) under an initial peer window of 64 KiB;
 *   - the server's reply is read in front of the frames that follow it (SealedPipe's preface, or
 *     PrefacePipe in plain mode); it must authenticate under our key and be bound to our first message,
 *     else the session fails with E_AUTH and the app connection is reset;
 *   - on the OK reply the session takes the real window and the dialer dials stripes 1 … N−1 as JOINs,
 *     which are attached once their own reply has authenticated. Re-dials are JOINs with fresh salts.
 *
 * The dialer decides what to dial and when, the handshake module judges each reply; this file is the I/O
 * between them and the session.
 */

import { randomBytes } from "node:crypto";
import { BrokenError, ConnectError, StriperError } from "../errors.ts";
import { Bridge } from "../pipe/bridge.ts";
import type { Pipe } from "../pipe/pipe.ts";
import { PrefacePipe } from "../pipe/preface.ts";
import { SealedPipe, type PrefaceStep } from "../pipe/sealed.ts";
import { DEFAULT_SESSION_OPTIONS, type StripedPipe, type SessionOptions } from "../pipe/striped.ts";
import type { SendBudget } from "../stripe/budget.ts";
import { ControlFloodError } from "../stripe/guard.ts";
import { connectionGate, describeLimits } from "../util/fdlimit.ts";
import { guardedTimeout } from "../util/guard.ts";
import { connectTcp, formatAddress, type Address, type TcpPipe } from "../pipe/tcp.ts";
import { FIRST_FRAME_COUNTER, KIND_OPEN, SALT_SIZE, SECRET_SIZE, SID_SIZE } from "../secure/constants.ts";
import { RecordError } from "../secure/errors.ts";
import { joinProof } from "../secure/kdf.ts";
import { encodeClientHello, type ClientHelloOut, type HandshakeAuth, type ServerReplyIn } from "../secure/messages.ts";
import { RecordOpener } from "../secure/record.ts";
import { serverReplyParser, type HandshakeParser } from "../wire/handshake.ts";
import { StripeDialer, type DialAttempt } from "./dialer.ts";
import { plainFront, type AppConnection, type Front } from "./front.ts";
import {
  CLIENT_HANDSHAKE_MS,
  INITIAL_WINDOW,
  PLAIN_WARNING,
  handshakeAuth,
  judgeReply,
  noAuthenticReply,
  readHandshake,
  replyNotAuthentic,
  type ReplyVerdict,
  type StripeAuth,
} from "./handshake.ts";
import { DamageLog } from "./damage.ts";
import { formatBytes, hexId, hostOfRemote, logEvent, sessionEndEvent, stderrLog, type LogSink } from "./log.ts";
import { OutageNotice } from "./outage.ts";
import { SessionLines } from "./sessionlines.ts";
import { SessionFactory } from "./sessions.ts";
import { ProxyStats, reasonLabel } from "./stats.ts";

/** Settings of the client-side proxy, whatever its front. */
export interface ClientSettings {
  /** The server proxy. */
  peer: Address;
  /** Pre-shared keys (the first is used) or plain mode. Required: there is no silent default. */
  auth: StripeAuth;
  /** Stripes per session (default 4). */
  stripes?: number;
  session?: Partial<Omit<SessionOptions, "role">>;
  /** Absolute deadline for the server's authenticated reply on a stripe, ms (default 5000). */
  handshakeTimeoutMs?: number;
  /** Bytes all sessions together may hold unacknowledged (default 32 MiB). */
  maxBuffer?: number;
  /**
   * Memory all reorder buffers may use together (default 512 MiB): each session's receive window is
   * granted against it; an app connection for which not even the smallest fits is reset.
   */
  maxReceiveBuffer?: number;
  /** Wall clock for the timestamp in first messages, unix ms (default Date.now); tests skew it. */
  wallClock?: () => number;
  log?: LogSink;
}

/** Options of the client-side proxy: app connections come from a plain listener on `listen`, or from `front`. */
export type ClientOptions = ClientSettings & ({ listen: Address; front?: undefined } | { front: Front; listen?: undefined });

/** A running client-side proxy. */
export interface StriperClient {
  readonly port: number;
  /** Live sessions. */
  readonly sessions: Set<StripedPipe>;
  /** The send budget all sessions share (for statistics and tests). */
  readonly budget: SendBudget;
  /**
   * Replaces the keys (a key file re-read on SIGHUP): new sessions use the new first key; live sessions
   * keep the key they were opened with, re-dials included. The mode cannot change: E_CONFIG.
   */
  setKeys(auth: StripeAuth): void;
  /** Statistics for the operations endpoints (a StatsSource). */
  readonly stats: ProxyStats;
  /** Sessions live now. */
  readonly liveSessions: number;
  /**
   * Drain: stops accepting app connections at once (the listener closes: a new connection is refused by
   * the system), while live sessions go on, re-dials included. Resolves when the last one has ended.
   */
  drain(): Promise<void>;
  /** Stops accepting and resets every session left with `reason` (default E_SHUTDOWN): never a clean EOF. */
  stop(reason?: StriperError): void;
}

/** The sessions-refused reason of a session that could not open (its opening stripe failed). */
function openFailure(err: StriperError): string {
  switch (err.code) {
    case "E_REFUSED":
      return "refused";
    case "E_AUTH":
      return "auth";
    case "E_SESSION_LOST":
      return "session-lost";
    default:
      return "unreachable";
  }
}

/** What the client sends on one stripe connection: its first message, and how to read the reply. */
interface StripeHello {
  out: ClientHelloOut;
  parser: HandshakeParser<ServerReplyIn>;
}

/** Starts the client-side proxy. Throws StriperError (E_KEY_MISSING) on bad options. */
export function startClient(opts: ClientOptions): StriperClient {
  const log = opts.log ?? stderrLog;
  let keys: HandshakeAuth = handshakeAuth(opts.auth);
  const n = opts.stripes ?? 4;
  const sessionOpts: SessionOptions = { ...DEFAULT_SESSION_OPTIONS, ...opts.session, role: "client" };
  const handshakeTimeout = opts.handshakeTimeoutMs ?? CLIENT_HANDSHAKE_MS;
  const wall = opts.wallClock ?? Date.now;
  const peerName = formatAddress(opts.peer);
  const sessions = new Set<StripedPipe>();
  const factory = new SessionFactory(sessionOpts, { maxBuffer: opts.maxBuffer, maxReceiveBuffer: opts.maxReceiveBuffer });
  const damage = new DamageLog(log);
  const lines = new SessionLines(log);
  const stats = new ProxyStats({ role: "client", budget: factory.budget });

  // The destination is not used yet: v2 carries none, the server connects every session to its target.
  const onApp = (app: AppConnection): void => {
    // The session's key for its whole life: the server accepts its stripes only under the key it opened with.
    const auth = keys;
    const sessionId = new Uint8Array(randomBytes(SID_SIZE));
    const secret = new Uint8Array(randomBytes(SECRET_SIZE)); // S: proves membership, never sent in clear
    const id = hexId(sessionId);
    const appHost = hostOfRemote(app.remote);
    const opened = factory.open(INITIAL_WINDOW);
    if (opened === undefined) {
      const err = new StriperError("E_RECEIVE_MEMORY", `no receive window fits in ${formatBytes(factory.windows.limit)}: app connection reset`);
      stats.refused(reasonLabel(err.code));
      lines.end(appHost, err.code, { level: "warn", event: "session.refused", session: id, remote: app.remote, msg: `session ${id} refused: app ${app.remote} ${err.code} ${err.message}` });
      app.pipe.close(err);
      return;
    }
    const session = opened;
    session.id = id;
    sessions.add(session);
    const started = performance.now();
    // Per stripe index: the dial whose reply has not authenticated yet (its failure goes to the dialer).
    const awaitingReply = new Map<number, DialAttempt>();

    /** The first message of one stripe connection: fresh salt, so fresh keys (re-dials included). */
    const hello = (a: DialAttempt): StripeHello => {
      const cs = auth.mode === "keyed" ? new Uint8Array(randomBytes(SALT_SIZE)) : new Uint8Array(SALT_SIZE);
      const out = encodeClientHello(
        auth,
        sessionId,
        {
          kind: a.kind,
          flags: 0,
          stripeIndex: a.index,
          generation: a.generation,
          stripeCount: n,
          timestampMs: Math.floor(wall()),
          window: session.opts.window,
          secret: a.kind === KIND_OPEN ? secret : joinProof(secret, cs),
          options: [],
        },
        cs,
      );
      return { out, parser: serverReplyParser(auth, { sid: sessionId, cs: out.cs }) };
    };

    /** An authenticated reply's verdict; undefined when the stripe may carry frames now. */
    const onReply = (a: DialAttempt, verdict: ReplyVerdict): StriperError | undefined => {
      switch (verdict.kind) {
        case "attach":
          awaitingReply.delete(a.index);
          session.setPeerWindow(verdict.window);
          dialer.succeeded(a.index);
          outage.back();
          return undefined;
        case "retry":
          return verdict.error;
        case "end":
          session.close(verdict.error);
          return verdict.error;
        default: {
          const unknown: never = verdict;
          throw new Error(`unknown reply verdict ${JSON.stringify(unknown)}`);
        }
      }
    };

    /** The opening stripe: attached at once, so the app's first bytes ride with the first message. */
    const dialOpen = (a: DialAttempt, pipe: TcpPipe, h: StripeHello): void => {
      let carrier: Pipe;
      const deadline = guardedTimeout("stripe reply deadline", () => carrier.close(noAuthenticReply(handshakeTimeout)), handshakeTimeout);
      deadline.unref();
      const replied = (r: ServerReplyIn): StriperError | undefined => {
        clearTimeout(deadline);
        return onReply(a, judgeReply(r.reply));
      };
      if (h.out.sealer !== undefined) {
        const preface = (received: Uint8Array): PrefaceStep => {
          const step = h.parser(received);
          switch (step.kind) {
            case "more":
              return { status: "need", total: received.byteLength + step.bytes };
            case "invalid":
              return { status: "fail", error: replyNotAuthentic() };
            case "done": {
              const refusal = replied(step.value);
              if (refusal !== undefined) return { status: "fail", error: refusal };
              return { status: "done", consumed: step.size, opener: new RecordOpener(step.value.key!, FIRST_FRAME_COUNTER) };
            }
            default: {
              const never: never = step;
              throw new Error(`unknown parse step ${JSON.stringify(never)}`);
            }
          }
        };
        carrier = new SealedPipe(pipe, { sealer: h.out.sealer, preface });
      } else {
        carrier = new PrefacePipe(pipe, h.parser, (r) => replied(r), () => replyNotAuthentic(), () => noAuthenticReply(undefined));
      }
      session.attach(a.index, a.generation, carrier);
    };

    /** A joining stripe: attached once its reply has authenticated and said OK. */
    const dialJoin = (a: DialAttempt, pipe: TcpPipe, h: StripeHello): void => {
      readHandshake(pipe, h.parser, { deadlineMs: handshakeTimeout }, (r) => {
        if (session.closed) {
          pipe.close();
          return;
        }
        if (r instanceof StriperError) {
          const err = r.code === "E_HANDSHAKE_REJECTED" ? replyNotAuthentic() : r.code === "E_HANDSHAKE_TIMEOUT" ? noAuthenticReply(handshakeTimeout) : r;
          pipe.close(err);
          awaitingReply.delete(a.index);
          outage.failed(err);
          dialer.failed(a.index, err);
          return;
        }
        const refusal = onReply(a, judgeReply(r.value.reply));
        if (refusal !== undefined) {
          pipe.close(refusal);
          awaitingReply.delete(a.index);
          outage.failed(refusal);
          if (!session.closed) dialer.failed(a.index, refusal);
          return;
        }
        if (h.out.sealer !== undefined && r.value.key !== undefined) {
          const opener = new RecordOpener(r.value.key, FIRST_FRAME_COUNTER);
          session.attach(a.index, a.generation, new SealedPipe(pipe, { sealer: h.out.sealer, opener, leftover: r.leftover }));
        } else {
          session.attach(a.index, a.generation, pipe, r.leftover);
        }
        pipe.resume();
      });
    };

    /** Per stripe index, the local end's view of the current connection to the server (for log lines). */
    const stripeRemote: string[] = [];
    const dialStripe = (a: DialAttempt): void => {
      if (session.closed) return;
      if (a.generation !== 1) stats.redialed();
      const pipe = connectTcp(opts.peer);
      stripeRemote[a.index] = pipe.remote;
      const h = hello(a);
      awaitingReply.set(a.index, a);
      pipe.send(h.out.bytes); // queued until the connection opens; frames follow it
      if (a.kind === KIND_OPEN) dialOpen(a, pipe, h);
      else dialJoin(a, pipe, h);
    };

    const dialer = new StripeDialer({
      stripes: n,
      dial: dialStripe,
      unreachable: (err) => {
        stats.refused(openFailure(err));
        session.close(
          err.code === "E_AUTH" || err.code === "E_REFUSED" || err.code === "E_SESSION_LOST"
            ? err
            : new ConnectError(err.code, `server proxy ${peerName} unreachable: ${err.message}`),
        );
      },
    });
    const outage = new OutageNotice({ id, peer: peerName, graceMs: session.opts.graceMs, log: (ev) => logEvent(log, ev) });
    session.redial = (index) => dialer.redial(index);
    session.stripeDied = (index, err) => {
      // The opening stripe failed before its reply authenticated: the session cannot open.
      if (awaitingReply.has(index)) {
        awaitingReply.delete(index);
        outage.failed(err);
        dialer.failed(index, err);
        return;
      }
      if (err instanceof RecordError || err instanceof ControlFloodError) damage.note(id, index, err, stripeRemote[index]);
      outage.lost(session.usableStripes);
    };

    stats.opened(session, { id, remote: app.remote });
    lines.start(appHost, {
      event: "session.start",
      session: id,
      remote: app.remote,
      msg: `session ${id} start app ${app.remote} stripes ${n} peer ${peerName} window ${formatBytes(session.opts.window)}`,
      fields: { stripes: n, peer: peerName, window: session.opts.window },
    });
    new Bridge(app.pipe, session, (r) => {
      dialer.stop();
      outage.stop();
      sessions.delete(session);
      factory.release(session);
      stats.closed(session);
      lines.end(appHost, r.error?.code ?? "ok", sessionEndEvent(id, r.aToB.bytes, r.bToA.bytes, performance.now() - started, session.metrics(), r.error, app.remote));
    });
    dialer.start();
  };

  const listener = (opts.front ?? plainFront(opts.listen)).listen(onApp);
  const key = opts.auth.mode === "keyed" ? ` key ${opts.auth.keys[0]!.id}` : "";
  stats.listener = listener.address;
  log(
    `client listening on ${listener.address} peer ${peerName} stripes ${n}${key}; ${describeLimits(connectionGate().limits)}; ` +
      `receive memory ${formatBytes(factory.windows.limit)}, send budget ${formatBytes(factory.budget.limit)}`,
  );
  if (opts.auth.mode === "plain") log(PLAIN_WARNING);
  return {
    port: listener.port,
    sessions,
    budget: factory.budget,
    stats,
    get liveSessions() {
      return sessions.size;
    },
    setKeys(next) {
      if (next.mode !== opts.auth.mode) throw new StriperError("E_CONFIG", `cannot switch from ${opts.auth.mode} to ${next.mode} stripes without a restart`);
      keys = handshakeAuth(next);
      if (next.mode === "keyed") log(`key now ${next.keys[0]!.id}`);
    },
    drain() {
      listener.stop();
      return stats.idle();
    },
    stop(reason = new BrokenError("E_SHUTDOWN", "client proxy shutting down")) {
      factory.stop();
      listener.stop();
      damage.close();
      lines.close();
      stats.close();
      for (const s of [...sessions]) s.close(reason);
    },
  };
}
