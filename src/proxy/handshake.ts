/**
 * The stripe handshake of protocol v2, both ends (docs/protocol.md §3), as parts the proxies glue
 * together:
 *
 *   readHandshake  reads one first message from a fresh pipe under an absolute deadline, driven by a
 *                  parser (src/wire/handshake.ts) that says how long the message is and authenticates it;
 *   admit          the server's decision on an authenticated hello: open a session, attach to one, refuse
 *                  it with an authenticated reply, or stay silent (a failed membership proof) — pure;
 *   judgeReply     the client's decision on the server's authenticated reply: attach, retry the stripe,
 *                  or end the session — pure.
 *
 * The checks before admission (key, header, version, time, replay: src/secure/messages.ts) and the limits
 * at accept (src/secure/ratelimit.ts) are applied by the server in the documented order (§3.10).
 */

import { BrokenError, ConnectError, ProtocolError, StriperError } from "../errors.ts";
import type { Pipe } from "../pipe/pipe.ts";
import { HEADER_FLAG_STANDBY, KIND_JOIN, KIND_OPEN, STATUS_OK, STATUS_REFUSED, STATUS_UNKNOWN_SESSION, STATUS_WRONG_WORKER } from "../secure/constants.ts";
import { proofMatches, secretsEqual } from "../secure/kdf.ts";
import type { Key } from "../secure/keys.ts";
import type { ClientHello, HandshakeAuth, ServerReply, SilentReason } from "../secure/messages.ts";
import type { HandshakeParser } from "../wire/handshake.ts";
import { destinationFromOptions, type Destination } from "./destination.ts";
import { wantedWorker } from "./join.ts";
import { sessionKey, type SessionLookup } from "./registry.ts";
import { guardedTimeout } from "../util/guard.ts";

// --- Keys --------------------------------------------------------------------------------------------

/**
 * How a proxy authenticates its stripes: with pre-shared keys (the default; the server accepts any of
 * them, the client uses the first), or not at all (`--no-auth`: plain mode, for benchmarks and trusted
 * networks only). A library user must choose one: there is no silent default.
 */
export type StripeAuth = { readonly mode: "keyed"; readonly keys: readonly Key[] } | { readonly mode: "plain" };

/** The codec's view of StripeAuth: the key bytes. Throws E_KEY_MISSING for a keyed auth without keys. */
export function handshakeAuth(auth: StripeAuth): HandshakeAuth {
  if (auth.mode === "plain") return { mode: "plain" };
  if (auth.keys.length === 0) throw new StriperError("E_KEY_MISSING", "keyed stripe authentication needs at least one key");
  return { mode: "keyed", keys: auth.keys.map((k) => k.bytes) };
}

/** Default and largest handshake deadline, ms: the whole first message must arrive within it. */
export const HANDSHAKE_DEADLINE_MS = 10_000;
/** Default bound on connections that have not authenticated yet. */
export const DEFAULT_MAX_UNAUTHENTICATED = 1024;
/** Default handshake attempts per source and second (tokens refunded when a hello authenticates). */
export const DEFAULT_HANDSHAKE_RATE = 20;
/** Default burst of handshake attempts per source: a client dials up to 64 stripes at once. */
export const DEFAULT_HANDSHAKE_BURST = 80;

/** Default deadline for the server's authenticated reply on a stripe, ms (the client's). */
export const CLIENT_HANDSHAKE_MS = 5000;

/** What a proxy in plain mode (--no-auth) logs at start, server and client alike. */
export const PLAIN_WARNING =
  "WARNING: --no-auth: stripes are neither authenticated nor encrypted; anyone on the path can read and change them, and anyone who reaches the server can use it (benchmarks and trusted networks only)";

/**
 * The peer window a client assumes for a new session until the server's reply brings the real one: it
 * sends the app's first bytes (0-RTT) within it. Every server session window is at least this large.
 */
export const INITIAL_WINDOW = 64 * 1024;

// --- Reading ---------------------------------------------------------------------------------------

/** Largest handshake message a parser may ask for. v2's first messages are at most 2,132 bytes. */
export const MAX_HANDSHAKE_BYTES = 4096;

