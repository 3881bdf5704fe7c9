/**
 * Benchmark app (the user of the proxies), one process that opens C connections at once.
 *
 *   bun bench/tools/app.ts --port P --mode upload|download|echo [--bytes N] [--conns C] [--seed S]
 *                          [--hash 1|0] [--deadline-ms D] [--timeout-ms T] [--sequential 1]
 *
 * - upload: sends N bytes of the test stream (seed + connection index) — or fewer if --deadline-ms
 *   passes first — then FIN, and waits for the target to close.
 * - download: sends nothing, receives until EOF (the target is in source mode), then closes.
 * - echo: sends N bytes, FIN, receives the echo until EOF, and compares the two SHA-256s itself.
 * - --sequential 1: the C connections one after another (each opened when the previous has ended), so
 *   each meets warm processes and an idle path: for latency figures such as the time to a first reply.
 * - --socks HOST:PORT: --port is a SOCKS5 proxy (the client's --socks front); each connection first asks
 *   it for HOST:PORT (greeting and request in one write, no authentication), then transfers as above.
 *
 * stdout: {"event":"ready"} at start, then one {"event":"done","conns":[...]} line when every
 * connection has ended or --timeout-ms passed (then exit code 1), with this process's CPU seconds over
 * the transfer. Times are epoch ms (data.ts `now`).
 */

import type { Socket } from "bun";
import { Digest, StreamGen, emit, errCode, now, parseFlags } from "../lib/data.ts";

const USAGE =
  "usage: app.ts --port P --mode upload|download|echo [--bytes N] [--conns C] [--seed S] [--hash 1|0] [--deadline-ms D] [--timeout-ms T] [--sequential 1] [--socks HOST:PORT]";
const f = parseFlags(
  process.argv.slice(2),
  ["--port", "--host", "--mode", "--bytes", "--conns", "--seed", "--hash", "--deadline-ms", "--timeout-ms", "--sequential", "--socks"],
  USAGE,
);
const mode = f.get("--mode") ?? "upload";
if (!["upload", "download", "echo"].includes(mode)) {
  process.stderr.write(`bad --mode ${mode}\n${USAGE}\n`);
  process.exit(2);
}
const host = f.get("--host") ?? "127.0.0.1";
const port = Number(f.get("--port"));
const bytes = Number(f.get("--bytes") ?? 0);
const conns = Number(f.get("--conns") ?? 1);
const seed = Number(f.get("--seed") ?? 1);
const hash = (f.get("--hash") ?? "1") !== "0";
const deadlineMs = Number(f.get("--deadline-ms") ?? 0);
const timeoutMs = Number(f.get("--timeout-ms") ?? 120_000);
const sequential = (f.get("--sequential") ?? "0") !== "0";
/** The SOCKS5 greeting (no authentication) and CONNECT request for --socks, sent in one write. */
const socksHello = ((): Uint8Array | undefined => {
  const to = f.get("--socks");
  if (to === undefined) return undefined;
  const colon = to.lastIndexOf(":");
  const name = Buffer.from(to.slice(0, colon));
  const p = Number(to.slice(colon + 1));
  return Uint8Array.from([5, 1, 0, 5, 1, 0, 3, name.byteLength, ...name, p >> 8, p & 0xff]);
})();
/** The method reply (2 bytes) and the CONNECT reply (10: our front answers with an IPv4 BND address). */
const SOCKS_REPLY_BYTES = 12;

interface Conn {
  id: number;
  t0: number;
  tOpen: number;
  tFirst: number;
  tLast: number;
  tSent: number;
  tEnd: number;
  sent: number;
  received: number;
  gen: StreamGen | undefined;
  pending: Uint8Array | undefined;
  hashSent: Digest;
  hashRecv: Digest;
  sendDone: boolean;
  eof: boolean;
  error: string | null;
  done: boolean;
  /** SOCKS reply bytes still to read before the transfer starts (0 without --socks). */
  socksLeft: number;
}

const all: Conn[] = [];
let remaining = conns;
let finished = false;
let timedOut = false;
/** CPU seconds of this process (user + system) since the transfer started. */
let cpuStart = 0;
const cpuNow = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

function result(c: Conn) {
  const shaSent = c.hashSent.hex();
  const shaRecv = c.hashRecv.hex();
  const r: Record<string, unknown> = {
    id: c.id,
    t0: c.t0,
    tOpen: c.tOpen,
    tFirst: c.tFirst,
    tLast: c.tLast,
    tSent: c.tSent,
    tEnd: c.tEnd,
    sent: c.sent,
    received: c.received,
    shaSent,
    shaRecv,
    eof: c.eof,
    error: c.error,
  };
  if (mode === "echo") r.intact = c.error === null && c.sent === c.received && (!hash || shaSent === shaRecv);
  return r;
}

