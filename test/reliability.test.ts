/**
 * Lossless striping over real sockets with injected faults: stripes reset, all reset at once,
 * blackholed, sliced into single bytes, and one stripe 100× slower than the others.
 */

import { describe, expect, test } from "bun:test";
import { startClient, type StriperClient } from "../src/proxy/client.ts";
import { startServer, type StriperServer } from "../src/proxy/server.ts";
import { startFaultProxy, type FaultProxy, type FaultProxyOptions } from "../src/link/fault.ts";
import type { SessionOptions, StripedPipe } from "../src/pipe/striped.ts";
import { appExchange, randomData, sha256, startTarget, type Target } from "./helpers/net.ts";
import { KEYED } from "./helpers/keys.ts";
import { cleanups, prng, until } from "./helpers/util.ts";

const LOOP = "127.0.0.1";
/**
 * Watchdog of a transfer: only a hang should reach it (these took up to 30 s in the issue 7 soak on 2 busy
 * cores), and the limit of a test that contains one, above the suite's 120 s.
 */
const TRANSFER_WATCHDOG_MS = 300_000;
const TRANSFER_TEST_MS = 600_000;

const cleanup = cleanups();

interface Rig {
  target: Target;
  server: StriperServer;
  client: StriperClient;
  fault: FaultProxy;
  logs: string[];
  /** Every session either proxy has had, for metrics after the fact. */
  sessions: () => StripedPipe[];
}

/** target ← server ← fault proxy ← client. */
async function rig(
  stripes: number,
  fault: Omit<FaultProxyOptions, "targetHost" | "targetPort">,
  session?: Partial<Omit<SessionOptions, "role">>,
  target: Target = startTarget({ mode: "echo" }),
): Promise<Rig> {
  const logs: string[] = [];
  const log = (l: string) => logs.push(l);
  const server = startServer({ auth: KEYED, listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: target.port }, session, log });
  const proxy = await startFaultProxy({ ...fault, targetHost: LOOP, targetPort: server.port });
  const client = startClient({ auth: KEYED, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port: proxy.port }, stripes, session, log });
  const seen = new Set<StripedPipe>();
  const sample = () => {
    for (const s of server.sessions.values()) seen.add(s);
    for (const s of client.sessions) seen.add(s);
  };
  const sampler = setInterval(sample, 2);
  cleanup.push(async () => {
    clearInterval(sampler);
    client.stop();
    server.stop();
    await proxy.stop();
    target.stop();
  });
  return {
    target,
    server,
    client,
    fault: proxy,
    logs,
    sessions: () => {
      sample();
      return [...seen];
    },
  };
}

function expectIntact(r: { error?: string; cleanEnd: boolean; received: Uint8Array }, data: Uint8Array): void {
  expect(r.error).toBeUndefined();
  expect(r.cleanEnd).toBe(true);
  expect(r.received.byteLength).toBe(data.byteLength);
  expect(sha256(r.received)).toBe(sha256(data));
}

