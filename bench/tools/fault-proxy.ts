/**
 * Command-line wrapper around the fault proxy (src/link/fault.ts has no CLI of its own).
 *
 *   bun bench/tools/fault-proxy.ts --listen HOST:PORT --target HOST:PORT [--rate MBPS[,MBPS...]]
 *                                  [--latency MS] [--slice BYTES] [--reset-after BYTES] [--reset-every MS]
 *
 * Rates in MB/s (10^6 bytes/s) per connection and direction, assigned in turn; 0 = uncapped.
 * Commands on stdin, one per line:
 *   reset-every MS   start resetting one random live connection carrying data every MS ms
 *   reset-stop       stop resetting
 *   reset            reset one random live connection now
 *   stats            print a stats line
 * stdout, one JSON object per line: {"event":"ready","port":P} once listening, {"event":"stats",...} after
 * `stats`, `reset-stop` and on exit. Exits on SIGTERM/SIGINT or when stdin closes.
 */

import { startFaultProxy, type FaultConn } from "../../src/link/fault.ts";
import { emit, parseFlags } from "../lib/data.ts";

const USAGE =
  "usage: fault-proxy.ts --listen HOST:PORT --target HOST:PORT [--rate MBPS[,MBPS...]] [--latency MS] [--slice BYTES] [--reset-after BYTES] [--reset-every MS]";
const f = parseFlags(
  process.argv.slice(2),
  ["--listen", "--target", "--rate", "--latency", "--slice", "--reset-after", "--reset-every"],
  USAGE,
);

function hostPort(flag: string, v: string | undefined): { host: string; port: number } {
  const i = v?.lastIndexOf(":") ?? -1;
  const port = Number(v?.slice(i + 1));
  if (!v || i <= 0 || !Number.isInteger(port)) {
    process.stderr.write(`${flag} wants HOST:PORT, got "${v ?? ""}"\n${USAGE}\n`);
    process.exit(2);
  }
  return { host: v.slice(0, i).replace(/^\[(.*)\]$/, "$1"), port };
}

const listen = hostPort("--listen", f.get("--listen") ?? "127.0.0.1:0");
const target = hostPort("--target", f.get("--target"));
const rates = (f.get("--rate") ?? "0").split(",").map((r) => Number(r) * 1e6);

let resets = 0;
const resetTimes: number[] = [];
/**
 * Resets hit stripes that carry a session's data: connections past their server's reply (bytes have come
 * back) with 64 KiB through them. What the faults scenario measures is what a dying stripe costs a
 * running transfer. A reset in a session's first round trip — before the server has answered its
 * opening stripe — ends that session with a reset at the app (the client does not re-open a session
 * whose opening stripe died; a known gap), and would make a run fail by the luck of the timer's phase.
 */
const CARRYING = 64 * 1024;
const countingPick = (all: FaultConn[]): FaultConn | undefined => {
  const live = all.filter((c) => c.bytesDown > 0 && c.bytesUp + c.bytesDown >= CARRYING);
  const c = live[Math.floor(Math.random() * live.length)];
  if (c) {
    resets++;
    resetTimes.push(Date.now());
  }
  return c;
};

const proxy = await startFaultProxy({
  listenHost: listen.host,
  listenPort: listen.port,
  targetHost: target.host,
  targetPort: target.port,
  rate: rates,
  latencyMs: Number(f.get("--latency") ?? 0),
  sliceBytes: Number(f.get("--slice") ?? 0),
  resetAfterBytes: f.has("--reset-after") ? Number(f.get("--reset-after")) : undefined,
}).catch((err: Error & { code?: string }) => {
  process.stderr.write(`fault-proxy: cannot listen: ${err.code ?? ""} ${err.message}\n`);
  process.exit(3);
});

let stopResets: (() => void) | undefined;
const startResets = (ms: number): void => {
  stopResets?.();
  stopResets = proxy.resetEvery(ms, countingPick);
};
if (f.has("--reset-every")) startResets(Number(f.get("--reset-every")));

const stats = (): void => {
  const conns = proxy.connections();
  emit({
    event: "stats",
    connections: conns.length,
    live: proxy.live().length,
    resets,
    resetTimes,
    bytesUp: conns.reduce((a, c) => a + c.bytesUp, 0),
    bytesDown: conns.reduce((a, c) => a + c.bytesDown, 0),
    queued: proxy.queuedBytes(),
  });
};

let exiting = false;
const exit = async (): Promise<void> => {
  if (exiting) return;
  exiting = true;
  stopResets?.();
  stats();
  await proxy.stop();
  process.exit(0);
};
process.on("SIGTERM", exit);
process.on("SIGINT", exit);

process.stderr.write(`fault-proxy listening on ${proxy.hostname}:${proxy.port} -> ${target.host}:${target.port}\n`);
emit({ event: "ready", port: proxy.port, pid: process.pid });

const decoder = new TextDecoder();
let buf = "";
for await (const chunk of Bun.stdin.stream()) {
  buf += decoder.decode(chunk, { stream: true });
  let i: number;
  while ((i = buf.indexOf("\n")) >= 0) {
    const [cmd, arg] = buf.slice(0, i).trim().split(/\s+/);
    buf = buf.slice(i + 1);
    switch (cmd) {
      case "reset-every":
        startResets(Number(arg));
        break;
      case "reset-stop":
        stopResets?.();
        stopResets = undefined;
        stats();
        break;
      case "reset":
        countingPick(proxy.live())?.reset();
        break;
      case "stats":
        stats();
        break;
      case "":
      case undefined:
        break;
      default:
        process.stderr.write(`fault-proxy: unknown command "${cmd}"\n`);
    }
  }
}
await exit();
