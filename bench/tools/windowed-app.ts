/**
 * A window-limited app and its target, like ssh: the sender keeps at most --window bytes (default
 * 2 MiB, OpenSSH's channel window) unacknowledged at ITS OWN level, and the receiver acknowledges every
 * --block bytes (default 64 KiB) with an 8-byte message back. Such an app runs at
 * min(path rate, window ÷ round trip), so every millisecond of queue on the path costs it rate.
 *
 * Speaks the standard tools' flags and events (bench/tools/app.ts and target.ts), so a scenario can put
 * it in the chain with RunSpec.tools:
 *
 *   bun bench/tools/windowed-app.ts --mode upload|download --port P [options]   the app (connects)
 *   bun bench/tools/windowed-app.ts --mode sink|source --port P [options]       the target (listens)
 *
 *   upload / source  this side sends; download / sink: this side receives and acknowledges
 *   --window B       bytes the sender keeps unacknowledged at most (default 2097152)
 *   --block B        the receiver acknowledges every B bytes (default 65536)
 *   --deadline-ms D  the sender stops after D ms (default 8000), finishes its block, waits for the last
 *                    ack, then FIN; --bytes N (when > 0) stops it after N bytes instead, if sooner
 *   --warmup-ms M    blocks sent before M ms are left out of the round-trip figures (default 1000)
 *   --timeout-ms T   the app gives up after T ms (exit 1)
 *   --conns, --hash, --seed, --host: as the standard tools (one connection; the payload is not hashed)
 *
 * stdout, one JSON object per line: {"event":"ready"} (the target adds its port); the app ends with
 * {"event":"done","conns":[...]}, the target reports {"event":"conn",...} per connection, as the
 * standard tools do (times epoch ms). The sending side's connection report also carries "window",
 * "block", "steadyRate" (bytes/s acknowledged after the warm-up) and "rtt": {n, min, p50, p95, p99, max,
 * mean} in ms, each sample from the write of a block's last byte to the arrival of the ack covering it.
 */

import type { Socket } from "bun";
import { emit, errCode, now, parseFlags } from "../lib/data.ts";

const USAGE =
  "usage: windowed-app.ts --mode upload|download|sink|source --port P [--host H] [--window B] [--block B] [--deadline-ms D] [--bytes N] [--warmup-ms M] [--timeout-ms T]";
const f = parseFlags(
  process.argv.slice(2),
  ["--mode", "--port", "--host", "--window", "--block", "--deadline-ms", "--bytes", "--warmup-ms", "--timeout-ms", "--conns", "--hash", "--seed"],
  USAGE,
);

