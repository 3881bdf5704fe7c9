/**
 * The stripe handshake, both ends (docs/protocol.md §3), as three parts the proxies glue together:
 *
 *   readHandshake  reads one handshake message from a fresh pipe under an absolute deadline, driven by a
 *                  parser (src/wire/handshake.ts) that says how long the message is;
 *   admit          the server's decision on a HELLO: open a session, attach to one, or refuse — pure;
 *   judgeWelcome   the client's decision on a WELCOME: attach, retry the stripe, or end the session — pure.
 *
 * Checks that later versions add (authentication, replay, per-source limits, destination allowlist) go
 * into the parser and into `admit`; the I/O around them stays as it is.
 */

import { BrokenError, ConnectError, ProtocolError, StriperError } from "../errors.ts";
import type { Pipe } from "../pipe/pipe.ts";
import type { Address } from "../pipe/tcp.ts";
import {
  HELLO_JOIN,
  HELLO_OPEN,
  STATUS_BAD_VERSION,
  STATUS_OK,
  STATUS_REFUSED,
  STATUS_UNKNOWN_SESSION,
  VERSION,
} from "../wire/constants.ts";
import type { HandshakeParser, Hello, Welcome } from "../wire/handshake.ts";
import { sessionKey, type SessionLookup } from "./registry.ts";

// --- Reading ---------------------------------------------------------------------------------------

/** Largest handshake message a parser may ask for. v1's are 32 and 16 bytes; v2's header is at most ~2 KiB. */
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
}

/** A handshake message that arrived whole. */
export interface HandshakeRead<T> {
  /** What the parser made of it. */
  value: T;
  /** The message's bytes. */
  message: Uint8Array;
  /** What arrived after it: the start of the frame stream (0-RTT data in later versions). */
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
  let parts: Uint8Array[] = [];
  let have = 0;
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
  const timer = setTimeout(() => {
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

/** What admission may refuse with: the WELCOME status the client sees. */
export type RefuseStatus = typeof STATUS_BAD_VERSION | typeof STATUS_REFUSED | typeof STATUS_UNKNOWN_SESSION;

/** The server's decision on a stripe whose HELLO arrived whole. */
export type Admission<S> =
  /** A new session, to `target`: register it, answer OK with its window, attach the stripe. */
  | { readonly kind: "open"; readonly key: string; readonly target: Address }
  /** A stripe of a live session: answer OK with the session's window, attach the stripe. */
  | { readonly kind: "attach"; readonly key: string; readonly session: S }
  /** Answer `status` (no frames follow) and close. `code` classifies it; `reason` is for the log line. */
  | { readonly kind: "refuse"; readonly status: RefuseStatus; readonly code: string; readonly reason: string };

/** The server's limits and defaults that admission applies. */
export interface AdmissionPolicy {
  /** Highest stripe index + 1 accepted in a session. */
  maxStripes: number;
  /** Where new sessions go (v1 carries no destination: always the server's target). */
  target: Address;
}

/**
 * Decides what happens to a stripe, in the order of docs/protocol.md §3.3: version, stripe index and kind,
 * stripe count, then the session lookup and the open limits. Pure: it reads `sessions` and changes nothing.
 */
export function admit<S>(hello: Hello, sessions: SessionLookup<S>, policy: AdmissionPolicy): Admission<S> {
  const refuse = (status: RefuseStatus, code: string, reason: string): Admission<S> => ({ kind: "refuse", status, code, reason });
  if (hello.version !== VERSION) return refuse(STATUS_BAD_VERSION, "E_BAD_VERSION", `version ${hello.version}`);
  const badIndex = hello.stripeIndex >= policy.maxStripes;
  const badKind = hello.kind !== HELLO_OPEN && hello.kind !== HELLO_JOIN;
  if (badIndex || badKind) {
    return refuse(STATUS_REFUSED, badKind ? "E_BAD_KIND" : "E_STRIPE_INDEX", `index ${hello.stripeIndex} kind ${hello.kind}`);
  }
  // A client dials indices 0 … count−1, so this never refuses a well-formed HELLO. The count is not held
  // against maxStripes: a client set up for more stripes than the server takes keeps the ones it may have.
  if (hello.stripeCount === 0 || hello.stripeIndex >= hello.stripeCount) {
    return refuse(STATUS_REFUSED, "E_STRIPE_COUNT", `index ${hello.stripeIndex} of stripe count ${hello.stripeCount}`);
  }
  const key = sessionKey(hello.sessionId);
  const live = sessions.live(key);
  // An OPEN for a live session is one of the client's parallel first dials: it joins.
  if (live !== undefined) return { kind: "attach", key, session: live };
  if (hello.kind === HELLO_JOIN) return refuse(STATUS_UNKNOWN_SESSION, "E_UNKNOWN_SESSION", `unknown session ${key.slice(0, 12)}`);
  const blocker = sessions.openBlocker();
  if (blocker !== undefined) return refuse(STATUS_REFUSED, blocker.code, blocker.reason);
  return { kind: "open", key, target: policy.target };
}

// --- Client: the WELCOME ---------------------------------------------------------------------------

/** The client's decision on a WELCOME. */
export type WelcomeVerdict =
  /** Accepted: take `window` as the peer's window and attach the stripe. */
  | { readonly kind: "attach"; readonly window: number }
  /** This stripe failed; the dialer decides whether and when to dial it again. */
  | { readonly kind: "retry"; readonly error: StriperError }
  /** The session cannot go on: re-dialling will not help. */
  | { readonly kind: "end"; readonly error: StriperError };

/** Judges a WELCOME as docs/protocol.md §3.4 says. Pure. */
export function judgeWelcome(w: Welcome): WelcomeVerdict {
  if (w.version !== VERSION || w.status === STATUS_BAD_VERSION) {
    return { kind: "end", error: new ConnectError("E_BAD_VERSION", `server proxy speaks protocol version ${w.version}, not ${VERSION}`) };
  }
  if (w.status === STATUS_OK) return { kind: "attach", window: w.window };
  if (w.status === STATUS_UNKNOWN_SESSION) {
    return { kind: "end", error: new BrokenError("E_SESSION_LOST", "server proxy no longer has this session") };
  }
  return { kind: "retry", error: new ConnectError("E_REFUSED", `server proxy refused the stripe (status ${w.status})`) };
}
