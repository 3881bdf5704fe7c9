/**
 * Server-side proxy: accepts stripes, checks each one's first message in the order of
 * docs/protocol.md §3.10 (limits at accept, deadline, key, header, version, time, replay, admission), and
 * bridges each session to one connection to its target. Every failed check gets the same treatment,
 * silence: no byte back, read and discard until the deadline measured from the accept, then close. The
 * registry holds the sessions, admission (handshake.ts) decides; this file is the I/O around them.
 */

import { BrokenError, StriperError } from "../errors.ts";
import { Bridge, type BridgeResult } from "../pipe/bridge.ts";
import type { Pipe } from "../pipe/pipe.ts";
import { SealedPipe } from "../pipe/sealed.ts";
import { DEFAULT_SESSION_OPTIONS, type StripedPipe, type SessionOptions } from "../pipe/striped.ts";
import { MIN_WINDOW, windowCost, type SendBudget } from "../stripe/budget.ts";
import { ControlFloodError } from "../stripe/guard.ts";
import { connectionGate, describeLimits } from "../util/fdlimit.ts";
import { guardedTimeout } from "../util/guard.ts";
import { formatAddress, listenTcp, type Address, type TcpListener, type TcpPipe } from "../pipe/tcp.ts";
import { FIRST_FRAME_COUNTER, HEADER_FLAG_STANDBY, KIND_OPEN, STATUS_OK, STATUS_REFUSED } from "../secure/constants.ts";
import { RecordError } from "../secure/errors.ts";
import { checkFresh, encodeServerReply, type ClientHello, type HandshakeAuth, type SilentReason, type Tlv } from "../secure/messages.ts";
import { SourceLimiter, UnauthGate, sourceKey } from "../secure/ratelimit.ts";
import { RecordOpener, type RecordSealer } from "../secure/record.ts";
import { ReplaySet } from "../secure/replay.ts";
import { encodeFrame, encodeResetReason } from "../wire/codec.ts";
import { FRAME_RESET, ResetCode } from "../wire/constants.ts";
import { HandshakeRejected, clientHelloParser } from "../wire/handshake.ts";
import { parseAllowRules } from "./allow.ts";
import { destinationFromOptions, formatDestination, type Destination } from "./destination.ts";
import {
  DEFAULT_HANDSHAKE_BURST,
  DEFAULT_HANDSHAKE_RATE,
  DEFAULT_MAX_UNAUTHENTICATED,
  HANDSHAKE_DEADLINE_MS,
  PLAIN_WARNING,
  admit,
  handshakeAuth,
  readHandshake,
  type AdmissionPolicy,
  type HandshakeRead,
  type Membership,
  type RefuseStatus,
  type StripeAuth,
} from "./handshake.ts";
import { escapeText, formatBytes, logEvent, sessionEndEvent, stderrLog, type LogSink } from "./log.ts";
import { SessionRegistry, sessionKey } from "./registry.ts";
import { DEFAULT_MAX_STANDBY, DEFAULT_STANDBY_IDLE_MS, DEFAULT_STANDBY_PER_SOURCE, StandbyTable, holdStandby } from "./standby.ts";
import { TargetOpener, type RefusalReason, type TargetOpenerOptions } from "./target.ts";
import { DamageLog } from "./damage.ts";
import { Rejections } from "./rejections.ts";
import { SessionLines } from "./sessionlines.ts";
import { SessionFactory } from "./sessions.ts";
import { ProxyStats, reasonLabel } from "./stats.ts";
import { joinOption, type WorkerRole } from "./join.ts";
import { proxyHeaderParser, type BalancerSet } from "./proxyproto.ts";

