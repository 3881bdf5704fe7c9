/**
 * Typed errors with stable codes. Classify with `instanceof` or `.code`, never by message text.
 * Codes are part of the public contract: logs, tests and scripts match on them.
 *
 * Every error also says which RESET code a session sends its peer when it ends with that error
 * (`resetCode`): a ProtocolError sends RESET_PROTOCOL, a ConnectError RESET_TARGET_UNREACHABLE, and so
 * on. A RESET that arrives from the peer becomes a PeerResetError carrying the code it received.
 */

import { ResetCode } from "./wire/constants.ts";

/**
 * The codes tcp-striper raises itself, grouped by where they come from. To add one, add a line here;
 * the ErrorCode type follows.
 */
export const ERROR_CODES = [
  // Generic.
  "E_INTERNAL", // a handler threw something unexpected
  "E_USAGE", // bad command line
  "E_BAD_OPTION", // an option out of range (config.ts, datagram pipe)
  "E_START", // the program could not start
  "E_CONFIG_FILE", // a config file that cannot be read or is invalid (src/cli/config.ts)
  "E_LISTEN", // a listener could not bind, without a system code (src/ops/daemon.ts)
  // Pipes.
  "E_NOT_WRITABLE", // send() after shutdown or close
  "E_CLOSED", // used after close
  "E_ABORTED", // closed without a reason
  "E_HANDLER", // a pipe's event handler threw
  "E_SOCKET", // a socket error without a system code
  "E_CONNECT", // a connect failed without a system code
  "E_FD_LIMIT", // a connection not opened: the process is at its descriptor limit (src/util/fdlimit.ts)
  "E_MSG_TOO_LARGE", // datagram pipe: message above the maximum
  "E_TRUNCATED", // datagram pipe: end of stream inside a message
  // Wire protocol (docs/protocol.md §8): each one is a ProtocolError.
  "E_PROTOCOL", // something other than a ProtocolError was thrown while decoding a stripe
  "E_OFFSET_RANGE",
  "E_UNKNOWN_FRAME",
  "E_FRAME_TOO_LARGE",
  "E_BAD_PAD",
  "E_WINDOW",
  "E_DATA_AFTER_FIN",
  "E_FIN_MISMATCH",
  "E_BAD_ACK",
  "E_REORDER_MEMORY", // out-of-order data would cost more memory than the reorder buffer allows
  // Handshake and proxies (src/proxy/handshake.ts refusal reasons included).
  "E_HANDSHAKE_TIMEOUT",
  "E_HANDSHAKE_EOF",
  "E_HANDSHAKE_TOO_LARGE",
  "E_HANDSHAKE_REJECTED", // a first message failed a check: the server stays silent (HandshakeRejected)
  "E_BAD_KIND",
  "E_STRIPE_INDEX",
  "E_STRIPE_COUNT",
  "E_UNKNOWN_SESSION",
  "E_SESSION_LIMIT",
  "E_SOURCE_LIMIT", // a source address holds as many sessions or stripe connections as it may (--max-sessions-per-source, --max-stripes-per-source)
  "E_SESSION_ENDED", // a stripe for a session that ended recently (its id stays ended)
  "E_RECEIVE_MEMORY", // no receive window fits in --max-receive-buffer: the session is refused
  "E_ABANDONED", // a server session lost every stripe before anything was delivered: released at once
  "E_REFUSED",
  "E_SESSION_LOST",
  "E_WRONG_WORKER", // a JOIN reached a worker process that does not hold its session (src/proxy/join.ts)
  "E_JOIN_UNREACHABLE", // the join port a server advertised did not answer: the client uses the main address
  "E_WORKER", // a worker process could not start or stopped unexpectedly (src/proxy/workers.ts)
  "E_SHUTDOWN",
  "E_DRAINING", // a new session refused while the proxy drains (SIGTERM): live ones go on
  "E_DRAIN_TIMEOUT", // the drain deadline passed with the session still live (src/ops/lifecycle.ts)
  "E_CONFIG", // a proxy option out of range
  // Destinations (issue 13: client-chosen targets, the allowlist, the SOCKS/HTTP CONNECT front).
  "E_NOT_ALLOWED", // the server's allowlist or SSRF defaults refuse the destination
  "E_UNRESOLVED", // the destination's name did not resolve (or the lookup timed out)
  "E_CONNECT_TIMEOUT", // the target did not answer within the connect deadline
  "E_DNS_BUSY", // too many name lookups waiting on the server
  "E_BAD_DESTINATION", // a destination option that is malformed
  "E_STANDBY_LIMIT", // the server holds as many standby stripes as it allows (in all, or from this source)
  "E_UNEXPECTED_FRAME", // a frame type where it has no meaning (a TARGET inside a session, OPENED from a client)
  "E_APP_REQUEST", // an app's SOCKS or HTTP CONNECT request is malformed or not supported
  "E_APP_AUTH", // an app's SOCKS username/password (RFC 1929) or Proxy-Authorization is wrong
  "E_VERDICT_TIMEOUT", // the client waited too long for the server to say whether the target connected
  // Session and stripes.
  "E_PEER_RESET", // the peer sent RESET (PeerResetError)
  "E_GRACE_EXPIRED",
  "E_STALE_STRIPE",
  "E_STRIPE_REPLACED",
  "E_STRIPE_EOF",
  "E_STRIPE_CLOSED",
  "E_STRIPE_SILENT",
  "E_CONTROL_FLOOD", // a stripe sent control frames faster than its guard allows (stripe closed)
  // Secure stripes (src/secure/*, src/pipe/sealed.ts).
  "E_AUTH", // no authenticated reply from the server (wrong key, or not a tcp-striper server)
  "E_KEY_MISSING",
  "E_KEY_FILE",
  "E_KEY_BASE64",
  "E_KEY_LENGTH",
  "E_KEY_COUNT",
  "E_RECORD_AUTH", // a sealed record did not authenticate: that stripe ends
  "E_RECORD_TOO_LARGE",
  "E_RECORD_EMPTY",
  "E_RECORD_COUNTER",
  "E_RECORD_TRUNCATED",
  // Socket codes tcp-striper raises itself (as the kernel would name them).
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
] as const;