describe("lossless striping", () => {
  test("one of 8 stripes reset after every 32 MiB of 256 MiB each way: intact", async () => {
    // Resets are driven by progress, not by a 300 ms timer: how many happen no longer depends on how fast
    // the machine moves 256 MiB. The target keeps the session open (withholds its FIN) until the last reset,
    // so every reset hits a live session.
    let release!: () => void;
    const resetsDone = new Promise<void>((r) => (release = r));
    const r0 = await rig(8, {}, undefined, startTarget({ mode: "echo", holdEnd: resetsDone }));
    cleanup.push(() => release());
    const data = randomData(256 * 1024 * 1024, 101);
    const run = appExchange(r0.client.port, data, { timeoutMs: TRANSFER_WATCHDOG_MS });
    const rand = prng(101);
    const MiB = 1024 * 1024;
    let resets = 0;
    for (let k = 1; k <= 7; k++) {
      // A stripe that is attached and carrying data (not a re-dial still in its handshake).
      const carrying = () => r0.fault.live().filter((c) => c.bytesUp > 64 * 1024);
      const reached = () => (r0.target.conns[0]?.receivedBytes ?? 0) >= k * 32 * MiB && carrying().length > 0;
      // Watchdog only, far above a loaded machine's need.
      await until(reached, () => `the target received ${k * 32} MiB (has ${r0.target.conns[0]?.receivedBytes ?? 0} B)`, 120_000);
      const live = carrying();
      live[Math.floor(rand() * live.length)]!.reset();
      resets++;
    }
    release();
    const r = await run;
    expectIntact(r, data);
    expect(resets).toBe(7);
    // Each reset killed an attached stripe on both proxies' sessions.
    const deaths = r0.sessions().reduce((n, s) => n + s.metrics().stripeDeaths, 0);
    expect(deaths).toBeGreaterThanOrEqual(resets);
    expect(r0.fault.connections().length).toBeGreaterThan(8); // re-dialled
  }, TRANSFER_TEST_MS);

  test("all stripes reset at once and re-dialled within the grace period: intact", async () => {
    // Re-dials come after 25-75 ms of backoff; the grace period is set far above that (and above any
    // stall of a loaded machine) because the test is about surviving, not about how fast.
    const r0 = await rig(4, {}, { graceMs: 30_000 });
    const data = randomData(64 * 1024 * 1024, 102);
    const run = appExchange(r0.client.port, data, { timeoutMs: TRANSFER_WATCHDOG_MS });
    await until(() => r0.fault.live().some((c) => c.bytesUp > 4 * 1024 * 1024), "data flowed", 60_000);
    for (const c of r0.fault.live()) c.reset();
    const r = await run;
    expectIntact(r, data);
    expect(r0.fault.connections().length).toBeGreaterThanOrEqual(8);
  }, TRANSFER_TEST_MS);

  // How fast the transfer resumes is a figure for the benchmark (bench/e2e.ts faults); here: it resumes
  // while the stripe is still silent (it never comes back), and what the stripe held is re-sent on the
  // others.
  test("a blackholed stripe is bypassed and the transfer completes intact", async () => {
    const r0 = await rig(4, {}, { keepaliveMs: 300, deadMs: 1500 });
    const data = randomData(96 * 1024 * 1024, 103);
    const run = appExchange(r0.client.port, data, { timeoutMs: TRANSFER_WATCHDOG_MS });
    // Watchdogs only (60 s), far above what a loaded machine needs.
    await until(() => r0.fault.live().some((c) => c.bytesUp > 4 * 1024 * 1024), "data flowed", 60_000);
    const victim = r0.fault.live()[2]!;
    victim.blackhole(true);
    const startBytes = r0.target.conns[0]!.receivedBytes;
    await until(() => r0.target.conns[0]!.receivedBytes > startBytes + 8 * 1024 * 1024, "8 MiB of progress after the blackhole", 60_000);
    const r = await run;
    expectIntact(r, data);
    // The victim never came back: what it held was re-sent on the others, and everything after went around it.
    expect(r0.sessions().reduce((n, s) => n + s.metrics().resentBytes, 0)).toBeGreaterThan(0);
  }, TRANSFER_TEST_MS);

  test("a silent stripe on an idle session is found by keepalive, dropped and re-dialled", async () => {
    const r0 = await rig(4, {}, { keepaliveMs: 200, deadMs: 1000 });
    const run = appExchange(r0.client.port, randomData(1000, 105), { timeoutMs: TRANSFER_WATCHDOG_MS, shutdown: false });
    // Watchdogs only (60 s): keepalive finds the silence in about a second.
    await until(() => [...r0.client.sessions][0]?.usableStripes === 4 && r0.target.conns.length === 1, "the session opened", 60_000);
    const victim = r0.fault.live()[1]!;
    victim.blackhole(true);
    await until(() => !victim.open && r0.fault.connections().length > 4, "the silent stripe was dropped and replaced", 60_000);
    const deaths = r0.sessions().reduce((n, s) => n + s.metrics().stripeDeaths, 0);
    expect(deaths).toBeGreaterThanOrEqual(1);
    expect(r0.logs.some((l) => l.includes(" end "))).toBe(false); // the session lives on
    void run;
  });

  // One and a half windows of data (as before), so flow control and the reorder buffer are exercised, at
  // the smallest window the session options allow. It was 384 KiB over a 256 KiB window: every byte is its
  // own write and read, the slicer moves a few KB/s per connection when the CPU is busy, each stripe queued
  // up to a window behind it, round trips grew to tens of seconds, and re-sends (1.8 MiB for 384 KiB) and
  // dead-stripe re-dials fed more bytes into the slicer: 14-87 s per run against a 90 s watchdog (issue 7).
  // Now about 1 s idle, 4-11 s with two extra busy loops on the 2 cores.
  test("1-byte slicer plus one stripe at 1/100 of the others' rate: intact, buffers within limits", async () => {
    const window = 64 * 1024;
    const r0 = await rig(4, { sliceBytes: 1, rate: [2e6, 2e6, 2e6, 2e4] }, { window });
    const data = randomData(window + window / 2, 104);
    let maxReorder = 0;
    let maxSend = 0;
    const sampler = setInterval(() => {
      for (const s of r0.sessions()) {
        const m = s.metrics();
        maxReorder = Math.max(maxReorder, m.peakReorderBytes);
        maxSend = Math.max(maxSend, m.peakSendBufferBytes);
      }
    }, 10);
    const r = await appExchange(r0.client.port, data, { timeoutMs: TRANSFER_WATCHDOG_MS });
    clearInterval(sampler);
    expectIntact(r, data);
    expect(maxReorder).toBeGreaterThan(0);
    expect(maxReorder).toBeLessThanOrEqual(window);
    // The store holds at most the window plus one chunk read from the app socket.
    expect(maxSend).toBeLessThanOrEqual(window + 512 * 1024);
    expect(r0.fault.queuedBytes()).toBeLessThan(4 * 1024 * 1024);
  }, TRANSFER_TEST_MS);
});
