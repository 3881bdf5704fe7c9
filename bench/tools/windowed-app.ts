/**
 * A window-limited app and its target, like ssh: the sender keeps at most --window bytes (default
 * 2 MiB, OpenSSH's channel window) unacknowledged at ITS OWN level, and the receiver acknowledges every
 * --block bytes (default 64 KiB) with an 8-byte message back. Such an app runs at
 * min(path rate, window ÷ round trip), so every millisecond of queue on the path costs it rate.
 *
 *   bun bench/tools/windowed-app.ts --role target [--port P] [--host H] [--dir up|down] [options]
 *   bun bench/tools/windowed-app.ts --role app --port P [--host H] [--dir up|down] [options]
 *
 *   --dir up      the app sends, the target acknowledges (default); down: the target sends on connect
 *   --window B    bytes the sender keeps unacknowledged at most (default 2097152)
 *   --block B     the receiver acknowledges every B bytes (default 65536)
 *   --seconds S   the sender sends for S seconds, then waits for the last ack and sends FIN (default 8)
 *   --warmup-ms M round trips of blocks sent before M ms and bytes acked before it are left out of the
 *                 steady figures (default 1000)
 *   --series-ms M also report bytes acknowledged per M ms (default 0 = no series)
 *   --timeout-ms T the app gives up (exit 1) after T ms (default seconds × 1000 + 30000)
 *
 * stdout, one JSON object per line: {"event":"ready",...} (the target adds its port), then for each
 * connection the SENDING side prints {"event":"done","role","dir","window","block","bytes","seconds",
 * "rate","steadyRate","rtt":{n,min,p50,p95,p99,max,mean},...}: rates in bytes/s, round trips in ms from
 * the write of a block's last byte to the arrival of the ack that covers it. The receiving side prints
 * {"event":"received","bytes":N} when its connection ends. Both exit 0 (app) or keep listening (target).
 *
 * Self-contained on purpose (no bench/lib imports): the suite's driver is being rewritten around it.
 */

import type { Socket } from "bun";

const USAGE =
  "usage: windowed-app.ts --role app|target [--port P] [--host H] [--dir up|down] [--window B] [--block B] [--seconds S] [--warmup-ms M] [--series-ms M] [--timeout-ms T]";

