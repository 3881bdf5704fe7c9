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
import { cleanups, until } from "./helpers/util.ts";

const LOOP = "127.0.0.1";

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
async function rig(stripes: number, fault: Omit<FaultProxyOptions, "targetHost" | "targetPort">, session?: Partial<Omit<SessionOptions, "role">>): Promise<Rig> {
  const logs: string[] = [];
  const log = (l: string) => logs.push(l);
  const target = startTarget({ mode: "echo" });
  const server = startServer({ auth: KEYED, listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: target.port }, session, log });
  const proxy = await startFaultProxy({ ...fault, targetHost: LOOP, targetPort: server.port });
  const client = startClient({ auth: KEYED, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port: proxy.port }, stripes, session, log });
  const seen = new Set<StripedPipe>();
  const sampler = setInterval(() => {
    for (const s of server.sessions.values()) seen.add(s);
    for (const s of client.sessions) seen.add(s);
  }, 2);
  cleanup.push(async () => {
    clearInterval(sampler);
    client.stop();
    server.stop();
    await proxy.stop();
    target.stop();
  });
  return { target, server, client, fault: proxy, logs, sessions: () => [...seen] };
}

function expectIntact(r: { error?: string; cleanEnd: boolean; received: Uint8Array }, data: Uint8Array): void {
  expect(r.error).toBeUndefined();
  expect(r.cleanEnd).toBe(true);
  expect(r.received.byteLength).toBe(data.byteLength);
  expect(sha256(r.received)).toBe(sha256(data));
}

describe("lossless striping", () => {
  test("one of 8 stripes reset every 300 ms during 256 MiB each way: intact", async () => {
    const r0 = await rig(8, {});
    const data = randomData(256 * 1024 * 1024, 101);
    const run = appExchange(r0.client.port, data, { timeoutMs: 100_000 });
    await until(() => r0.fault.live().length >= 8, "8 stripes connected");
    let resets = 0;
    const stop = r0.fault.resetEvery(300, (live) => {
      resets++;
      return live[Math.floor(Math.random() * live.length)];
    });
    const r = await run;
    stop();
    expectIntact(r, data);
    expect(resets).toBeGreaterThanOrEqual(2);
    const deaths = r0.sessions().reduce((n, s) => n + s.metrics().stripeDeaths, 0);
    expect(deaths).toBeGreaterThanOrEqual(2);
    expect(r0.fault.connections().length).toBeGreaterThan(8); // re-dialled
  }, 110_000);

  test("all stripes reset at once and re-dialled within the grace period: intact", async () => {
    const r0 = await rig(4, {}, { graceMs: 5000 });
    const data = randomData(64 * 1024 * 1024, 102);
    const run = appExchange(r0.client.port, data, { timeoutMs: 60_000 });
    await until(() => r0.fault.live().some((c) => c.bytesUp > 4 * 1024 * 1024), "data flowed");
    for (const c of r0.fault.live()) c.reset();
    const r = await run;
    expectIntact(r, data);
    expect(r0.fault.connections().length).toBeGreaterThanOrEqual(8);
  });

  test("a blackholed stripe is bypassed within seconds and the transfer completes intact", async () => {
    const r0 = await rig(4, {}, { keepaliveMs: 300, deadMs: 1500 });
    const data = randomData(96 * 1024 * 1024, 103);
    // Track progress at the target to find the longest stall.
    const run = appExchange(r0.client.port, data, { timeoutMs: 60_000 });
    await until(() => r0.fault.live().some((c) => c.bytesUp > 4 * 1024 * 1024), "data flowed");
    const victim = r0.fault.live()[2]!;
    victim.blackhole(true);
    const holedAt = performance.now();
    const startBytes = r0.target.conns[0]!.receivedBytes;
    await until(() => r0.target.conns[0]!.receivedBytes > startBytes + 8 * 1024 * 1024, "progress after the blackhole", 5000);
    const resumedAfter = performance.now() - holedAt;
    const r = await run;
    expectIntact(r, data);
    expect(resumedAfter).toBeLessThan(5000);
    // What the silent stripe held was re-sent on the others.
    expect(r0.sessions().reduce((n, s) => n + s.metrics().resentBytes, 0)).toBeGreaterThan(0);
  });

  test("a silent stripe on an idle session is found by keepalive, dropped and re-dialled", async () => {
    const r0 = await rig(4, {}, { keepaliveMs: 200, deadMs: 1000 });
    const run = appExchange(r0.client.port, randomData(1000, 105), { timeoutMs: 8000, shutdown: false });
    // All four stripes attached at the client (JOINs attach once their reply has come back), not just connected.
    const attached = () => [...r0.client.sessions].some((s) => s.usableStripes === 4);
    await until(() => r0.fault.live().length === 4 && r0.target.conns.length === 1 && attached(), "the session opened on 4 stripes");
    r0.fault.live()[1]!.blackhole(true);
    await until(() => r0.fault.connections().length > 4, "a replacement stripe connected", 4000);
    const deaths = r0.sessions().reduce((n, s) => n + s.metrics().stripeDeaths, 0);
    expect(deaths).toBeGreaterThanOrEqual(1);
    void run;
  });

  test("1-byte slicer plus one stripe at 1/100 of the others' rate: intact, buffers within limits", async () => {
    const window = 256 * 1024;
    const r0 = await rig(4, { sliceBytes: 1, rate: [2e6, 2e6, 2e6, 2e4] }, { window });
    const data = randomData(384 * 1024, 104);
    let maxReorder = 0;
    let maxSend = 0;
    const sampler = setInterval(() => {
      for (const s of r0.sessions()) {
        const m = s.metrics();
        maxReorder = Math.max(maxReorder, m.peakReorderBytes);
        maxSend = Math.max(maxSend, m.peakSendBufferBytes);
      }
    }, 10);
    const r = await appExchange(r0.client.port, data, { timeoutMs: 90_000 });
    clearInterval(sampler);
    expectIntact(r, data);
    expect(maxReorder).toBeGreaterThan(0);
    expect(maxReorder).toBeLessThanOrEqual(window);
    // The store holds at most the window plus one chunk read from the app socket.
    expect(maxSend).toBeLessThanOrEqual(window + 512 * 1024);
    expect(r0.fault.queuedBytes()).toBeLessThan(4 * 1024 * 1024);
  }, 100_000);
});
