/**
 * Typed errors of the secure layer (keys, records). They extend StriperError, so callers classify them
 * with `instanceof` or `.code` like every other error; messages are one line and never contain key
 * material.
 */

import { StriperError } from "../errors.ts";

/**
 * A key could not be loaded: missing, unreadable, malformed. Codes: E_KEY_MISSING, E_KEY_FILE,
 * E_KEY_BASE64, E_KEY_LENGTH, E_KEY_COUNT. The CLI prints the message and exits with status 2.
 */
export class KeyError extends StriperError {
  constructor(code: KeyErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "KeyError";
  }
}

/** The stable codes a KeyError carries. */
export type KeyErrorCode = "E_KEY_MISSING" | "E_KEY_FILE" | "E_KEY_BASE64" | "E_KEY_LENGTH" | "E_KEY_COUNT";

/**
 * A sealed record could not be opened or sealed. Codes:
 * - E_RECORD_AUTH: a length seal or body did not authenticate (tampering, a wrong key, garbage);
 * - E_RECORD_TOO_LARGE: an authenticated length above the receiver's maximum, or a body too large to seal;
 * - E_RECORD_EMPTY: an authenticated length of 0 (the sealer never makes one), or an empty body to seal;
 * - E_RECORD_COUNTER: the key's nonce counter is used up (never wraps: the stripe ends instead);
 * - E_RECORD_TRUNCATED: the stream ended inside a record.
 * On a stripe, every one of them ends that stripe only; the session re-sends what it carried.
 */
export class RecordError extends StriperError {
  constructor(code: RecordErrorCode, message: string) {
    super(code, message);
    this.name = "RecordError";
  }
}

/** The stable codes a RecordError carries. */
export type RecordErrorCode =
  | "E_RECORD_AUTH"
  | "E_RECORD_TOO_LARGE"
  | "E_RECORD_EMPTY"
  | "E_RECORD_COUNTER"
  | "E_RECORD_TRUNCATED";
