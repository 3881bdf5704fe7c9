/**
 * Benchmark target (the "real server" behind the proxies), one process.
 *
 *   bun bench/tools/target.ts --port P --mode sink|source|echo [--bytes N] [--seed S] [--hash 1|0] [--deadline-ms D]
 *
 * - sink: counts (and hashes) what arrives; at the sender's EOF reports and closes.
 * - source: on connect sends N bytes of the test stream (seed + connection index), or fewer if
 *   --deadline-ms passes first, then FIN; closes after the peer's EOF.
 * - echo: sends back everything, with backpressure (pauses reading while the echo is unsent); passes the
 *   peer's FIN on after the last echoed byte.
 *
 * stdout, one JSON object per line: {"event":"ready","port":P} once listening, then one
 * {"event":"conn",...} per connection when it ends (times are epoch ms, see data.ts `now`).
 */

import type { Socket } from "bun";
import { CHUNK, Digest, StreamGen, emit, errCode, now, parseFlags } from "../lib/data.ts";

const USAGE = "usage: target.ts --port P --mode sink|source|echo [--bytes N] [--seed S] [--hash 1|0] [--deadline-ms D]";
const f = parseFlags(process.argv.slice(2), ["--port", "--host", "--mode", "--bytes", "--seed", "--hash", "--deadline-ms"], USAGE);
const mode = f.get("--mode") ?? "sink";
if (!["sink", "source", "echo"].includes(mode)) {
  process.stderr.write(`bad --mode ${mode}\n${USAGE}\n`);
  process.exit(2);
}
const bytes = Number(f.get("--bytes") ?? 0);
const seed = Number(f.get("--seed") ?? 1);
const hash = (f.get("--hash") ?? "1") !== "0";
const deadlineMs = Number(f.get("--deadline-ms") ?? 0);

interface Conn {
  id: number;
  t0: number;
  tFirst: number;
  tLast: number;
  tEnd: number;
  bytesIn: number;
  bytesOut: number;
  hashIn: Digest;
  hashOut: Digest;
  gen: StreamGen | undefined;
  /** Unwritten rest of the current chunk (source) or echo backlog. */
  queue: Uint8Array[];
  sendDone: boolean;
  gotEof: boolean;
  paused: boolean;
  reported: boolean;
}

let seq = 0;

function report(c: Conn, error: string | null): void {
  if (c.reported) return;
  c.reported = true;
  emit({
    event: "conn",
    id: c.id,
    mode,
    t0: c.t0,
    tFirst: c.tFirst,
    tLast: c.tLast,
    tEnd: c.tEnd || now(),
    bytesIn: c.bytesIn,
    bytesOut: c.bytesOut,
    shaIn: c.hashIn.hex(),
    shaOut: c.hashOut.hex(),
    eof: c.gotEof,
    sendDone: c.sendDone,
    error,
  });
}

/** Writes queued bytes; true when the queue is empty. */
function flush(s: Socket<Conn>): boolean {
  const c = s.data;
  while (c.queue.length) {
    const head = c.queue[0]!;
    const n = s.write(head);
    if (n < 0) return false;
    c.bytesOut += n;
    if (n < head.byteLength) {
      c.queue[0] = head.subarray(n);
      return false;
    }
    c.queue.shift();
  }
  return true;
}

/** Source: generate and write until the kernel pushes back, the stream ends or the deadline passes. */
function pumpSource(s: Socket<Conn>): void {
  const c = s.data;
  if (c.sendDone) return;
  for (;;) {
    if (!flush(s)) return;
    const expired = deadlineMs > 0 && now() - c.t0 >= deadlineMs;
    const chunk = expired ? undefined : c.gen!.next();
    if (!chunk) {
      c.sendDone = true;
      s.shutdown();
      if (c.gotEof) s.end();
      return;
    }
    c.hashOut.update(chunk);
    // The generator reuses its buffer: whatever the kernel does not take now must be copied.
    const n = s.write(chunk);
    if (n < 0) return;
    c.bytesOut += n;
    if (n < chunk.byteLength) {
      c.queue.push(chunk.slice(n));
      return;
    }
  }
}

try {
  const l = Bun.listen<Conn>({
    hostname: f.get("--host") ?? "127.0.0.1",
    port: Number(f.get("--port") ?? 0),
    allowHalfOpen: true,
    socket: {
      open(s) {
        const c: Conn = {
          id: seq++,
          t0: now(),
          tFirst: 0,
          tLast: 0,
          tEnd: 0,
          bytesIn: 0,
          bytesOut: 0,
          hashIn: new Digest(hash && mode !== "echo"),
          hashOut: new Digest(hash && mode === "source"),
          gen: mode === "source" ? new StreamGen(seed + seq - 1, bytes) : undefined,
          queue: [],
          sendDone: false,
          gotEof: false,
          paused: false,
          reported: false,
        };
        s.data = c;
        if (mode === "source") pumpSource(s);
      },
      data(s, chunk) {
        const c = s.data;
        const t = now();
        if (c.bytesIn === 0) c.tFirst = t;
        c.tLast = t;
        c.bytesIn += chunk.byteLength;
        if (mode === "sink" || mode === "source") {
          c.hashIn.update(chunk);
          return;
        }
        // echo: the chunk is ours to keep (Bun never reuses it)
        c.queue.push(chunk);
        if (!flush(s) && !c.paused) {
          c.paused = true;
          s.pause();
        }
      },
      drain(s) {
        const c = s.data;
        if (mode === "source") return pumpSource(s);
        if (mode !== "echo" || !flush(s)) return;
        if (c.paused) {
          c.paused = false;
          s.resume();
        }
        if (c.gotEof && !c.sendDone) {
          c.sendDone = true;
          s.shutdown();
        }
      },
      end(s) {
        const c = s.data;
        c.gotEof = true;
        c.tEnd = now();
        if (mode === "sink") {
          report(c, null);
          s.end();
        } else if (mode === "source") {
          if (c.sendDone) s.end();
        } else if (c.queue.length === 0 && !c.sendDone) {
          c.sendDone = true;
          s.shutdown();
        }
      },
      close(s, err) {
        const c = s.data;
        if (!c) return;
        if (!c.tEnd) c.tEnd = now();
        const e = errCode(err);
        const clean = e === null && (mode === "sink" ? c.gotEof : c.sendDone);
        report(c, clean ? null : (e ?? "closed before EOF"));
      },
      error(s, err) {
        if (s.data) report(s.data, errCode(err) ?? "error");
      },
    },
  });
  emit({ event: "ready", port: l.port, pid: process.pid, mode, chunk: CHUNK });
  const stop = () => {
    l.stop(true);
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} catch (err) {
  process.stderr.write(`target: cannot listen: ${errCode(err)} ${(err as Error).message}\n`);
  process.exit(3);
}