/** Options of the server-side proxy. */
export interface ServerOptions {
  listen: Address;
  /** Where sessions that name no destination go (`--target`). A server needs this, `allow`, or both. */
  target?: Address;
  /**
   * `--allow` rules (src/proxy/allow.ts): client-chosen destinations they allow are served; without
   * any, only `target` is. Special addresses need a rule that names them (SSRF defaults).
   */
  allow?: readonly string[];
  /** Deadline for the TCP connect to a target, ms (default 10 000). */
  connectTimeoutMs?: number;
  /** Deadline for resolving a destination's name, ms (default 5000). */
  dnsTimeoutMs?: number;
  /** Resolves names (default getaddrinfo); tests inject one. */
  lookup?: TargetOpenerOptions["lookup"];
  /** Opens target connections (default connectTcp); tests inject one. */
  connect?: TargetOpenerOptions["connect"];
  /** The server's own addresses, refused like loopback (default: its interfaces'). */
  ownAddresses?: TargetOpenerOptions["ownAddresses"];
  /** Standby stripes held in all (default 256), per source (default 16), and for how long (default 60 s). */
  maxStandby?: number;
  standbyPerSource?: number;
  standbyIdleMs?: number;
  /** Pre-shared keys (any of them opens a session) or plain mode. Required: there is no silent default. */
  auth: StripeAuth;
  session?: Partial<Omit<SessionOptions, "role">>;
  /**
   * Absolute deadline from the accept for a stripe's whole first message, ms (default and maximum
   * 10 000). A connection that fails a check is held, silent, until it passes, then closed.
   */
  handshakeTimeoutMs?: number;
  /** Connections that have not authenticated yet (default 1024); the oldest waiting ≥ 1 s makes room. */
  maxUnauthenticated?: number;
  /** Handshake attempts per second per source address (IPv6: per /64), default 20. */
  handshakeRate?: number;
  /** Handshake attempts a quiet source may make at once, default 80. */
  handshakeBurst?: number;
  /** Sessions at once; more are refused. */
  maxSessions?: number;
  /** Sessions one source address (IPv6: one /64) may hold at once (default 256); more are refused. */
  maxSessionsPerSource?: number;
  /**
   * Authenticated stripe connections one source address (IPv6: one /64) may hold at once (default half
   * the process's accept limit, at least 64): one key holder cannot take every connection slot.
   */
  maxStripesPerSource?: number;
  /** Memory all reorder buffers may use together (default 512 MiB): receive windows are granted against it. */
  maxReceiveBuffer?: number;
  /** Highest stripe index + 1 accepted in a session. */
  maxStripes?: number;
  /** Bytes all sessions together may hold unacknowledged (default 32 MiB). */
  maxBuffer?: number;
  /** Wall clock for the timestamp check, unix ms (default Date.now); tests skew it. */
  wallClock?: () => number;
  log?: LogSink;
  /** Share `listen` with other processes (SO_REUSEPORT): the workers of `--workers N`. */
  reusePort?: boolean;
  /** This process is one of several workers, with a join port of its own (src/proxy/join.ts). */
  worker?: WorkerRole;
  /**
   * Load balancers (`--proxy-protocol-from`): a connection from one must open with a PROXY v2 header,
   * whose client address then counts for logs and per-source limits (src/proxy/proxyproto.ts).
   */
  balancers?: BalancerSet;
}

/** A running server-side proxy. */
export interface StriperServer {
  readonly port: number;
  /** Registered sessions by hex id. */
  readonly sessions: ReadonlyMap<string, StripedPipe>;
  /** The send budget all sessions share (for statistics and tests). */
  readonly budget: SendBudget;
  /** Stripes refused silently since start, per reason (docs/protocol.md §3.11). */
  readonly rejections: Readonly<Record<SilentReason, number>>;
  /** Connections accepted that have not authenticated (reading their first message, or held silent). */
  readonly unauthenticated: number;
  /** The join port a worker listens on (undefined for a single process). */
  readonly joinPort: number | undefined;
  /** JOINs answered WRONG_WORKER since start (they reached a worker that does not hold their session). */
  readonly wrongWorker: number;
  /** Standby stripes held now (opened ahead of need, not taken yet). */
  readonly standby: number;
  /** Sessions whose destination was refused or not reached since start, by reason (src/proxy/target.ts). */
  readonly destinationRefusals: Readonly<Partial<Record<RefusalReason, number>>>;
  /**
   * Replaces the allowlist (a config re-read on SIGHUP): sessions opened from now on are judged by it;
   * live ones keep their connection. Throws E_CONFIG for a bad rule, leaving the old list in force.
   */
  setAllow(rules: readonly string[]): void;
  /**
   * Replaces the keys new stripes are checked against (a key file re-read on SIGHUP). Sessions keep the
   * key they were opened with: their stripes are still accepted while the server holds that key. The
   * mode cannot change (keyed ↔ --no-auth needs a restart): E_CONFIG.
   */
  setKeys(auth: StripeAuth): void;
  /** Statistics for the operations endpoints (a StatsSource). */
  readonly stats: ProxyStats;
  /** Sessions live now (registered, not yet ended). */
  readonly liveSessions: number;
  /**
   * Drain: new sessions are refused from now on (an authenticated REFUSED reply to every OPEN, counted
   * as refused "draining"), while live sessions go on and their stripes may still join (re-dials).
   * Resolves when the last live session has ended.
   */
  drain(): Promise<void>;
  /** Stops accepting and resets every session left with `reason` (default E_SHUTDOWN): never a clean EOF. */
  stop(reason?: StriperError): void;
}

