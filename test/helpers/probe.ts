/**
 * A prober, as an attacker scanning a server port would be: connect, send some bytes (optionally keep
 * sending, optionally half-close), and record what comes back and when and how the server closed.
 */

import type { Socket, TCPSocketConnectOptions } from "bun";
import type { Cleanup } from "./util.ts";

/** What a probe saw. */
export interface ProbeResult {
  /** Every byte the server sent. */
  received: Uint8Array;
  /** Milliseconds from the connect call to the close. */
  closedAfterMs: number;
  /** "reset" (ECONNRESET or a write that failed), "eof" (a clean FIN and close), or another error code. */
  how: string;
}

/** Options of a probe. */
export interface ProbeOptions {
  /** Send FIN after `bytes` (a truncated message that the prober gives up on). */
  fin?: boolean;
  /** Go on writing 64 random-ish bytes every this many ms until the server closes. */
  keepWritingMs?: number;
  /** Give up (and resolve with how: "timeout") after this long (default 15 s). */
  timeoutMs?: number;
  host?: string;
}

/** Connects to `port`, sends `bytes`, and resolves when the server closes the connection. */
export function probe(port: number, bytes: Uint8Array, cleanup: Cleanup[], opts: ProbeOptions = {}): Promise<ProbeResult> {
  const started = performance.now();
  const got: Uint8Array[] = [];
  return new Promise((resolve, reject) => {
    let done = false;
    let sock: Socket<undefined> | undefined;
    let writer: ReturnType<typeof setInterval> | undefined;
    const finish = (how: string): void => {
      if (done) return;
      done = true;
      clearInterval(writer);
      clearTimeout(timer);
      resolve({ received: new Uint8Array(Buffer.concat(got)), closedAfterMs: performance.now() - started, how });
    };
    const timer = setTimeout(() => {
      sock?.terminate();
      finish("timeout");
    }, opts.timeoutMs ?? 15_000);
    // allowHalfOpen works (docs/bun-sockets.md) but is missing from bun-types.
    const options: TCPSocketConnectOptions<undefined> & { allowHalfOpen: true } = {
      hostname: opts.host ?? "127.0.0.1",
      port,
      allowHalfOpen: true,
      socket: {
        open(s) {
          sock = s;
          s.write(bytes);
          if (opts.fin) s.shutdown();
          if (opts.keepWritingMs !== undefined) {
            const filler = new Uint8Array(64).map((_, i) => (i * 37) & 0xff);
            writer = setInterval(() => {
              if (s.write(filler) < 0) finish("reset");
            }, opts.keepWritingMs);
          }
        },
        data(_s, chunk) {
          got.push(new Uint8Array(chunk));
        },
        end(s) {
          // The server's FIN: wait for the close that follows (or close ourselves).
          s.end();
          finish("eof");
        },
        close(_s, err) {
          const code = (err as { code?: string } | undefined)?.code;
          finish(err === undefined ? "eof" : code === "ECONNRESET" ? "reset" : (code ?? err.message));
        },
        error() {},
        connectError(_s, err) {
          done = true;
          clearTimeout(timer);
          reject(err);
        },
      },
    };
    Bun.connect<undefined>(options).catch((err: unknown) => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        reject(err);
      }
    });
    cleanup.push(() => {
      clearInterval(writer);
      sock?.terminate();
    });
  });
}
