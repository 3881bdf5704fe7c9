/**
 * Reading a fixed-size handshake message from a fresh pipe, under an absolute deadline (a trickle of
 * bytes must not keep a half-open handshake alive).
 */

import { BrokenError, type StriperError } from "../errors.ts";
import type { Pipe } from "../pipe/pipe.ts";

/** Outcome of waiting for `size` bytes on a pipe. */
export interface HandshakeRead {
  /** The first `size` bytes. */
  message: Uint8Array;
  /** What arrived after them (frames that followed at once). */
  leftover: Uint8Array;
}

/**
 * Collects exactly `size` bytes from `pipe` (whose handler this takes over), or fails on close, EOF or
 * the deadline. `onReady` fires when the pipe opens (to send our half of the handshake).
 */
export function readHandshake(
  pipe: Pipe,
  size: number,
  deadlineMs: number,
  onReady: () => void,
  done: (result: HandshakeRead | StriperError) => void,
): void {
  const parts: Uint8Array[] = [];
  let have = 0;
  let finished = false;
  const finish = (r: HandshakeRead | StriperError): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    done(r);
  };
  const timer = setTimeout(() => {
    finish(new BrokenError("E_HANDSHAKE_TIMEOUT", `no handshake within ${deadlineMs} ms`));
  }, deadlineMs);
  pipe.setHandler({
    ready: onReady,
    data(chunk) {
      if (finished) return;
      parts.push(chunk);
      have += chunk.byteLength;
      if (have < size) return;
      const all = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      pipe.pause(); // until the new owner installs its handler
      finish({ message: all.subarray(0, size), leftover: all.subarray(size) });
    },
    drain() {},
    end() {
      finish(new BrokenError("E_HANDSHAKE_EOF", "connection closed during handshake"));
    },
    close(err) {
      finish(err ?? new BrokenError("E_HANDSHAKE_EOF", "connection closed during handshake"));
    },
  });
  if (pipe.state === "open") onReady();
}