type Letter = "A" | "B" | "C" | "D" | "E" | "F" | "G" | "H" | "I" | "J" | "K" | "L" | "M" | "N" | "O" | "P" | "Q" | "R" | "S" | "T" | "U" | "V" | "W" | "X" | "Y" | "Z";

/**
 * A code the operating system or runtime put on an error (ECONNRESET, ETIMEDOUT...), passed on as it
 * is. Our own codes start with "E_", which this pattern does not match, so a misspelt one of ours is
 * a type error.
 */
export type SystemErrorCode = `E${Letter}${string}`;

/** Codes tests make up for errors of their own (`E_TEST`, `E_TEST_EMPTY`...); src never raises one. */
export type TestErrorCode = `E_TEST${string}`;

/** Every code a StriperError can carry. */
export type ErrorCode = (typeof ERROR_CODES)[number] | SystemErrorCode | TestErrorCode;

/** Options of a StriperError. */
export interface StriperErrorOptions {
  cause?: unknown;
  /** The RESET code a session sends when it ends with this error; see defaultResetCode. */
  resetCode?: ResetCode;
}

/** The RESET code for an error that does not name one: by code where one fits, else RESET_PEER_FAILED. */
export function defaultResetCode(code: ErrorCode): ResetCode {
  switch (code) {
    case "E_SHUTDOWN":
      return ResetCode.Shutdown;
    case "E_GRACE_EXPIRED":
      return ResetCode.GraceExpired;
    case "E_PROTOCOL":
      return ResetCode.Protocol;
    default:
      return ResetCode.PeerFailed;
  }
}

/** Every error raised by tcp-striper carries a stable `code`. */
export class StriperError extends Error {
  readonly code: ErrorCode;
  /** The RESET code a session sends its peer when it ends with this error. */
  readonly resetCode: ResetCode;
  constructor(code: ErrorCode, message: string, options?: StriperErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "StriperError";
    this.code = code;
    this.resetCode = options?.resetCode ?? defaultResetCode(code);
  }
}

/** Command-line usage error: printed as one line plus usage, exit code 2. */
export class UsageError extends StriperError {
  constructor(message: string) {
    super("E_USAGE", message);
    this.name = "UsageError";
  }
}

/** An option outside its valid range (src/config.ts); `option` names it as SessionOptions spells it. */
export class ConfigError extends StriperError {
  constructor(
    readonly option: string,
    message: string,
  ) {
    super("E_BAD_OPTION", message);
    this.name = "ConfigError";
  }
}

/**
 * The peer broke the wire protocol (bad magic, unknown frame type, oversize length, data beyond the
 * window...). A session that ends with it sends RESET_PROTOCOL (its `resetCode`) before closing.
 */
export class ProtocolError extends StriperError {
  constructor(code: ErrorCode, message: string) {
    super(code, message, { resetCode: ResetCode.Protocol });
    this.name = "ProtocolError";
  }
}

/** A message larger than the datagram pipe's maximum was sent or announced. */
export class MessageTooLargeError extends StriperError {
  constructor(size: number, max: number) {
    super("E_MSG_TOO_LARGE", `message of ${size} bytes exceeds the maximum of ${max}`);
    this.name = "MessageTooLargeError";
  }
}

/**
 * A connection could not be made or was lost (refused, reset, timed out). A session that ends with it
 * tells the peer RESET_TARGET_UNREACHABLE unless another code is given.
 */
export class ConnectError extends StriperError {
  constructor(code: ErrorCode, message: string, options?: StriperErrorOptions) {
    super(code, message, { resetCode: ResetCode.TargetUnreachable, ...options });
    this.name = "ConnectError";
  }
}

/** A pipe or session ended abnormally; the reason travels to the other side of a bridge. */
export class BrokenError extends StriperError {
  constructor(code: ErrorCode, message: string, options?: StriperErrorOptions) {
    super(code, message, options);
    this.name = "BrokenError";
  }
}

/**
 * The peer aborted the session with a RESET frame (E_PEER_RESET). `peerCode` is the code it sent (any
 * number: an unknown code is kept as it came) and `reason` its text. Nothing is sent back.
 */
export class PeerResetError extends BrokenError {
  constructor(
    readonly peerCode: number,
    readonly reason: string,
  ) {
    super("E_PEER_RESET", `peer reset the session (code ${peerCode}): ${reason}`);
    this.name = "PeerResetError";
  }
}

/** Wraps anything thrown or passed as a close reason into a StriperError, keeping the original as cause. */
export function asStriperError(err: unknown, fallbackCode: ErrorCode = "E_INTERNAL"): StriperError {
  if (err instanceof StriperError) return err;
  if (err instanceof Error) {
    const sysCode = (err as { code?: unknown }).code;
    // Whatever code the runtime put on it is passed on unchanged (typically ECONNRESET and friends).
    const code = typeof sysCode === "string" ? (sysCode as SystemErrorCode) : fallbackCode;
    return new StriperError(code, err.message, { cause: err });
  }
  return new StriperError(fallbackCode, String(err));
}
