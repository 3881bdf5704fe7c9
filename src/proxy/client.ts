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
import { OPEN_ATTEMPTS, StripeDialer, type DialAttempt } from "./dialer.ts";
import { destinationFromAddress, destinationOptions, formatDestination, SERVER_DEFAULT, type Outcome } from "./destination.ts";
import { combinedFront, plainFront, type AppConnection, type Front } from "./front.ts";
import { linkApp } from "./link-app.ts";
import { StripePool, dialStandby, targetFrame } from "./pool.ts";
import { socksFront, type SocksFrontOptions } from "./socks.ts";
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
import { JOIN_CONNECT_MS, JoinMemory, JoinRoute, type DialTarget, type RouteCounts } from "./join.ts";
import { escapeText, formatBytes, hexId, hostOfRemote, logEvent, sessionEndEvent, stderrLog, type LogSink } from "./log.ts";
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
  /**
   * Standby stripes kept ready (src/proxy/pool.ts): a new session takes one and needs no handshake.
   * Default 0 here (the command line's default is 2); the server must allow standby stripes.
   */
  pool?: number;
  /**
   * A session starts on one stripe and dials the others once this many bytes have passed either way
   * (short connections stay on one). Default: all stripes at once (the command line's is 128 KiB).
   */
  growAfter?: number;
  /** How long a front that waits for the server's verdict waits, ms (default 30 000). */
  verdictTimeoutMs?: number;
}

/**
 * Options of the client-side proxy. App connections come from a plain listener on `listen` (a port
 * forward to `target`, or without it to the server's own target), from a SOCKS5 / HTTP CONNECT listener
 * (`socks`), from both, or from any other `front`.
 */
export type ClientOptions = ClientSettings & {
  listen?: Address;
  /** Where `listen`'s connections go; default the server's own target. */
  target?: Address;
  socks?: Omit<SocksFrontOptions, "log">;
  front?: Front;
};

/** A running client-side proxy. */
export interface StriperClient {
  readonly port: number;
  /** Live sessions. */
  readonly sessions: Set<StripedPipe>;
  /** The send budget all sessions share (for statistics and tests). */
  readonly budget: SendBudget;
  /** How JOINs were routed since start, all sessions together (src/proxy/join.ts). */
  readonly routing: Readonly<RouteCounts & { fallbacks: number }>;
  /** Standby stripes: ready now, dialled and taken since start (zeros without a pool). */
  readonly pool: { readonly ready: number; readonly dialled: number; readonly taken: number };
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

/**
 * Whether a failed dial never reached the peer (refused, unreachable, timed out: connectTcp's
 * ConnectError), as opposed to reaching something that did not answer as a server proxy should.
 */
function neverConnected(err: StriperError): boolean {
  return err instanceof ConnectError && err.code !== "E_AUTH" && err.code !== "E_REFUSED";
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
      return neverConnected(err) ? "unreachable" : "bad-reply";
  }
}

/**
 * Why a session could not open, as its end line says it: "unreachable" only when no connection was made
 * (a user who pointed --peer at some other service must not be told it is unreachable).
 */
function openError(err: StriperError, peer: string): StriperError {
  if (err.code === "E_AUTH" || err.code === "E_REFUSED" || err.code === "E_SESSION_LOST") return err;
  if (neverConnected(err)) return new ConnectError(err.code, `server proxy ${peer} unreachable: ${err.message}`);
  return new ConnectError(err.code, `connected to ${peer}, but it did not answer as a tcp-striper server proxy (another service, or a server with --no-auth): ${err.message}`);
}

/**
 * The refusal label of a destination the server refused or could not reach (the server's labels,
 * except that the client cannot tell "ssrf" from "not-allowed": both come as RESET code 6). For
 * "failed": "refused" when the server reset the session before it opened (a standby stripe's session
 * refused at its TARGET frame, e.g. by the session limit); undefined otherwise (a session whose stripes
 * could not open is counted by openFailure).
 */