function fail(msg: string): never {
  process.stderr.write(`windowed-app: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

const KNOWN = ["--role", "--port", "--host", "--dir", "--window", "--block", "--seconds", "--warmup-ms", "--series-ms", "--timeout-ms"];
const args = new Map<string, string>();
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf("=");
    const k = eq > 0 ? a.slice(0, eq) : a;
    if (!KNOWN.includes(k)) fail(`unknown argument "${a}"`);
    const v = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (v === undefined) fail(`${k} needs a value`);
    args.set(k, v);
  }
}
function num(k: string, dflt: number, min: number, max: number): number {
  const v = args.get(k);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < min || n > max) fail(`${k} wants a number in [${min}, ${max}], got "${v}"`);
  return n;
}

const role = args.get("--role") ?? fail("--role is required");
if (role !== "app" && role !== "target") fail(`--role: app or target, got "${role}"`);
const dir = args.get("--dir") ?? "up";
if (dir !== "up" && dir !== "down") fail(`--dir: up or down, got "${dir}"`);
const host = args.get("--host") ?? "127.0.0.1";
const port = num("--port", role === "target" ? 0 : -1, role === "target" ? 0 : 1, 65535);
const block = Math.round(num("--block", 64 * 1024, 1024, 64 * 1024 * 1024));
const window = Math.round(num("--window", 2 * 1024 * 1024, block, 1 << 30));
const seconds = num("--seconds", 8, 0.1, 3600);
const warmupMs = num("--warmup-ms", 1000, 0, 3600_000);
const seriesMs = num("--series-ms", 0, 0, 60_000);
const timeoutMs = num("--timeout-ms", seconds * 1000 + 30_000, 1000, 7200_000);

/** This process sends when it is the app going up or the target going down. */
const isSender = (role === "app") === (dir === "up");

const emit = (o: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};
const errCode = (err: unknown): string => {
  const e = err as { code?: string; message?: string } | undefined;
  return e?.code ?? e?.message ?? String(err);
};

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

/** Most round-trip samples kept: 10 minutes at 1 GB/s of 64 KiB blocks would be ~9 M; keep it bounded. */
const MAX_SAMPLES = 2_000_000;

/** The sending side of one connection: window-limited writes, one send time per block, RTT per ack. */
class Sender {
  private sent = 0;
  private acked = 0;
  private readonly t0 = performance.now();
  private stopAt: number;
  private stopping = false;
  private finished = false;
  /** Send time of each outstanding block, by block number mod ring size (at most window/block + 1 outstanding). */
  private readonly sendTime: Float64Array;
  private samples = new Float64Array(1024);
  private nSamples = 0;
  private ackBuf = new Uint8Array(8);
  private ackHave = 0;
  private warmAcked = -1;
  private warmAt = 0;
  private lastAckAt = 0;
  private readonly series: number[] = [];
  private seriesTimer: Timer | undefined;
  private seriesLast = 0;
  private stopTimer: Timer;

  constructor(
    private readonly s: Socket<unknown>,
    private readonly done: (report: Record<string, unknown>) => void,
  ) {
    this.sendTime = new Float64Array(Math.ceil(window / block) + 2);
    this.stopAt = this.t0 + seconds * 1000;
    this.stopTimer = setTimeout(() => {
      this.stopping = true;
      this.maybeFinish();
    }, seconds * 1000);
    if (seriesMs > 0) {
      this.seriesTimer = setInterval(() => {
        this.series.push(this.acked - this.seriesLast);
        this.seriesLast = this.acked;
      }, seriesMs);
    }
  }

  /** Writes while the window and the kernel allow; a block's send time is the write of its last byte. */
  pump(): void {
    while (!this.finished) {
      if (this.stopping || performance.now() >= this.stopAt) {
        // Finish the block in progress so every block sent is acknowledged whole.
        if (this.sent % block === 0) {
          this.stopping = true;
          this.maybeFinish();
          return;
        }
      }
      const room = this.acked + window - this.sent;
      if (room <= 0) return;
      const toBlockEnd = block - (this.sent % block);
      const at = this.sent % PAYLOAD.byteLength;
      const n = Math.min(room, toBlockEnd, PAYLOAD.byteLength - at);
      const w = this.s.write(PAYLOAD, at, n);
      if (w < 0) return this.fail("write failed");
      this.sent += w;
      if (this.sent % block === 0 && w > 0) this.sendTime[(this.sent / block) % this.sendTime.length] = performance.now();
      if (w < n) return; // the kernel is full: the drain handler calls back
    }
  }

  /** Ack messages: 8 bytes each, a cumulative byte count (u64 big-endian, below 2^53). */
  onData(chunk: Uint8Array): void {
    const now = performance.now();
    let i = 0;
    let latest = -1;
    while (i < chunk.byteLength) {
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
    const warm = now - this.t0 >= warmupMs;
    for (let b = this.acked / block + 1; b * block <= latest; b++) {
      const sentAt = this.sendTime[b % this.sendTime.length]!;
      if (sentAt - this.t0 >= warmupMs && this.nSamples < MAX_SAMPLES) {
        if (this.nSamples === this.samples.length) {
          const bigger = new Float64Array(this.samples.length * 2);
          bigger.set(this.samples);
          this.samples = bigger;
        }
        this.samples[this.nSamples++] = now - sentAt;
      }
    }
    if (warm && this.warmAcked < 0) {
      this.warmAcked = this.acked;
      this.warmAt = now;
    }
    this.acked = latest;
    this.lastAckAt = now;
    this.maybeFinish();
    this.pump();
  }

  private maybeFinish(): void {
    if (!this.stopping || this.finished || this.acked < this.sent || this.sent % block !== 0) return;
    this.finished = true;
    this.s.shutdown();
    this.report(null);
  }

  fail(error: string): void {
    if (this.finished) return;
    this.finished = true;
    this.report(error);
    this.s.terminate();
  }

  private report(error: string | null): void {
    clearTimeout(this.stopTimer);
    clearInterval(this.seriesTimer);
    const rtt = this.samples.slice(0, this.nSamples).sort();
    let sum = 0;
    for (const x of rtt) sum += x;
    const end = this.lastAckAt || performance.now();
    const elapsed = (end - this.t0) / 1000;
    const steadyS = this.warmAcked >= 0 ? (end - this.warmAt) / 1000 : 0;
    const r3 = (x: number): number => Math.round(x * 1000) / 1000;
    this.done({
      event: "done",
      role,
      dir,
      window,
      block,
      error,
      bytes: this.acked,
      seconds: r3(elapsed),
      rate: elapsed > 0 ? Math.round(this.acked / elapsed) : 0,
      steadyRate: steadyS > 0 ? Math.round((this.acked - this.warmAcked) / steadyS) : 0,
      rtt: {
        n: rtt.length,
        min: r3(rtt[0] ?? 0),
        p50: r3(quantile(rtt, 0.5)),
        p95: r3(quantile(rtt, 0.95)),
        p99: r3(quantile(rtt, 0.99)),
        max: r3(rtt[rtt.length - 1] ?? 0),
        mean: r3(rtt.length ? sum / rtt.length : 0),
      },
      ...(seriesMs > 0 ? { seriesMs, series: this.series } : {}),
    });
  }
}

/** The receiving side: counts bytes, sends an 8-byte cumulative count at every block boundary. */
class Acker {
  received = 0;
  private ackedBlocks = 0;
  private pending: Uint8Array[] = [];

  constructor(private readonly s: Socket<unknown>) {}

  onData(chunk: Uint8Array): void {
    this.received += chunk.byteLength;
    const blocks = Math.floor(this.received / block);
    if (blocks === this.ackedBlocks) return;
    this.ackedBlocks = blocks;
    const value = blocks * block;
    const msg = new Uint8Array(8);
    const v = new DataView(msg.buffer);
    v.setUint32(0, Math.floor(value / 2 ** 32));
    v.setUint32(4, value >>> 0);
    this.pending.push(msg);
    this.flush();
  }

  flush(): void {
    while (this.pending.length > 0) {
      const head = this.pending[0]!;
      const w = this.s.write(head);
      if (w < 0) return;
      if (w < head.byteLength) {
        this.pending[0] = head.subarray(w);
        return;
      }
      this.pending.shift();
    }
  }
}

interface Conn {
  sender?: Sender;
  acker?: Acker;
  ended: boolean;
}

/** Socket handlers shared by both roles; `onEnd` says what ending means for this process. */
function handlers(onEnd: (c: Conn, error: string | null) => void) {
  return {
    open(s: Socket<Conn>) {
      const c: Conn = { ended: false };
      s.data = c;
      if (isSender) {
        c.sender = new Sender(s as Socket<unknown>, (r) => {
          emit(r);
          onEnd(c, (r.error as string | null) ?? null);
        });
        c.sender.pump();
      } else {
        c.acker = new Acker(s as Socket<unknown>);
      }
    },
    data(s: Socket<Conn>, chunk: Uint8Array) {
      const c = s.data;
      if (c.sender) c.sender.onData(chunk);
      else c.acker?.onData(chunk);
    },
    drain(s: Socket<Conn>) {
      const c = s.data;
      if (c.sender) c.sender.pump();
      else c.acker?.flush();
    },
    end(s: Socket<Conn>) {
      const c = s.data;
      // The receiver's end of the stream: report, then close our side too.
      if (c.acker && !c.ended) {
        c.ended = true;
        emit({ event: "received", role, dir, bytes: c.acker.received });
        s.end();
        onEnd(c, null);
      }
    },
    close(s: Socket<Conn>, err?: Error) {
      const c = s.data;
      if (!c) return;
      if (c.sender) c.sender.fail(err ? errCode(err) : "closed before the last ack");
      else if (!c.ended) {
        c.ended = true;
        emit({ event: "received", role, dir, bytes: c.acker?.received ?? 0, error: err ? errCode(err) : "closed before EOF" });
        onEnd(c, "closed before EOF");
      }
    },
    error(s: Socket<Conn>, err: Error) {
      s.data?.sender?.fail(errCode(err));
    },
  };
}

// The app gives up after --timeout-ms; the target lives until it is stopped (it serves many runs).
if (role === "app") {
  setTimeout(() => {
    emit({ event: "timeout", role, afterMs: timeoutMs });
    process.exit(1);
  }, timeoutMs).unref();
}

if (role === "target") {
  try {
    const l = Bun.listen<Conn>({ hostname: host, port, allowHalfOpen: true, socket: handlers(() => {}) });
    emit({ event: "ready", role, dir, port: l.port, pid: process.pid });
    const stop = (): void => {
      l.stop(true);
      process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  } catch (err) {
    process.stderr.write(`windowed-app: cannot listen: ${errCode(err)}\n`);
    process.exit(3);
  }
} else {
  emit({ event: "ready", role, dir, pid: process.pid });
  let exitCode = 0;
  const h = handlers((_c, error) => {
    if (error !== null) exitCode = 1;
    // Let the FIN/last ack leave before exiting.
    setTimeout(() => process.exit(exitCode), 100);
  });
  Bun.connect<Conn>({
    hostname: host,
    port,
    allowHalfOpen: true,
    data: { ended: false },
    socket: { ...h, connectError: (_s: Socket<Conn>, err: Error) => fail(`connect: ${errCode(err)}`) },
  }).catch((err) => {
    emit({ event: "done", role, dir, error: `connect: ${errCode(err)}` });
    process.exit(1);
  });
}