/** How to read one handshake message. */
export interface HandshakeReadOptions {
  /**
   * Milliseconds from the call until the whole message must have arrived. Absolute: a trickle of bytes does
   * not extend it (docs/bun-sockets.md, "Timers, options, errors").
   */
  deadlineMs: number;
  /** Largest message the parser may ask for; more is E_HANDSHAKE_TOO_LARGE (default MAX_HANDSHAKE_BYTES). */
  maxBytes?: number;
  /** Fires once the pipe is open (at once if it already is): the place to send our half of the handshake. */
  onReady?: () => void;
  /**
   * Bytes already received on this pipe that belong to this message (the leftover of the message before
   * it, in a protocol with several: SOCKS5's greeting, login and request).
   */
  prefix?: Uint8Array;
}

/** A handshake message that arrived whole. */
export interface HandshakeRead<T> {
  /** What the parser made of it. */
  value: T;
  /** The message's bytes. */
  message: Uint8Array;
  /** What arrived after it: the start of the frame stream (the client's 0-RTT records). */
  leftover: Uint8Array;
}

const EMPTY = new Uint8Array(0);

const tooLarge = (size: number, max: number): ProtocolError =>
  new ProtocolError("E_HANDSHAKE_TOO_LARGE", `handshake message of at least ${size} bytes, limit ${max}`);

/**
 * Reads one handshake message from `pipe`, taking over its handler until `done` is called, once, with the
 * message or with the reason it did not arrive: E_HANDSHAKE_TIMEOUT, E_HANDSHAKE_EOF, the pipe's own
 * error, the parser's error (the bytes are not a handshake), or E_HANDSHAKE_TOO_LARGE. On success the pipe
 * is left paused, so nothing is lost before its new owner installs a handler and resumes it.
 */
export function readHandshake<T>(
  pipe: Pipe,
  parse: HandshakeParser<T>,
  opts: HandshakeReadOptions,
  done: (result: HandshakeRead<T> | StriperError) => void,
): void {
  const maxBytes = opts.maxBytes ?? MAX_HANDSHAKE_BYTES;
  // Chunks are kept as they come and joined only when the parser is due, so a trickle costs no copies.
  let parts: Uint8Array[] = opts.prefix !== undefined && opts.prefix.byteLength > 0 ? [opts.prefix] : [];
  let have = parts.length > 0 ? parts[0]!.byteLength : 0;
  let need = 0;
  let finished = false;
  const finish = (r: HandshakeRead<T> | StriperError): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    parts = [];
    done(r);
  };
  const step = (): void => {
    const all = parts.length === 0 ? EMPTY : parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    parts = all.byteLength > 0 ? [all] : [];
    const s = parse(all);
    switch (s.kind) {
      case "more":
        need = all.byteLength + s.bytes;
        if (!(s.bytes >= 1)) finish(new StriperError("E_INTERNAL", `handshake parser asked for ${s.bytes} more bytes`));
        else if (need > maxBytes) finish(tooLarge(need, maxBytes));
        return;
      case "done":
        if (!(s.size >= 1 && s.size <= all.byteLength)) {
          finish(new StriperError("E_INTERNAL", `handshake parser reported ${s.size} bytes of ${all.byteLength}`));
          return;
        }
        // A message that arrived in one piece never asked for "more": the limit holds all the same.
        if (s.size > maxBytes) return finish(tooLarge(s.size, maxBytes));
        pipe.pause(); // until the new owner installs its handler
        finish({ value: s.value, message: all.subarray(0, s.size), leftover: all.subarray(s.size) });
        return;
      case "invalid":
        finish(s.error);
        return;
      default: {
        const unreachable: never = s;
        throw new Error(`unknown parse step ${JSON.stringify(unreachable)}`);
      }
    }
  };
  const timer = guardedTimeout("handshake deadline", () => {
    finish(new BrokenError("E_HANDSHAKE_TIMEOUT", `no handshake within ${opts.deadlineMs} ms`));
  }, opts.deadlineMs);
  const ready = opts.onReady ?? (() => {});
  pipe.setHandler({
    ready,
    data(chunk) {
      if (finished) return;
      parts.push(chunk);
      have += chunk.byteLength;
      if (have >= need) step();
    },
    drain() {},
    end() {
      finish(new BrokenError("E_HANDSHAKE_EOF", "connection closed during handshake"));
    },
    close(err) {
      finish(err ?? new BrokenError("E_HANDSHAKE_EOF", "connection closed during handshake"));
    },
  });
  step(); // the parser's first word: how many bytes to wait for
  if (!finished && pipe.state === "open") ready();
}