function destinationRefusal(outcome: Exclude<Outcome, "connected">, err: StriperError | undefined): string | undefined {
  switch (outcome) {
    case "not-allowed":
      return "not-allowed";
    case "unresolved":
      return "dns";
    case "refused":
      return "target-refused";
    case "timeout":
      return "target-timeout";
    case "unreachable":
      return "target-unreachable";
    case "failed":
      return err?.code === "E_PEER_RESET" ? "refused" : undefined;
    default: {
      const never: never = outcome;
      throw new Error(`unknown outcome ${String(never)}`);
    }
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
  // What the client learned about reaching servers' join ports, and how its JOINs were routed.
  const joinMemory = new JoinMemory();
  const routing = { viaJoinPort: 0, viaMain: 0, wrongWorker: 0, fallbacks: 0 };

  const growAfter = opts.growAfter === undefined || opts.growAfter <= 0 ? undefined : opts.growAfter;
  const poolSize = opts.pool ?? 0;
  const pool =
    poolSize > 0
      ? new StripePool({
          size: poolSize,
          log,
          dial: (done) => dialStandby({ peer: opts.peer, auth: keys, stripes: n, window: sessionOpts.window, wall, timeoutMs: handshakeTimeout }, done),
        })
      : undefined;

  const onApp = (app: AppConnection): void => {
    // A standby stripe, when one is ready: its session id and secret become the session's.
    const pooled = pool?.take();
    // The session's key for its whole life: the server accepts its stripes only under the key it opened with.
    const auth = pooled?.auth ?? keys;
    const sessionId = pooled?.sid ?? new Uint8Array(randomBytes(SID_SIZE));
    const secret = pooled?.secret ?? new Uint8Array(randomBytes(SECRET_SIZE)); // S: proves membership, never sent in clear
    const id = hexId(sessionId);
    const appHost = hostOfRemote(app.remote);
    const opened = factory.open(pooled?.serverWindow ?? INITIAL_WINDOW);
    if (opened === undefined) {
      const err = new StriperError("E_RECEIVE_MEMORY", `no receive window fits in ${formatBytes(factory.windows.limit)}: app connection reset`);
      stats.refused(reasonLabel(err.code));
      lines.end(appHost, err.code, { level: "warn", event: "session.refused", session: id, remote: app.remote, msg: `session ${id} refused: app ${app.remote} ${err.code} ${err.message}` });
      // A standby stripe taken for it goes too (the server gives its window back; the pool refills).
      pooled?.carrier.close(err);
      // A front that owes its app a reply (SOCKS, HTTP CONNECT) answers with a general failure.
      if (app.answer?.waits === true) app.answer.failed("failed");
      else app.pipe.close(err);
      return;
    }
    const session = opened;
    session.id = id;
    sessions.add(session);
    const started = performance.now();
    // Per stripe index: the dial whose reply has not authenticated yet (its failure goes to the dialer).
    const awaitingReply = new Map<number, DialAttempt>();
    // Where this session's stripes go: a server of several workers names the one that holds it.
    const route = new JoinRoute(opts.peer, joinMemory);
    if (pooled !== undefined) route.learn(pooled.replyOptions); // a standby stripe's reply named the worker

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
          // The destination rides in the OPEN's sealed header, never in clear (keyed mode); a JOIN names the
          // worker that holds the session on a server of several.
          options: a.kind === KIND_OPEN ? destinationOptions(app.destination) : route.headerOptions(a.kind),
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
          route.attached(a.index);
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
        route.learn(r.reply.options); // before the JOINs that an OK sets off
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

    /**
     * A joining stripe: attached once its reply has authenticated and said OK. A JOIN to a worker's join
     * port that cannot connect sends this session's JOINs to the main address instead; a JOIN that
     * reached the wrong worker is dialled again at once, up to a bound (src/proxy/join.ts).
     */
    const dialJoin = (a: DialAttempt, pipe: TcpPipe, h: StripeHello, t: DialTarget): void => {
      let opened = false;
      let timedOut = false;
      const connectTimer = t.joinPort
        ? setTimeout(() => {
            timedOut = true;
            pipe.close(new ConnectError("E_JOIN_UNREACHABLE", `no connection to join port ${formatAddress(t.to)} within ${JOIN_CONNECT_MS} ms`));
          }, JOIN_CONNECT_MS)
        : undefined;
      connectTimer?.unref();
      const onReady = (): void => {
        opened = true;
        clearTimeout(connectTimer);
        if (t.joinPort) route.joinReached();
      };
      readHandshake(pipe, h.parser, { deadlineMs: handshakeTimeout, onReady }, (r) => {
        clearTimeout(connectTimer);
        if (session.closed) {
          pipe.close();
          return;
        }
        if (r instanceof StriperError && t.joinPort && !opened) {
          // The join port cannot be reached (a firewall): from now on the main address, at once.
          pipe.close(r);
          awaitingReply.delete(a.index);
          if (!route.fallback) {
            routing.fallbacks++;
            log(`session ${id} join port ${t.to.port} unreachable (${r.code}): its stripes join through ${peerName}`);
          }
          route.joinUnreachable(timedOut);
          dialStripe(a);
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
          if (session.closed) return;
          if (refusal.code === "E_WRONG_WORKER") {
            routing.wrongWorker++;
            // Another source port hashes to another worker: dial again at once, within the bound. Not an
            // outage: the server answered.
            if (route.wrongWorker(a.index)) return dialStripe(a);
          }
          outage.failed(refusal);
          dialer.failed(a.index, refusal);
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
      const t = route.target(a.kind);
      if (a.kind !== KIND_OPEN) {
        if (t.joinPort) routing.viaJoinPort++;
        else routing.viaMain++;
      }
      const pipe = connectTcp(t.to);
      stripeRemote[a.index] = pipe.remote;
      const h = hello(a);
      awaitingReply.set(a.index, a);
      pipe.send(h.out.bytes); // queued until the connection opens; frames follow it
      if (a.kind === KIND_OPEN) dialOpen(a, pipe, h);
      else dialJoin(a, pipe, h, t);
    };

    const dialer = new StripeDialer({
      stripes: n,
      initial: growAfter === undefined ? n : 1,
      dial: dialStripe,
      unreachable: (err) => {
        stats.refused(openFailure(err));
        session.close(openError(err, peerName));
      },
    });
    const outage = new OutageNotice({ id, peer: peerName, graceMs: session.opts.graceMs, log: (ev) => logEvent(log, ev) });
    session.redial = (index) => dialer.redial(index);
    session.stripeDied = (index, err) => {
      const waiting = awaitingReply.get(index);
      if (waiting !== undefined) {
        awaitingReply.delete(index);
        // The opening stripe broke before its reply (a reset path, not an answer: a refusal, a reply that
        // did not authenticate and the reply deadline are ConnectErrors): dialled again as an OPEN of the
        // same session, within the handshake deadline of the first dial, so a silent server (wrong key) that
        // closes at its own deadline is not asked again. Else the session cannot open.
        const lost = waiting.kind === KIND_OPEN && !(err instanceof ConnectError) && performance.now() - started < handshakeTimeout;
        if (lost && dialer.openAttempts < OPEN_ATTEMPTS) {
          log(`session ${id} opening stripe lost before the reply (${err.code}): dialling the OPEN again (attempt ${dialer.openAttempts + 1} of ${OPEN_ATTEMPTS})`);
          dialer.failed(index, err, true);
          return;
        }
        outage.failed(err);
        dialer.failed(index, err);
        return;
      }
      if (err instanceof RecordError || err instanceof ControlFloodError) damage.note(id, index, err, stripeRemote[index]);
      outage.lost(session.usableStripes);
    };

    const where = escapeText(formatDestination(app.destination));
    const appName = escapeText(app.remote, 80);
    // A session to the server's own target says nothing of where it goes (the server's log does).
    const chosen = app.destination.kind === "server-default" ? undefined : formatDestination(app.destination);
    stats.opened(session, { id, remote: app.remote, ...(chosen !== undefined ? { target: chosen } : {}) });
    lines.start(appHost, {
      event: "session.start",
      session: id,
      remote: app.remote,
      msg: `session ${id} start app ${appName}${chosen !== undefined ? ` to ${where}` : ""} stripes ${n} peer ${peerName} window ${formatBytes(session.opts.window)}${pooled !== undefined ? " standby" : ""}`,
      fields: { stripes: n, peer: peerName, destination: chosen, standby: pooled !== undefined, window: session.opts.window },
    });
    linkApp(app, session, {
      growAfter,
      onBulk: () => dialer.grow(),
      verdictTimeoutMs: opts.verdictTimeoutMs,
      onFailed: (outcome, err) => {
        const reason = destinationRefusal(outcome, err);
        if (reason !== undefined) stats.refused(reason);
        log(`session ${id} app ${appName} to ${where} failed: ${outcome}${err ? ` (${err.code} ${escapeText(err.message)})` : ""}`);
      },
      onDone: (r) => {
        dialer.stop();
        outage.stop();
        sessions.delete(session);
        factory.release(session);
        stats.closed(session);
        lines.end(appHost, r.error?.code ?? "ok", sessionEndEvent(id, r.aToB.bytes, r.bToA.bytes, performance.now() - started, session.metrics(), r.error, app.remote));
      },
    });
    if (pooled !== undefined) {
      // The TARGET frame opens the session on the server; the session's own frames follow it.
      pooled.carrier.send(targetFrame(session.opts.window, app.destination));
      session.attach(0, 1, pooled.carrier);
      dialer.adopt(0, 1);
    } else dialer.start();
  };

  const fronts: Front[] = [];
  if (opts.listen !== undefined) fronts.push(plainFront(opts.listen, opts.target === undefined ? SERVER_DEFAULT : destinationFromAddress(opts.target)));
  if (opts.socks !== undefined) fronts.push(socksFront({ ...opts.socks, log }));
  if (opts.front !== undefined) fronts.push(opts.front);
  if (fronts.length === 0) throw new StriperError("E_CONFIG", "a client needs somewhere to take app connections: --listen, --socks, or both");
  const listener = (fronts.length === 1 ? fronts[0]! : combinedFront(fronts)).listen(onApp);
  pool?.start();
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
    routing,
    stats,
    get liveSessions() {
      return sessions.size;
    },
    pool: {
      get ready() {
        return pool?.size ?? 0;
      },
      get dialled() {
        return pool?.dialled ?? 0;
      },
      get taken() {
        return pool?.taken ?? 0;
      },
    },
    setKeys(next) {
      if (next.mode !== opts.auth.mode) throw new StriperError("E_CONFIG", `cannot switch from ${opts.auth.mode} to ${next.mode} stripes without a restart`);
      keys = handshakeAuth(next);
      if (next.mode === "keyed") log(`key now ${next.keys[0]!.id}`);
      pool?.flush(); // pooled stripes were opened with the old key
    },
    drain() {
      listener.stop();
      return stats.idle();
    },
    stop(reason = new BrokenError("E_SHUTDOWN", "client proxy shutting down")) {
      factory.stop();
      listener.stop();
      pool?.stop();
      damage.close();
      lines.close();
      stats.close();
      for (const s of [...sessions]) s.close(reason);
    },
  };
}
