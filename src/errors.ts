/**
 * Typed errors with stable codes. Classify with `instanceof` or `.code`, never by message text.
 * Codes are part of the public contract: logs, tests and scripts match on them.
 */

/** Every error raised by tcp-striper carries a stable `code`. */
export class StriperError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StriperError";
    this.code = code;
  }
}

/** Command-line usage error: printed as one line plus usage, exit code 2. */
export class UsageError extends StriperError {
  constructor(message: string) {
    super("E_USAGE", message);
    this.name = "UsageError";
  }
}

/**
 * The peer broke the wire protocol (bad magic, unknown frame type, oversize length, data beyond the
 * window...). `wireCode` is what a GOAWAY/close reason would carry; the connection is closed.
 */
export class ProtocolError extends StriperError {
  constructor(code: string, message: string) {
    super(code, message);
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

/** A connection could not be made or was lost (refused, reset, timed out). */
export class ConnectError extends StriperError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "ConnectError";
  }
}

/** A pipe or session ended abnormally; the reason travels to the other side of a bridge. */
export class BrokenError extends StriperError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "BrokenError";
  }
}

/** Wraps anything thrown or passed as a close reason into a StriperError, keeping the original as cause. */
export function asStriperError(err: unknown, fallbackCode = "E_INTERNAL"): StriperError {
  if (err instanceof StriperError) return err;
  if (err instanceof Error) {
    const sysCode = (err as { code?: unknown }).code;
    const code = typeof sysCode === "string" ? sysCode : fallbackCode;
    return new StriperError(code, err.message, { cause: err });
  }
  return new StriperError(fallbackCode, String(err));
}