// --- Server: admission -----------------------------------------------------------------------------

/** What admission may refuse with: the reply status the client sees (authenticated). */
export type RefuseStatus = typeof STATUS_REFUSED | typeof STATUS_UNKNOWN_SESSION | typeof STATUS_WRONG_WORKER;

/**
 * What the server remembers of how a session was opened, to check the stripes that join it: the session
 * secret S from its OPEN and the fingerprint of the key that opened it ("" in plain mode).
 */
export interface Membership {
  readonly secret: Uint8Array;
  readonly keyId: string;
}

/** The server's decision on a stripe whose first message authenticated and was fresh. */
export type Admission<S> =
  /**
   * A new session to `destination` (the client's choice from its OPEN, or the server's default target):
   * register it with `membership`, reply OK with its window, attach the stripe. `standby`: the stripe
   * came ahead of need (HEADER_FLAG_STANDBY): hold it until its TARGET frame, then open the session.
   */
  | {
      readonly kind: "open";
      readonly key: string;
      readonly destination: Destination;
      readonly standby: boolean;
      readonly membership: Membership;
    }
  /** A stripe of a live session: reply OK with the session's window, attach the stripe. */
  | { readonly kind: "attach"; readonly key: string; readonly session: S }
  /** Reply `status` (authenticated; no frames follow) and close. `code` classifies it; `reason` is for the log. */
  | { readonly kind: "refuse"; readonly status: RefuseStatus; readonly code: string; readonly reason: string }
  /** No reply at all (silence, as for every failed check before admission). */
  | { readonly kind: "silent"; readonly reason: SilentReason };

/** The server's limits that admission applies. (Whether a destination is allowed is judged later: it needs DNS.) */
export interface AdmissionPolicy {
  /** Highest stripe index + 1 accepted in a session. */
  maxStripes: number;
  /**
   * This process's worker index when the server runs several (`--workers`): a JOIN for a session it
   * does not hold that names another worker is answered WRONG_WORKER rather than UNKNOWN_SESSION.
   */
  worker?: number;
}

/**
 * Decides what happens to a stripe whose first message authenticated (under the key `keyId`) and passed
 * the time and replay checks, in the order of docs/protocol.md §3.10 step 8: kind and stripe index, stripe
 * count, session lookup; for a live session the key that opened it and the secret (OPEN) or the join
 * proof (JOIN), compared in constant time; a session that ended stays ended; then the open limits, in
 * all and for `source` (the stripe's address; IPv6: its /64). `memberOf` says how a live session was
 * opened. Pure: it reads `sessions` and changes nothing.
 */