/**
 * Connections not yet authenticated may take at most this share of the accept limit (src/util/fdlimit.ts),
 * so idle or slow first messages can never hold every descriptor: the rest is for stripes that
 * authenticated, and the unauthenticated gate makes room by evicting its oldest.
 */
const UNAUTH_SHARE = 0.5;
/** How long a refused stripe stays open after the refusal, so the reply reaches the client. */
const REFUSE_LINGER_MS = 1000;
/** The close at the end of silence (a reset, the same for every reason). */
const SILENCE_OVER = new BrokenError("E_HANDSHAKE_REJECTED", "first message refused");

/** Which silent reason a failed read of the first message counts under. */
function reasonOf(err: StriperError): SilentReason {
  if (err instanceof HandshakeRejected) return err.reason;
  if (err.code === "E_HANDSHAKE_TIMEOUT") return "timeout";
  if (err.code === "E_HANDSHAKE_TOO_LARGE") return "too-long";
  return "truncated"; // EOF, or a reset by the peer
}

function positive(name: string, v: number, max = Infinity): number {
  if (!(v > 0) || v > max) throw new StriperError("E_CONFIG", `${name} must be above 0${max < Infinity ? ` and at most ${max}` : ""}, got ${v}`);
  return v;
}

/** Starts the server-side proxy. Throws StriperError (E_CONFIG, E_KEY_MISSING) on bad options. */
export function startServer(opts: ServerOptions): StriperServer {
  const log = opts.log ?? stderrLog;
  /** The keys as the codec takes them, and their fingerprints; replaced whole by setKeys(). */
  interface Keys {
    auth: HandshakeAuth;
    ids: string[];
  }
  const keysOf = (a: StripeAuth): Keys => ({ auth: handshakeAuth(a), ids: a.mode === "keyed" ? a.keys.map((k) => k.id) : [] });
  let keys = keysOf(opts.auth);
  const deadlineMs = positive("handshake deadline", opts.handshakeTimeoutMs ?? HANDSHAKE_DEADLINE_MS, HANDSHAKE_DEADLINE_MS);
  const wall = opts.wallClock ?? Date.now;
  const sessionOpts: SessionOptions = { ...DEFAULT_SESSION_OPTIONS, ...opts.session, role: "server" };
  const worker = opts.worker;
  const policy: AdmissionPolicy = { maxStripes: opts.maxStripes ?? 64, worker: worker?.index };
  const balancers = opts.balancers;
  let wrongWorker = 0;
  let joinPort: number | undefined;
  if (opts.target === undefined && (opts.allow === undefined || opts.allow.length === 0)) {
    throw new StriperError("E_CONFIG", "a server needs a target (--target), an allowlist (--allow), or both");
  }
  const targets = new TargetOpener({
    policy: { defaultTarget: opts.target, rules: parseAllowRules(opts.allow ?? []) },
    connectTimeoutMs: opts.connectTimeoutMs,
    dnsTimeoutMs: opts.dnsTimeoutMs,
    lookup: opts.lookup,
    connect: opts.connect,
    ownAddresses: opts.ownAddresses,
  });
  const destinationRefusals: Partial<Record<RefusalReason, number>> = {};
  const maxStandby = opts.maxStandby ?? DEFAULT_MAX_STANDBY;
  const standbys = new StandbyTable({ max: maxStandby, perSource: opts.standbyPerSource ?? DEFAULT_STANDBY_PER_SOURCE });
  const standbyIdleMs = opts.standbyIdleMs ?? DEFAULT_STANDBY_IDLE_MS;
  // Standby stripes held, to close at stop().
  const held = new Set<Pipe>();
  const maxSessions = opts.maxSessions ?? 1024;
  const registry = new SessionRegistry<StripedPipe>(maxSessions, { maxPerSource: opts.maxSessionsPerSource });
  // A held standby stripe holds the receive window its reply promised (the client may send that much
  // once it is taken); it counts as one of the sessions the floors are kept for, being one to come.
  // Past --max-sessions of both, a standby's grant may find no room: refused, its pool backs off.
  const factory = new SessionFactory(sessionOpts, { maxBuffer: opts.maxBuffer, maxReceiveBuffer: opts.maxReceiveBuffer, maxSessions });
  const fds = connectionGate();
  // Salts of hellos seen within the time window; hellos from before this start are refused (§14.3).
  const replay = new ReplaySet({ sinceMs: wall() });
  const limiter = new SourceLimiter({
    ratePerSec: positive("handshake rate", opts.handshakeRate ?? DEFAULT_HANDSHAKE_RATE),
    burst: positive("handshake burst", opts.handshakeBurst ?? DEFAULT_HANDSHAKE_BURST),
  });
  const maxUnauth = Math.max(1, Math.min(opts.maxUnauthenticated ?? DEFAULT_MAX_UNAUTHENTICATED, Math.floor(fds.limits.accept * UNAUTH_SHARE)));
  const gate = new UnauthGate<TcpPipe>(maxUnauth);
  const maxStripesPerSource = positive("stripes per source", opts.maxStripesPerSource ?? Math.max(64, Math.floor(fds.limits.accept / 2)));
  /** Authenticated stripe connections open per source, for maxStripesPerSource. */
  const stripesBySource = new Map<string, number>();
  const rejections = new Rejections({ log });
  const damage = new DamageLog(log);
  const lines = new SessionLines(log);
  const stats = new ProxyStats({ role: "server", budget: factory.budget, rejections: () => rejections.counts });
  const membership = new WeakMap<StripedPipe, Membership>();
  /** Per session, the remote address of each stripe index's current connection (for its log lines). */
  const remotes = new WeakMap<StripedPipe, string[]>();
  const noMember: Membership = { secret: new Uint8Array(32), keyId: "-" }; // matches no stripe
  // Accepted, not authenticated: reading their first message or held silent. For stop().
  const pending = new Set<TcpPipe>();
  const evicted = new WeakSet<TcpPipe>();

  /**
   * Registers a new session from `source` (`from`: the opening stripe's address) and connects it to `to`,
   * or undefined when no receive window fits (`window`: one granted earlier, for a standby stripe's
   * reply). Until the target is connected the session is paused (0-RTT bytes wait in it); then it is
   * bridged to the target and the client is told (OPENED). A destination that is refused or cannot be
   * reached ends the session with a RESET saying why. Its lines (one naming the destination, one at the
   * end) go through the per-source budget (SessionLines).
   */
  const openSession = (key: string, peerWindow: number, to: Destination, member: Membership, source: string, from: string, window?: number): StripedPipe | undefined => {
    const session = factory.open(peerWindow, window);
    if (session === undefined) return undefined;
    membership.set(session, member);
    remotes.set(session, []);
    registry.add(key, session, source);
    const id = key.slice(0, 12);
    session.id = id;
    session.stripeDied = (index, err) => {
      if (err instanceof RecordError || err instanceof ControlFloodError) damage.note(id, index, err, remotes.get(session)?.[index]);
      // Every stripe gone and nothing ever got through: nobody is waiting for this session (a slot
      // flood, or a client that gave up at once). Release its slot now rather than after the grace.
      if (session.usableStripes === 0 && !session.progressed) {
        session.close(new BrokenError("E_ABANDONED", "every stripe gone before anything was delivered: slot released"));
      }
    };
    const started = performance.now();
    const where = escapeText(formatDestination(to));
    const client = escapeText(from, 80);
    // Counted as opened now (drain and /api/sessions see it while its destination is judged and
    // connected); a destination refused or not reached is also counted under sessionsRefused by reason.
    stats.opened(session, { id, remote: from, target: formatDestination(to) });
    const ended = (r: BridgeResult): void => {
      registry.remove(key, session);
      factory.release(session);
      stats.closed(session);
      lines.end(source, r.error?.code ?? "ok", sessionEndEvent(id, r.aToB.bytes, r.bToA.bytes, performance.now() - started, session.metrics(), r.error, from));
    };
    session.pause(); // the app's first bytes wait here until the target is connected
    let cancel = (): void => {};
    session.setHandler({
      data() {},
      drain() {},
      end() {},
      close: (err) => {
        cancel();
        ended({ aToB: { bytes: 0, congestions: 0, finished: false }, bToA: { bytes: 0, congestions: 0, finished: false }, error: err, durationMs: 0 });
      },
    });
    cancel = targets.open(to, (r) => {
      if (!r.ok) {
        destinationRefusals[r.reason] = (destinationRefusals[r.reason] ?? 0) + 1;
        stats.refused(r.reason);
        // In place of its start line (a peer asking for refused destinations is held to the same budget).
        lines.start(source, {
          event: "session.refused",
          session: id,
          remote: from,
          msg: `session ${id} from ${client} to ${where} failed: ${r.error.code} ${escapeText(r.error.message)}`,
          fields: { destination: formatDestination(to), reason: r.reason, code: r.error.code },
        });
        session.close(r.error); // RESET with the error's code: the client answers its app with it
        return;
      }
      lines.start(source, {
        event: "session.start",
        session: id,
        remote: from,
        msg: `session ${id} start from ${client} to ${where} (${r.address})${r.rule !== undefined ? ` by rule ${escapeText(r.rule)}` : ""} window ${formatBytes(session.opts.window)}`,
        fields: { destination: formatDestination(to), target: r.address, ...(r.rule !== undefined ? { rule: r.rule } : {}), window: session.opts.window },
      });
      new Bridge(session, r.pipe, ended);
      session.signalOpened();
      session.resume();
    });
    return session;
  };

  /** No byte back: read and discard until the deadline from the accept, then reset. Counted under `reason`. */
  const silence = (pipe: TcpPipe, source: string, acceptedAt: number, reason: SilentReason): void => {
    rejections.note(evicted.has(pipe) ? "busy" : reason, source);
    const forget = (): void => {
      pending.delete(pipe);
      gate.leave(pipe);
    };
    if (pipe.state === "closed") return forget();
    const timer = guardedTimeout("silence deadline", () => pipe.close(SILENCE_OVER), Math.max(0, acceptedAt + deadlineMs - performance.now()));
    timer.unref();
    pipe.setHandler({
      data() {}, // discarded: how much was read tells a prober nothing
      drain() {},
      end() {}, // the peer's FIN changes nothing either
      close() {
        clearTimeout(timer);
        forget();
      },
    });
    pipe.resume();
  };

  /** The authenticated reply to `hello`, under the key of `k` that opened it (plain mode: unsealed). */
  const reply = (k: Keys, hello: ClientHello, status: number, window: number, options: Tlv[] = []) => {
    const psk = k.auth.mode === "keyed" && hello.keyIndex >= 0 ? k.auth.keys[hello.keyIndex] : undefined;
    return encodeServerReply(psk, hello, { status, flags: 0, window, options });
  };

  /** An authenticated refusal: the status in a reply, a half-close, a close after the linger; logged aggregated. */
  const refuse = (pipe: TcpPipe, k: Keys, hello: ClientHello, status: RefuseStatus, code: string, reason: string): void => {
    pending.delete(pipe);
    gate.leave(pipe);
    // Wrong-worker answers are routine when clients cannot reach join ports: counted, not logged.
    if (code === "E_WRONG_WORKER") wrongWorker++;
    else damage.refused(pipe.remote, code, reason);
    // A session refused (a standby stripe's OPEN is no session yet: its TARGET is counted when refused).
    if (hello.header.kind === KIND_OPEN && (hello.header.flags & HEADER_FLAG_STANDBY) === 0) stats.refused(code === "E_SESSION_LIMIT" ? "limit" : reasonLabel(code));
    pipe.send(reply(k, hello, status, 0).bytes);
    pipe.shutdown();
    guardedTimeout("refusal linger", () => pipe.close(), REFUSE_LINGER_MS).unref();
  };

  /** The first message authenticated: time, replay, admission, then the reply and the stripe's carrier. */
  const authenticated = (pipe: TcpPipe, k: Keys, source: string, acceptedAt: number, r: HandshakeRead<ClientHello>): void => {
    const hello = r.value;
    const stale = checkFresh(hello, wall(), replay);
    if (stale !== undefined) return silence(pipe, source, acceptedAt, stale);
    // A fresh hello from a key holder: its attempt does not count against its source.
    limiter.refund(source);
    const keyId = hello.keyIndex >= 0 ? k.ids[hello.keyIndex]! : "";
    const a = admit(hello, keyId, registry, policy, (s) => membership.get(s) ?? noMember, source);
    let session: StripedPipe;
    if ((a.kind === "open" || a.kind === "attach") && (stripesBySource.get(source) ?? 0) >= maxStripesPerSource) {
      return refuse(pipe, k, hello, STATUS_REFUSED, "E_SOURCE_LIMIT", `limit of ${maxStripesPerSource} stripe connections per source address`);
    }
    switch (a.kind) {
      case "silent":
        return silence(pipe, source, acceptedAt, a.reason);
      case "refuse":
        return refuse(pipe, k, hello, a.status, a.code, a.reason);
      case "open": {
        if (a.standby) return standby(pipe, k, source, hello, r.leftover, a.key, a.membership);
        const opened = openSession(a.key, hello.header.window, a.destination, a.membership, source, pipe.remote);
        if (opened === undefined) {
          return refuse(pipe, k, hello, STATUS_REFUSED, "E_RECEIVE_MEMORY", `no receive window fits in ${formatBytes(factory.windows.limit)}`);
        }
        session = opened;
        break;
      }
      case "attach":
        session = a.session;
        if (hello.header.generation !== 1) stats.redialed();
        break;
      default: {
        const unknown: never = a;
        throw new Error(`unknown admission ${JSON.stringify(unknown)}`);
      }
    }
    pending.delete(pipe);
    gate.leave(pipe);
    countStripe(pipe, source);
    // The first reply of a session on a server of several workers says where its other stripes go.
    const out = reply(k, hello, STATUS_OK, session.opts.window, a.kind === "open" ? joinHint() : []);
    pipe.send(out.bytes);
    const h = hello.header;
    const where = remotes.get(session);
    if (where !== undefined && h.stripeIndex < policy.maxStripes) where[h.stripeIndex] = pipe.remote;
    // Keyed: records both ways from seal number 2; the 0-RTT records that came with the hello first.
    const c = carrierOf(pipe, out.sealer, hello, r.leftover);
    session.attach(h.stripeIndex, h.generation, c.carrier, c.leftover);
    pipe.resume();
  };

  /**
   * The reply option that opens a session on a server of several workers: which worker holds it, and
   * its join port (0 with --advertise-join off). None on a single process.
   */
  const joinHint = (): Tlv[] =>
    worker === undefined ? [] : [joinOption({ worker: worker.index, workers: worker.workers, port: worker.advertise ? (joinPort ?? 0) : 0 })];

  /** Counts an authenticated stripe connection against its source's limit until it closes. */
  const countStripe = (pipe: TcpPipe, source: string): void => {
    stripesBySource.set(source, (stripesBySource.get(source) ?? 0) + 1);
    pipe.whenClosed(() => {
      const n = (stripesBySource.get(source) ?? 1) - 1;
      if (n > 0) stripesBySource.set(source, n);
      else stripesBySource.delete(source);
    });
  };

  /** The carrier of an accepted stripe: sealed records (keyed) or the connection itself (plain). */
  const carrierOf = (pipe: TcpPipe, sealer: RecordSealer | undefined, hello: ClientHello, leftover: Uint8Array): { carrier: Pipe; leftover: Uint8Array | undefined } =>
    sealer !== undefined && hello.key !== undefined
      ? { carrier: new SealedPipe(pipe, { sealer, opener: new RecordOpener(hello.key, FIRST_FRAME_COUNTER), leftover }), leftover: undefined }
      : { carrier: pipe, leftover };

  /**
   * An OPEN with HEADER_FLAG_STANDBY: reply OK with the window the session will have, and hold the stripe
   * (src/proxy/standby.ts) until its TARGET frame opens the session — or until it expires or goes. A held
   * standby is a stripe connection of its source (--max-stripes-per-source) and holds the receive window
   * its reply promised (granted now, given back if no session comes of it); it is no session yet, so the
   * abandoned-session rule cannot touch it.
   */
  const standby = (pipe: TcpPipe, k: Keys, source: string, hello: ClientHello, leftover: Uint8Array, key: string, member: Membership): void => {
    const blocked = standbys.blocker(source);
    if (blocked !== undefined) return refuse(pipe, k, hello, STATUS_REFUSED, "E_STANDBY_LIMIT", blocked);
    const window = factory.grant();
    if (window === 0) return refuse(pipe, k, hello, STATUS_REFUSED, "E_RECEIVE_MEMORY", `no receive window fits in ${formatBytes(factory.windows.limit)}`);
    pending.delete(pipe);
    gate.leave(pipe);
    countStripe(pipe, source);
    // The session a standby stripe starts lives on this worker: its reply says so, as an OPEN's does.
    const out = reply(k, hello, STATUS_OK, window, joinHint());
    pipe.send(out.bytes);
    const c = carrierOf(pipe, out.sealer, hello, leftover);
    standbys.add(key, source);
    held.add(c.carrier);
    const h = hello.header;
    holdStandby(c.carrier, standbyIdleMs, (end) => {
      standbys.remove(key, source);
      held.delete(c.carrier);
      if (end.kind !== "taken") return factory.ungrant(window);
      const to = destinationFromOptions(end.frame.options);
      const blocker = to instanceof StriperError ? undefined : registry.live(key) !== undefined ? { code: "E_INTERNAL", reason: "session id in use" } : registry.openBlocker(source);
      const problem = to instanceof StriperError ? { code: to.code, reason: to.message } : blocker;
      if (problem !== undefined) {
        factory.ungrant(window);
        // Before any session exists: a RESET as the first frame ends the client's session with the reason.
        damage.refused(pipe.remote, problem.code, `standby stripe not opened: ${problem.reason}`);
        stats.refused(problem.code === "E_SESSION_LIMIT" ? "limit" : reasonLabel(problem.code));
        c.carrier.send(encodeFrame(FRAME_RESET, 0, ResetCode.PeerFailed, encodeResetReason(`${problem.code} ${problem.reason}`)));
        c.carrier.shutdown();
        guardedTimeout("refusal linger", () => c.carrier.close(), REFUSE_LINGER_MS).unref();
        return;
      }
      // Never undefined: the window was granted at the reply.
      const session = openSession(key, end.frame.window, to as Destination, member, source, pipe.remote, window)!;
      remotes.get(session)![h.stripeIndex] = pipe.remote;
      session.attach(h.stripeIndex, h.generation, c.carrier, end.rest);
    });
    pipe.resume();
  };

  /** Steps 1, 3, 4, 5: the whole first message within the deadline, authenticated, well formed. */
  const readFirstMessage = (pipe: TcpPipe, source: string, acceptedAt: number, initial?: Uint8Array): void => {
    // The keys at accept check this connection, even if setKeys() replaces them meanwhile.
    const k = keys;
    const left = Math.max(1, acceptedAt + deadlineMs - performance.now());
    // The source's token is taken when the key trial is about to run, not at accept: a client opening a
    // hundred stripes at once has a hundred accepts before any hello is read, and each authenticated
    // hello gives its token back, so only failures (and replays) drain the bucket. Idle connections are
    // bounded by the gate instead.
    const parse = clientHelloParser(k.auth);
    let charged = false;
    const chargedParse: typeof parse = (received) => {
      if (!charged && received.byteLength > 0) {
        charged = true;
        if (!limiter.take(source, performance.now())) return { kind: "invalid", error: new HandshakeRejected("rate-limited") };
      }
      return parse(received);
    };
    readHandshake(pipe, chargedParse, { deadlineMs: left, prefix: initial }, (r) => {
      if (r instanceof StriperError) return silence(pipe, source, acceptedAt, reasonOf(r));
      try {
        authenticated(pipe, k, source, acceptedAt, r);
      } catch (err) {
        // A bug, never peer input: the stripe goes, the server stays.
        log(`stripe from ${pipe.remote} dropped: E_INTERNAL ${String(err)}`);
        pending.delete(pipe);
        gate.leave(pipe);
        pipe.close(new BrokenError("E_INTERNAL", String(err)));
      }
    });
  };

  /**
   * A load balancer's connection: first its PROXY v2 header (within the same deadline), which names the
   * client; from then on the client's address is the source, for the logs and its token bucket. A missing
   * or malformed header is a failed first message like any other (silence, `bad-proxy`).
   */
  const readProxyHeader = (pipe: TcpPipe, balancer: string, acceptedAt: number): void => {
    readHandshake(pipe, proxyHeaderParser(), { deadlineMs }, (r) => {
      if (r instanceof StriperError) return silence(pipe, balancer, acceptedAt, reasonOf(r));
      const client = r.value.source;
      if (client !== undefined) {
        pipe.remoteHost = client.host;
        pipe.remote = formatAddress(client);
      }
      const source = sourceKey(pipe.remoteHost);
      pipe.resume(); // readHandshake left it paused
      readFirstMessage(pipe, source, acceptedAt, r.leftover);
    });
  };

  const onStripe = (pipe: TcpPipe): void => {
    const acceptedAt = performance.now();
    const source = sourceKey(pipe.remoteHost || pipe.remote);
    // A balancer's connections are charged to their clients' addresses, once the PROXY header names them.
    const viaBalancer = balancers !== undefined && balancers.has(pipe.remoteHost);
    // Step 2: the unauthenticated gate at accept, before a byte is read. Over it: closed at once, silently.
    const g = gate.enter(pipe, acceptedAt);
    if (!g.admitted) {
      rejections.note("busy", source);
      pipe.close(SILENCE_OVER);
      return;
    }
    if (g.evicted !== undefined) {
      evicted.add(g.evicted);
      g.evicted.close(SILENCE_OVER);
    }
    pending.add(pipe);
    if (viaBalancer) readProxyHeader(pipe, source, acceptedAt);
    else readFirstMessage(pipe, source, acceptedAt);
  };

  const listener: TcpListener = listenTcp(opts.listen, onStripe, { reusePort: opts.reusePort });
  let joinListener: TcpListener | undefined;
  if (worker !== undefined) {
    try {
      joinListener = listenTcp(worker.join, onStripe);
    } catch (err) {
      listener.stop();
      throw err;
    }
    joinPort = joinListener.port;
  }
  const ids = opts.auth.mode === "keyed" ? ` keys ${keys.ids.join(",")}` : "";
  stats.listener = formatAddress({ host: opts.listen.host, port: listener.port });
  const serves = [opts.target !== undefined ? `target ${formatAddress(opts.target)}` : "", opts.allow?.length ? `allow ${opts.allow.map((a) => escapeText(a)).join(" ")}` : ""];
  log(
    `server listening on ${stats.listener} ${serves.filter((x) => x !== "").join(" ")}${ids}; ` +
      `${describeLimits(fds.limits)}; ${maxUnauth} unauthenticated at most; ${maxSessions} sessions, ${registry.maxPerSource} per source; ${maxStripesPerSource} stripes per source; ` +
      `${maxStandby} standby stripes; receive memory ${formatBytes(factory.windows.limit)}, send budget ${formatBytes(factory.budget.limit)}`,
  );
  const floors = Math.floor(factory.windows.limit / windowCost(MIN_WINDOW));
  if (floors < maxSessions) {
    log(`warning: the receive memory (${formatBytes(factory.windows.limit)}) holds the smallest window for only ${floors} sessions; more are refused (E_RECEIVE_MEMORY)`);
  }
  if (joinListener !== undefined) {
    const told = worker!.advertise ? "told to clients" : "not told to clients (--advertise-join off)";
    log(`join port ${formatAddress({ host: worker!.join.host, port: joinListener.port })} (worker ${worker!.index} of ${worker!.workers}), ${told}`);
  }
  if (balancers !== undefined) log(`PROXY protocol v2 headers required from ${balancers.text.join(", ")}`);
  if (opts.auth.mode === "plain") log(PLAIN_WARNING);
  return {
    port: listener.port,
    sessions: registry.sessions,
    budget: factory.budget,
    rejections: rejections.counts,
    stats,
    get liveSessions() {
      return registry.size;
    },
    get unauthenticated() {
      return gate.active;
    },
    joinPort,
    get wrongWorker() {
      return wrongWorker;
    },
    destinationRefusals,
    get standby() {
      return standbys.size;
    },
    setAllow(rules) {
      const parsed = parseAllowRules(rules);
      targets.setPolicy({ defaultTarget: targets.current.defaultTarget, rules: parsed });
      log(`allowlist now ${parsed.length === 0 ? "empty" : parsed.map((r) => escapeText(r.text)).join(" ")}`);
    },
    setKeys(auth) {
      if (auth.mode !== opts.auth.mode) throw new StriperError("E_CONFIG", `cannot switch from ${opts.auth.mode} to ${auth.mode} stripes without a restart`);
      keys = keysOf(auth);
      if (auth.mode === "keyed") log(`keys now ${keys.ids.join(",")}`);
    },
    drain() {
      // The listener stays open: re-dialled stripes of live sessions must still reach them (JOIN).
      registry.stopOpening({ code: "E_DRAINING", reason: "draining" });
      // Standby stripes would only open sessions to be refused: end them cleanly (the clients' pools
      // drop them; their refills are refused), so new sessions get the OPEN's REFUSED reply instead.
      for (const p of [...held]) {
        p.shutdown();
        guardedTimeout("standby drain linger", () => p.close(), REFUSE_LINGER_MS).unref();
      }
      return stats.idle();
    },
    stop(reason = new BrokenError("E_SHUTDOWN", "server proxy shutting down")) {
      registry.stopOpening();
      factory.stop();
      listener.stop();
      joinListener?.stop();
      rejections.close();
      damage.close();
      lines.close();
      stats.close();
      for (const p of [...pending]) p.close(SILENCE_OVER);
      for (const p of [...held]) p.close(reason);
      for (const s of [...registry.sessions.values()]) s.close(reason);
    },
  };
}