function finish(code: number): void {
  if (finished) return;
  finished = true;
  const t0 = Math.min(...all.map((c) => c.t0));
  const tEnd = Math.max(...all.map((c) => c.tEnd || now()));
  emit({ event: "done", mode, t0, tEnd, cpuSeconds: cpuNow() - cpuStart, conns: all.map(result) });
  process.exit(code);
}

function ended(c: Conn, error: string | null): void {
  if (c.done) return;
  c.done = true;
  c.tEnd = now();
  if (error !== null && c.error === null) c.error = error;
  if (--remaining === 0) finish(timedOut ? 1 : 0);
  else if (sequential && !timedOut) open(all.length);
}

/** Upload and echo: generate and write until the kernel pushes back, the stream ends or the deadline passes. */
function pump(s: Socket<Conn>): void {
  const c = s.data;
  if (c.sendDone || mode === "download") return;
  for (;;) {
    if (c.pending) {
      const n = s.write(c.pending);
      if (n < 0) return;
      c.sent += n;
      if (n < c.pending.byteLength) {
        c.pending = c.pending.subarray(n);
        return;
      }
      c.pending = undefined;
    }
    const expired = deadlineMs > 0 && now() - c.t0 >= deadlineMs;
    const chunk = expired ? undefined : c.gen!.next();
    if (!chunk) {
      c.sendDone = true;
      c.tSent = now();
      s.shutdown();
      return;
    }
    c.hashSent.update(chunk);
    // The generator reuses its buffer, and write() drops what the kernel did not take: send the
    // chunk now and copy only an unsent rest.
    const n = s.write(chunk);
    if (n < 0) return;
    c.sent += n;
    if (n < chunk.byteLength) {
      c.pending = chunk.slice(n);
      return;
    }
  }
}

function open(id: number): void {
  const c: Conn = {
    id,
    t0: now(),
    tOpen: 0,
    tFirst: 0,
    tLast: 0,
    tSent: 0,
    tEnd: 0,
    sent: 0,
    received: 0,
    gen: mode === "download" ? undefined : new StreamGen(seed + id, bytes),
    pending: undefined,
    hashSent: new Digest(hash && mode !== "download"),
    hashRecv: new Digest(hash && mode !== "upload"),
    sendDone: mode === "download",
    eof: false,
    error: null,
    done: false,
    socksLeft: socksHello === undefined ? 0 : SOCKS_REPLY_BYTES,
  };
  all.push(c);
  Bun.connect<Conn>({
    hostname: host,
    port,
    allowHalfOpen: true,
    data: c,
    socket: {
      open(s) {
        c.tOpen = now();
        if (socksHello !== undefined) s.write(socksHello);
        else pump(s);
      },
      data(s, chunk) {
        if (c.socksLeft > 0) {
          // The SOCKS replies: 05 00 (no authentication), then 05 00 … (succeeded); anything else fails.
          const at = SOCKS_REPLY_BYTES - c.socksLeft;
          const n = Math.min(c.socksLeft, chunk.byteLength);
          for (let i = 0; i < n; i++) {
            const want = at + i === 0 || at + i === 2 ? 5 : at + i === 1 || at + i === 3 ? 0 : -1;
            if (want >= 0 && chunk[i] !== want) {
              s.terminate();
              ended(c, `socks reply byte ${at + i} is ${chunk[i]}`);
              return;
            }
          }
          c.socksLeft -= n;
          chunk = chunk.subarray(n);
          if (c.socksLeft === 0) pump(s);
          if (chunk.byteLength === 0) return;
        }
        const t = now();
        if (c.received === 0) c.tFirst = t;
        c.tLast = t;
        c.received += chunk.byteLength;
        c.hashRecv.update(chunk);
      },
      drain(s) {
        pump(s);
      },
      end(s) {
        // The peer's FIN before ours (download): done receiving; close.
        c.eof = true;
        if (mode === "download") {
          s.end();
          ended(c, null);
        }
      },
      close(_s, err) {
        const e = errCode(err);
        // After our own shutdown(), Bun reports the peer's FIN as a close without `end`.
        if (e === null && c.sendDone) c.eof = true;
        ended(c, e ?? (c.eof ? null : "closed before EOF"));
      },
      error(_s, err) {
        ended(c, errCode(err) ?? "error");
      },
      connectError(_s, err) {
        ended(c, `connect: ${errCode(err) ?? "failed"}`);
      },
    },
  }).catch((err) => ended(c, `connect: ${errCode(err) ?? "failed"}`));
}

emit({ event: "ready", pid: process.pid });
setTimeout(() => {
  timedOut = true;
  for (const c of all) if (!c.done) ended(c, `timeout after ${timeoutMs} ms`);
  finish(1);
}, timeoutMs);
cpuStart = cpuNow();
for (let i = 0; i < (sequential ? 1 : conns); i++) open(i);