function fail(msg: string): never {
  process.stderr.write(`windowed-app: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function num(k: string, dflt: number, min: number, max: number): number {
  const v = f.get(k);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < min || n > max) fail(`${k} wants a number in [${min}, ${max}], got "${v}"`);
  return n;
}

const mode = f.get("--mode") ?? fail("--mode is required");
if (!["upload", "download", "sink", "source"].includes(mode)) fail(`--mode: upload, download, sink or source, got "${mode}"`);
const isApp = mode === "upload" || mode === "download";
/** This process sends when it is the app going up or the target going down. */
const isSender = mode === "upload" || mode === "source";
const host = f.get("--host") ?? "127.0.0.1";
const port = num("--port", isApp ? -1 : 0, isApp ? 1 : 0, 65535);
const block = Math.round(num("--block", 64 * 1024, 1024, 64 * 1024 * 1024));
const window = Math.round(num("--window", 2 * 1024 * 1024, block, 1 << 30));
const deadlineMs = num("--deadline-ms", 8000, 0, 3600_000) || 8000;
const maxBytes = Math.round(num("--bytes", 0, 0, 2 ** 50));
const warmupMs = num("--warmup-ms", 1000, 0, 3600_000);
const timeoutMs = num("--timeout-ms", deadlineMs + 30_000, 1000, 7200_000);
if (num("--conns", 1, 1, 1) !== 1) fail("--conns: one connection only");

/** Payload: 1 MiB of xorshift bytes, written again and again (the proxies do not compress). */
const PAYLOAD = (() => {
  const b = new Uint8Array(1 << 20);
  const w = new Uint32Array(b.buffer);
  let x = 0x9e3779b9;
  for (let i = 0; i < w.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w[i] = x >>> 0;
  }
  return b;
})();

/** p-quantile of sorted values (nearest rank). */
function quantile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

/** Most round-trip samples kept (10 minutes of 64 KiB blocks at 1 GB/s is ~9 M): bounded. */
const MAX_SAMPLES = 2_000_000;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

/** One connection, either side. The report has the standard fields of both tools. */
class Conn {
  readonly t0 = now();
  /** t0 on the performance clock, which the round trips are measured on. */
  private readonly t0Perf = performance.now();
  tOpen = 0;
  tFirst = 0;
  tLast = 0;
  tEnd = 0;
  /** Payload (sender) or acks (receiver) written; payload (receiver) or acks (sender) read. */
  sent = 0;
  received = 0;
  eof = false;
  error: string | null = null;
  done = false;
  // Sender.
  private acked = 0;
  private stopping = false;
  private finished = false;
  private readonly stopTimer: Timer | undefined;
  /** Send time of each outstanding block, by block number mod ring size. */
  private readonly sendTime = new Float64Array(Math.ceil(window / block) + 2);
  private samples = new Float64Array(1024);
  private nSamples = 0;
  private readonly ackBuf = new Uint8Array(8);
  private ackHave = 0;
  private warmAcked = -1;
  private warmAt = 0;
  private lastAckAt = 0;
  // Receiver: unsent ack messages.
  private ackedBlocks = 0;
  private readonly pending: Uint8Array[] = [];

  constructor(
    private readonly s: Socket<Conn>,
    private readonly ended: (c: Conn) => void,
  ) {
    if (isSender) {
      this.stopTimer = setTimeout(() => {
        this.stopping = true;
        this.maybeFinish();
        this.pump();
      }, deadlineMs);
    }
  }

  /** Sender: writes while the window and the kernel allow; a block's send time is the write of its last byte. */
  pump(): void {
    if (!isSender) return this.flushAcks();
    while (!this.finished) {
      if (this.stopping || (maxBytes > 0 && this.sent >= maxBytes)) {
        // Finish the block in progress so every block sent is acknowledged whole.
        if (this.sent % block === 0) {
          this.stopping = true;
          this.maybeFinish();
          return;
        }
      }
      const room = this.acked + window - this.sent;
      if (room <= 0) return;
      const at = this.sent % PAYLOAD.byteLength;
      const n = Math.min(room, block - (this.sent % block), PAYLOAD.byteLength - at);
      const w = this.s.write(PAYLOAD, at, n);
      if (w < 0) return this.fail("write failed");
      this.sent += w;
      if (this.sent % block === 0 && w > 0) this.sendTime[(this.sent / block) % this.sendTime.length] = performance.now();
      if (w < n) return; // the kernel is full: drain calls back
    }
  }

  onData(chunk: Uint8Array): void {
    const t = now();
    if (this.received === 0) this.tFirst = t;
    this.tLast = t;
    this.received += chunk.byteLength;
    if (isSender) this.onAcks(chunk);
    else this.ack();
  }

  /** Sender: ack messages are 8 bytes each, a cumulative byte count (u64 big-endian, below 2^53). */
  private onAcks(chunk: Uint8Array): void {
    const t = performance.now();
    let latest = -1;
    for (let i = 0; i < chunk.byteLength; ) {
      const take = Math.min(8 - this.ackHave, chunk.byteLength - i);
      this.ackBuf.set(chunk.subarray(i, i + take), this.ackHave);
      this.ackHave += take;
      i += take;
      if (this.ackHave === 8) {
        const v = new DataView(this.ackBuf.buffer);
        latest = v.getUint32(0) * 2 ** 32 + v.getUint32(4);
        this.ackHave = 0;
      }
    }
    if (latest < 0) return;
    if (latest > this.sent || latest < this.acked) return this.fail(`bad ack ${latest} (sent ${this.sent}, acked ${this.acked})`);
    const start = this.t0Perf;
    for (let b = this.acked / block + 1; b * block <= latest; b++) {
      const sentAt = this.sendTime[b % this.sendTime.length]!;
      if (sentAt - start >= warmupMs && this.nSamples < MAX_SAMPLES) {
        if (this.nSamples === this.samples.length) {
          const bigger = new Float64Array(this.samples.length * 2);
          bigger.set(this.samples);
          this.samples = bigger;
        }
        this.samples[this.nSamples++] = t - sentAt;
      }
    }
    if (this.warmAcked < 0 && t - start >= warmupMs) {
      this.warmAcked = this.acked;
      this.warmAt = now();
    }
    this.acked = latest;
    this.lastAckAt = now();
    this.maybeFinish();
    this.pump();
  }

  private maybeFinish(): void {
    if (!this.stopping || this.finished || this.acked < this.sent || this.sent % block !== 0) return;
    this.finished = true;
    clearTimeout(this.stopTimer);
    this.s.shutdown();
  }

  /** Receiver: an 8-byte cumulative count at every block boundary. */
  private ack(): void {
    const blocks = Math.floor(this.received / block);
    if (blocks === this.ackedBlocks) return;
    this.ackedBlocks = blocks;
    const value = blocks * block;
    const msg = new Uint8Array(8);
    const v = new DataView(msg.buffer);
    v.setUint32(0, Math.floor(value / 2 ** 32));
    v.setUint32(4, value >>> 0);
    this.pending.push(msg);
    this.flushAcks();
  }

  private flushAcks(): void {
    while (this.pending.length > 0) {
      const head = this.pending[0]!;
      const w = this.s.write(head);
      if (w < 0) return;
      this.sent += w;
      if (w < head.byteLength) {
        this.pending[0] = head.subarray(w);
        return;
      }
      this.pending.shift();
    }
  }

  /** The peer's FIN: a receiver ends its side too; a sender (whose FIN went first) is done. */
  peerEnded(): void {
    this.eof = true;
    if (!isSender) this.s.end();
    this.end(null);
  }

  fail(error: string): void {
    this.end(error);
    this.s.terminate();
  }

  end(error: string | null): void {
    if (this.done) return;
    this.done = true;
    this.tEnd = now();
    clearTimeout(this.stopTimer);
    if (error !== null && this.error === null) this.error = error;
    if (isSender && !this.finished && this.error === null) this.error = "closed before the last ack";
    this.ended(this);
  }

  /** The standard tools' connection report (both tools' field names), plus the sender's figures. */
  report(id: number): Record<string, unknown> {
    const payloadOut = isSender ? this.sent : 0;
    const payloadIn = isSender ? 0 : this.received;
    const r: Record<string, unknown> = {
      id,
      mode,
      t0: this.t0,
      tOpen: this.tOpen,
      tFirst: this.tFirst,
      tLast: this.tLast,
      tEnd: this.tEnd || now(),
      sent: payloadOut,
      received: payloadIn,
      bytesIn: payloadIn,
      bytesOut: payloadOut,
      shaSent: "",
      shaRecv: "",
      shaIn: "",
      shaOut: "",
      eof: this.eof,
      error: this.error,
    };
    if (!isSender) return r;
    const rtt = this.samples.slice(0, this.nSamples).sort();
    let sum = 0;
    for (const x of rtt) sum += x;
    const steadyS = this.warmAcked >= 0 ? (this.lastAckAt - this.warmAt) / 1000 : 0;
    r.window = window;
    r.block = block;
    r.steadyRate = steadyS > 0 ? Math.round((this.acked - this.warmAcked) / steadyS) : 0;
    r.rtt = {
      n: rtt.length,
      min: r3(rtt[0] ?? 0),
      p50: r3(quantile(rtt, 0.5)),
      p95: r3(quantile(rtt, 0.95)),
      p99: r3(quantile(rtt, 0.99)),
      max: r3(rtt[rtt.length - 1] ?? 0),
      mean: r3(rtt.length ? sum / rtt.length : 0),
    };
    return r;
  }
}

/** Socket handlers of both roles. */
function handlers(ended: (c: Conn) => void) {
  return {
    open(s: Socket<Conn>) {
      s.data = new Conn(s, ended);
      s.data.tOpen = now();
      s.data.pump();
    },
    data(s: Socket<Conn>, chunk: Uint8Array) {
      s.data.onData(chunk);
    },
    drain(s: Socket<Conn>) {
      s.data.pump();
    },
    end(s: Socket<Conn>) {
      s.data.peerEnded();
    },
    close(s: Socket<Conn>, err?: Error) {
      const c = s.data;
      if (!c) return;
      // After our own shutdown(), Bun reports the peer's FIN as a close without `end`.
      if (!err && isSender) c.eof = true;
      c.end(err ? (errCode(err) ?? "error") : c.eof ? null : "closed before EOF");
    },
    error(s: Socket<Conn>, err: Error) {
      s.data?.end(errCode(err) ?? "error");
    },
  };
}

if (isApp) {
  emit({ event: "ready", pid: process.pid });
  const cpu0 = process.cpuUsage();
  const finish = (c: Conn | undefined, code: number): void => {
    const u = process.cpuUsage(cpu0);
    const conns = c ? [c.report(0)] : [];
    emit({ event: "done", mode, t0: c?.t0 ?? now(), tEnd: c?.tEnd || now(), cpuSeconds: (u.user + u.system) / 1e6, conns });
    process.exit(code);
  };
  let conn: Conn | undefined;
  setTimeout(() => {
    conn?.end(`timeout after ${timeoutMs} ms`);
    finish(conn, 1);
  }, timeoutMs).unref();
  const h = handlers((c) => setTimeout(() => finish(c, c.error === null ? 0 : 1), 50));
  Bun.connect<Conn>({
    hostname: host,
    port,
    allowHalfOpen: true,
    socket: {
      ...h,
      open(s: Socket<Conn>) {
        h.open(s);
        conn = s.data;
      },
      connectError(_s: Socket<Conn>, err: Error) {
        emit({ event: "done", mode, t0: now(), tEnd: now(), cpuSeconds: 0, conns: [{ id: 0, error: `connect: ${errCode(err) ?? "failed"}` }] });
        process.exit(1);
      },
    },
  }).catch((err: unknown) => {
    emit({ event: "done", mode, t0: now(), tEnd: now(), cpuSeconds: 0, conns: [{ id: 0, error: `connect: ${errCode(err) ?? "failed"}` }] });
    process.exit(1);
  });
} else {
  let seq = 0;
  const ids = new WeakMap<Conn, number>();
  const h = handlers((c) => emit({ event: "conn", ...c.report(ids.get(c) ?? 0) }));
  try {
    const l = Bun.listen<Conn>({
      hostname: host,
      port,
      allowHalfOpen: true,
      socket: {
        ...h,
        open(s: Socket<Conn>) {
          h.open(s);
          ids.set(s.data, seq++);
        },
      },
    });
    emit({ event: "ready", port: l.port, pid: process.pid, mode });
    const stop = (): void => {
      l.stop(true);
      process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  } catch (err) {
    process.stderr.write(`windowed-app: cannot listen: ${errCode(err) ?? String(err)}\n`);
    process.exit(3);
  }
}