export function admit<S>(
  hello: ClientHello,
  keyId: string,
  sessions: SessionLookup<S>,
  policy: AdmissionPolicy,
  memberOf: (session: S) => Membership,
  source?: string,
): Admission<S> {
  const refuse = (status: RefuseStatus, code: string, reason: string): Admission<S> => ({ kind: "refuse", status, code, reason });
  const h = hello.header;
  const badIndex = h.stripeIndex >= policy.maxStripes;
  const badKind = h.kind !== KIND_OPEN && h.kind !== KIND_JOIN;
  if (badIndex || badKind) {
    return refuse(STATUS_REFUSED, badKind ? "E_BAD_KIND" : "E_STRIPE_INDEX", `index ${h.stripeIndex} kind ${h.kind}`);
  }
  // A client dials indices 0 … count−1, so this never refuses a well-formed header. The count is not held
  // against maxStripes: a client set up for more stripes than the server takes keeps the ones it may have.
  if (h.stripeCount === 0 || h.stripeIndex >= h.stripeCount) {
    return refuse(STATUS_REFUSED, "E_STRIPE_COUNT", `index ${h.stripeIndex} of stripe count ${h.stripeCount}`);
  }
  const key = sessionKey(hello.sid);
  const live = sessions.live(key);
  if (live !== undefined) {
    // Knowing a session id (it travels in clear) is not enough: the stripe must come with the same key
    // and prove the session secret. A second OPEN of a live id carries S itself; a JOIN a proof bound to
    // its own salt. Both compared in constant time.
    const m = memberOf(live);
    const proven = h.kind === KIND_OPEN ? secretsEqual(m.secret, h.secret) : proofMatches(m.secret, hello.cs, h.secret);
    if (!proven || m.keyId !== keyId) return { kind: "silent", reason: "bad-member" };
    return { kind: "attach", key, session: live };
  }
  // An ended session is not opened again under its id: a late OPEN would start its stream over.
  if (sessions.ended(key)) return refuse(STATUS_UNKNOWN_SESSION, "E_SESSION_ENDED", `session ${key.slice(0, 12)} has ended`);
  if (h.kind === KIND_JOIN) {
    // Only a JOIN that names a worker, on a server of several, learns that another one may hold it.
    const wanted = policy.worker === undefined ? undefined : wantedWorker(h.options);
    if (wanted !== undefined && wanted !== policy.worker) {
      return refuse(STATUS_WRONG_WORKER, "E_WRONG_WORKER", `session ${key.slice(0, 12)} is on worker ${wanted}, this is ${policy.worker}`);
    }
    return refuse(STATUS_UNKNOWN_SESSION, "E_UNKNOWN_SESSION", `unknown session ${key.slice(0, 12)}`);
  }
  const destination = destinationFromOptions(h.options);
  if (destination instanceof StriperError) return refuse(STATUS_REFUSED, destination.code, destination.message);
  const standby = (h.flags & HEADER_FLAG_STANDBY) !== 0;
  // A standby stripe learns its destination from its TARGET frame; one in the header is a client bug.
  if (standby && destination.kind !== "server-default") return refuse(STATUS_REFUSED, "E_BAD_DESTINATION", "a standby stripe with a destination");
  const blocker = sessions.openBlocker(source);
  if (blocker !== undefined) return refuse(STATUS_REFUSED, blocker.code, blocker.reason);
  return { kind: "open", key, destination, standby, membership: { secret: new Uint8Array(h.secret), keyId } };
}

// --- Client: the reply ------------------------------------------------------------------------------

/** The client's decision on the server's authenticated reply. */
export type ReplyVerdict =
  /** Accepted: take `window` as the peer's window and attach the stripe. */
  | { readonly kind: "attach"; readonly window: number }
  /** This stripe failed; the dialer decides whether and when to dial it again. */
  | { readonly kind: "retry"; readonly error: StriperError }
  /** The session cannot go on: re-dialling will not help. */
  | { readonly kind: "end"; readonly error: StriperError };

/** Judges an authenticated reply as docs/protocol.md §3.9 says. Pure. */
export function judgeReply(r: ServerReply): ReplyVerdict {
  if (r.status === STATUS_OK) return { kind: "attach", window: r.window };
  if (r.status === STATUS_UNKNOWN_SESSION) {
    return { kind: "end", error: new BrokenError("E_SESSION_LOST", "server proxy no longer has this session") };
  }
  if (r.status === STATUS_WRONG_WORKER) {
    return { kind: "retry", error: new ConnectError("E_WRONG_WORKER", "the stripe reached a worker process that does not hold the session") };
  }
  return { kind: "retry", error: new ConnectError("E_REFUSED", `server proxy refused the stripe (status ${r.status})`) };
}

/** E_AUTH: the server's reply to our first message did not authenticate under our key. */
export function replyNotAuthentic(): StriperError {
  return new ConnectError("E_AUTH", "server reply did not authenticate with our key: wrong key, or not a tcp-striper server");
}

/** E_AUTH: no authenticated reply came (before `ms`, or before the connection ended). */
export function noAuthenticReply(ms: number | undefined): StriperError {
  const when = ms === undefined ? "before the server closed the connection" : `within ${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)} s`;
  return new ConnectError("E_AUTH", `no authenticated reply ${when}: wrong key, clock off by more than 30 s, or not a tcp-striper server`);
}
