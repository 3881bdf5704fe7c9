/**
 * Test helpers for the SOCKS front: a raw socket that records every byte and how it closed (to check
 * exact replies and malformed requests), the real curl (through a SOCKS5 or HTTP proxy, output hashed),
 * and a local HTTP server to download from.
 */

import type { Socket, TCPSocketConnectOptions } from "bun";
import { tool } from "./tools.ts";
import type { Cleanup } from "./util.ts";

/** A client socket that keeps everything it receives. */
export class RawSocket {
  private parts: Uint8Array[] = [];
  private size = 0;
  /** "eof", "reset" or an error code once closed; undefined while open. */
  closed: string | undefined;
  private waiters = new Set<() => void>();
  private sock: Socket<undefined> | undefined;

  /** Connects to 127.0.0.1:`port`. */
  static open(port: number, cleanup: Cleanup[]): Promise<RawSocket> {
    const r = new RawSocket();
    return new Promise((resolve, reject) => {
      const options: TCPSocketConnectOptions<undefined> & { allowHalfOpen: true } = {
        hostname: "127.0.0.1",
        port,
        allowHalfOpen: true,
        socket: {
          open(s) {
            r.sock = s;
            resolve(r);
          },
          data(_s, chunk) {
            r.parts.push(new Uint8Array(chunk));
            r.size += chunk.byteLength;
            r.wake();
          },
          end(s) {
            s.end();
            r.close("eof");
          },
          close(_s, err) {
            const code = (err as { code?: string } | undefined)?.code;
            r.close(err === undefined ? "eof" : code === "ECONNRESET" ? "reset" : (code ?? err.message));
          },
          error() {},
          connectError(_s, err) {
            reject(err);
          },
        },
      };
      Bun.connect<undefined>(options).catch(reject);
      cleanup.push(() => r.sock?.terminate());
    });
  }

  private close(how: string): void {
    this.closed ??= how;
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters) w();
  }

  /** Everything received so far. */
  get bytes(): Uint8Array {
    if (this.parts.length > 1) this.parts = [new Uint8Array(Buffer.concat(this.parts))];
    return this.parts[0] ?? new Uint8Array(0);
  }

  write(b: Uint8Array | string): void {
    this.sock!.write(typeof b === "string" ? new TextEncoder().encode(b) : b);
  }

  /** Half-closes our side. */
  shutdown(): void {
    this.sock!.shutdown();
  }

  /** Resolves once `cond` holds (checked on every event), or rejects after `ms` naming `what`. */
  private until(cond: () => boolean, what: string, ms: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!cond()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`within ${ms} ms, did not happen: ${what} (have ${this.size} bytes, closed ${this.closed})`));
      }, ms);
      this.waiters.add(check);
      check();
    });
  }

  /** Waits for at least `n` bytes in all; returns them all. */
  async read(n: number, ms = 10_000): Promise<Uint8Array> {
    await this.until(() => this.size >= n || this.closed !== undefined, `${n} bytes`, ms);
    return this.bytes;
  }

  /** Waits for the close; returns how. */
  async whenClosed(ms = 10_000): Promise<string> {
    await this.until(() => this.closed !== undefined, "the close", ms);
    return this.closed!;
  }
}

/** What curl did. */
export interface CurlResult {
  exit: number;
  /** Its output (the body), as bytes. */
  body: Uint8Array;
  stderr: string;
  /** -w output when asked for (after the body on stdout it is ambiguous: it goes to stderr here). */
  written: string;
}

/**
 * Runs the real curl with `args` (plus -sS, a 20 s limit, and `-w` written to stderr after a marker).
 * `write`: a -w format, e.g. "%{http_connect}".
 */
export async function curl(args: string[], write = "%{http_code}"): Promise<CurlResult> {
  const p = Bun.spawn([tool("curl", "curl"), "-sS", "--max-time", "20", "-w", `%{stderr}\n@@${write}`, ...args], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [exit, out, err] = await Promise.all([p.exited, new Response(p.stdout).arrayBuffer(), new Response(p.stderr).text()]);
  const at = err.lastIndexOf("\n@@");
  return { exit, body: new Uint8Array(out), stderr: at >= 0 ? err.slice(0, at) : err, written: at >= 0 ? err.slice(at + 3).trim() : "" };
}

/** A local HTTP server on 127.0.0.1 serving `files` by path ("/f10k" → bytes). */
export function httpServer(files: Record<string, Uint8Array>, cleanup: Cleanup[]): { port: number; requests: () => number } {
  let n = 0;
  const srv = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      n++;
      const body = files[new URL(req.url).pathname];
      return body === undefined ? new Response("no such file\n", { status: 404 }) : new Response(body);
    },
  });
  cleanup.push(() => srv.stop(true));
  return { port: srv.port!, requests: () => n };
}

/** The SOCKS5 request bytes for a name, IPv4 or IPv6 destination (no greeting). */
export function socksRequest(cmd: number, host: string | Uint8Array, port: number): Uint8Array {
  let addr: number[];
  if (typeof host === "string") addr = [3, host.length, ...Buffer.from(host, "latin1")];
  else addr = [host.byteLength === 4 ? 1 : 4, ...host];
  return Uint8Array.from([5, cmd, 0, ...addr, port >> 8, port & 0xff]);
}
