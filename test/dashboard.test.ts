/**
 * The live dashboard in a real browser (headless Chromium): the figures it shows follow the source
 * by themselves and equal /api/sessions; charts are drawn; sessions come and go; draining shows. First
 * over a fake source (every figure moves at each step), then over a real client proxy during a striped
 * transfer through a capped path.
 *
 * DASHBOARD_SCREENSHOT=docs/dashboard.png bun test --timeout 120000 test/dashboard.test.ts  keeps a
 * screenshot taken during a real transfer (two sessions of four capped stripes, 40 s of history).
 */

import { expect, test } from "bun:test";
import { startFaultProxy } from "../src/link/fault.ts";
import { startOpsServer, type ApiSessions } from "../src/ops/http.ts";
import type { HealthState } from "../src/ops/metrics.ts";
import { startClient } from "../src/proxy/client.ts";
import { startServer } from "../src/proxy/server.ts";
import { Page } from "./helpers/chromium.ts";
import { FakeStats } from "./helpers/fake-stats.ts";
import { KEYED } from "./helpers/keys.ts";
import { converse, randomData, sha256, startTarget, type Conversation } from "./helpers/net.ts";
import { cleanups } from "./helpers/util.ts";

const cleanup = cleanups();

/** Every figure on the page: key → raw value and shown text; plus the count of polls. */
interface PageFigures {
  polls: number;
  state: string;
  sessions: string[];
  figures: Record<string, { v: string; text: string }>;
}

const READ = `(() => document.getElementById("state") === null ? { polls: 0, state: "", sessions: [], figures: {} } : ({
  polls: Number(document.body.dataset.polls),
  state: document.getElementById("state").textContent,
  sessions: [...document.querySelectorAll("section.session")].map((e) => e.id.slice(5)),
  figures: Object.fromEntries([...document.querySelectorAll("[data-k]")].map((e) => [e.dataset.k, { v: e.dataset.v, text: e.textContent }])),
}))()`;

/** Resolves once `cond` holds (polled); fails with what did not happen. */
async function eventually<T>(read: () => Promise<T>, cond: (x: T) => boolean, what: string, ms = 20_000): Promise<T> {
  const end = performance.now() + ms;
  let last: T | undefined;
  while (performance.now() < end) {
    last = await read();
    if (cond(last)) return last;
    await Bun.sleep(50);
  }
  throw new Error(`within ${ms} ms, the dashboard did not ${what}; last seen: ${JSON.stringify(last).slice(0, 2000)}`);
}

/** Every figure the page shows for `api` equals it. Returns the per-stripe rate and RTT shown. */
function expectAgreement(p: PageFigures, api: ApiSessions): Map<string, number> {
  const f = (k: string): number => {
    const x = p.figures[k];
    if (!x) throw new Error(`the page shows no figure ${k}`);
    return Number(x.v);
  };
  const t = api.totals;
  for (const k of ["sessionsOpen", "stripesOpen", "sessionsTotal", "bytesUp", "bytesDown", "resentBytes", "ackBytes", "redials"] as const) {
    expect(f(`t:${k}`)).toBe(t[k] as number);
  }
  const sum = (m: Readonly<Record<string, number>> | undefined) => Object.values(m ?? {}).reduce((a, b) => a + b, 0);
  expect(f("t:stripeDeaths")).toBe(sum(t.stripeDeaths));
  expect(f("t:sessionsRefused")).toBe(sum(t.sessionsRefused));
  expect(f("t:handshakeRejections")).toBe(sum(t.handshakeRejections));
  for (const [r, n] of Object.entries(t.handshakeRejections ?? {})) expect(f(`t:handshakeRejections:${r}`)).toBe(n);
  expect(f("t:budget")).toBe(api.budget!.usedBytes);
  expect(p.sessions).toEqual(api.sessions.map((s) => s.id));
  const shown = new Map<string, number>();
  for (const s of api.sessions) {
    expect(f(`s:${s.id}:bytesUp`)).toBe(s.bytesUp);
    expect(f(`s:${s.id}:bytesDown`)).toBe(s.bytesDown);
    expect(f(`s:${s.id}:usableStripes`)).toBe(s.usableStripes);
    for (const st of s.stripes) {
      const k = `s:${s.id}:${st.index}`;
      expect(f(`${k}:rate`)).toBe(st.rateBytesPerSecond);
      expect(f(`${k}:rtt`)).toBe(st.rttSeconds);
      expect(f(`${k}:inflight`)).toBe(st.inflightBytes);
      expect(f(`${k}:stalls`)).toBe(st.stalls);
      expect(f(`${k}:resent`)).toBe(st.resentBytes);
      expect(f(`${k}:sent`)).toBe(st.sentBytes);
      expect(f(`${k}:received`)).toBe(st.receivedBytes);
      // The text shown is the same number, formatted.
      expect(p.figures[`${k}:rate`]!.text).toBe(`${(st.rateBytesPerSecond / 1e6).toFixed(2)} MB/s`);
      expect(p.figures[`${k}:rtt`]!.text).toBe(`${(st.rttSeconds * 1000).toFixed(1)} ms`);
      shown.set(`${k}:rate`, st.rateBytesPerSecond);
      shown.set(`${k}:rtt`, st.rttSeconds);
    }
  }
  return shown;
}

test("the dashboard follows the source by itself and agrees with /api/sessions", async () => {
  const fake = new FakeStats(2, 3);
  fake.step();
  let health: HealthState = "accepting";
  const ops = startOpsServer({ listen: { host: "127.0.0.1", port: 0 }, source: fake, info: { version: "0.1.0", mode: "server", startedAt: Date.now() }, health: () => health });
  cleanup.push(() => ops.stop());
  await using page = await Page.open(`${ops.url}?interval=200`);
  const read = () => page.evaluate<PageFigures>(READ);
  const api = async () => (await (await fetch(`${ops.url}api/sessions`)).json()) as ApiSessions;

  let previous: Map<string, number> | undefined;
  for (let round = 0; round < 3; round++) {
    if (round > 0) fake.step();
    const want = await api();
    const p = await eventually(read, (x) => x.figures["t:bytesUp"]?.v === String(want.totals.bytesUp), `show bytesUp ${want.totals.bytesUp} (round ${round})`);
    const shown = expectAgreement(p, want);
    if (previous) {
      // Every stripe's rate and RTT moved, and the page moved with them without being reloaded.
      for (const [k, v] of shown) expect(v).not.toBe(previous.get(k)!);
    }
    previous = shown;
  }

  // The charts have been drawn: each stripe's canvas has painted pixels.
  const painted = await page.evaluate<number[]>(`[...document.querySelectorAll("tr[data-stripe] canvas")].map((c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
  })`);
  expect(painted.length).toBe(6);
  for (const n of painted) expect(n).toBeGreaterThan(0);

  // A session that ends disappears; draining shows in the header.
  fake.endSession();
  health = "draining";
  const after = await eventually(read, (x) => x.sessions.length === 1 && x.state === "draining", "drop the ended session and show draining");
  expect(after.figures["t:sessionsOpen"]!.v).toBe("1");

  const png = await page.screenshot();
  expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
});

/**
 * target ← server ← fault proxy (each stripe capped at `rate` B/s) ← client, in this process, and the
 * operations endpoint over the client's statistics. No keepalive pings (60 s): an idle session's figures
 * then stay still, so the page and a separate /api/sessions can be compared exactly.
 */
async function realPair(rate: number | number[], stripes = 4) {
  const target = startTarget({ mode: "echo" });
  cleanup.push(() => target.stop());
  const session = { keepaliveMs: 60_000, deadMs: 120_000 };
  const server = startServer({ listen: { host: "127.0.0.1", port: 0 }, target: { host: "127.0.0.1", port: target.port }, auth: KEYED, session, log: () => {} });
  cleanup.push(() => server.stop());
  const fault = await startFaultProxy({ targetHost: "127.0.0.1", targetPort: server.port, rate });
  cleanup.push(() => fault.stop());
  const client = startClient({ listen: { host: "127.0.0.1", port: 0 }, peer: { host: "127.0.0.1", port: fault.port }, auth: KEYED, stripes, session, log: () => {} });
  cleanup.push(() => client.stop());
  const ops = startOpsServer({ listen: { host: "127.0.0.1", port: 0 }, source: client.stats, info: { version: "0.1.0", mode: "client", startedAt: Date.now() }, health: () => "accepting" });
  cleanup.push(() => ops.stop());
  return { client, ops };
}

/** /api/sessions once two reads 300 ms apart agree on every byte count (nothing moving). */
async function settled(url: string): Promise<ApiSessions> {
  const key = (a: ApiSessions) => JSON.stringify([a.totals, a.budget, a.sessions.map((s) => [s.bytesUp, s.bytesDown, s.stripes])]);
  let prev = (await (await fetch(`${url}api/sessions`)).json()) as ApiSessions;
  for (let i = 0; i < 200; i++) {
    await Bun.sleep(300);
    const next = (await (await fetch(`${url}api/sessions`)).json()) as ApiSessions;
    if (key(next) === key(prev)) return next;
    prev = next;
  }
  throw new Error("the session's figures never settled");
}

test("during a real striped transfer the dashboard's numbers change by themselves and agree with /api/sessions", async () => {
  // 4 stripes × 2 MB/s: each 4 MiB round takes about half a second each way: several page polls.
  const { client, ops } = await realPair(2e6);
  await using page = await Page.open(`${ops.url}?interval=100`);
  const read = () => page.evaluate<PageFigures>(READ);
  const conv = await converse(client.port);
  const sent: Uint8Array[] = [];
  let previous: PageFigures | undefined;
  for (let round = 1; round <= 3; round++) {
    const chunk = randomData(4 * 1024 * 1024, round);
    sent.push(chunk);
    const total = sent.reduce((t, c) => t + c.byteLength, 0);
    const done = conv.received(total);
    conv.send(chunk);
    // While the bytes flow, the page shows what came back so far growing, without being reloaded.
    // (Bytes down on the client count what it delivered to the app; bytes up, what it took from it,
    // which the window lets in at once.)
    const seen = new Set<string>();
    let finished = false;
    void done.then(() => (finished = true));
    while (!finished) {
      const v = (await read()).figures["t:bytesDown"]?.v;
      if (v !== undefined && Number(v) > total - chunk.byteLength && Number(v) < total) seen.add(v);
      await Bun.sleep(30);
    }
    expect(seen.size).toBeGreaterThanOrEqual(2);
    // Once the round is through and the session idle, every figure shown equals /api/sessions.
    const want = await settled(ops.url);
    expect(want.totals.bytesUp).toBe(total);
    expect(want.totals.bytesDown).toBe(total);
    const p = await eventually(read, (x) => x.figures["t:bytesUp"]?.v === String(total) && x.figures["t:ackBytes"]?.v === String(want.totals.ackBytes), `show bytesUp ${total} (round ${round})`);
    expectAgreement(p, want);
    expect(p.sessions.length).toBe(1);
    const id = p.sessions[0]!;
    expect(Number(p.figures[`s:${id}:usableStripes`]!.v)).toBe(4);
    // Some stripe measured a rate and an RTT; the byte counts moved since the last round.
    const stripes = want.sessions[0]!.stripes;
    expect(stripes.some((x) => x.rateBytesPerSecond > 0 && x.rttSeconds > 0)).toBe(true);
    if (previous) {
      expect(Number(p.figures["t:bytesDown"]!.v)).toBeGreaterThan(Number(previous.figures["t:bytesDown"]!.v));
      expect(stripes.some((x) => p.figures[`s:${id}:${x.index}:sent`]!.v !== previous!.figures[`s:${id}:${x.index}:sent`]?.v)).toBe(true);
    }
    previous = p;
  }
  const r = await conv.end();
  expect(r.cleanEnd).toBe(true);
  expect(sha256(r.received)).toBe(sha256(Buffer.concat(sent)));
  await eventually(read, (x) => x.sessions.length === 0 && x.figures["t:sessionsOpen"]?.v === "0", "drop the ended session");

  if (process.env.DASHBOARD_SCREENSHOT) {
    // For the README: two sessions over four uneven capped stripes each, 40 s of a real transfer.
    const rich = await realPair([4e6, 4e6, 3e6, 1e6]);
    await using shot = await Page.open(`${rich.ops.url}?interval=500`);
    const convs = await Promise.all([converse(rich.client.port, { keep: false }), converse(rich.client.port, { keep: false })]);
    const until = performance.now() + 40_000;
    const out = convs.map(() => 0);
    const block = randomData(1024 * 1024, 9);
    while (performance.now() < until) {
      // Keep about 8 MiB in flight on each session.
      convs.forEach((c, i) => {
        while (out[i]! - c.receivedBytes < 8 * 1024 * 1024) {
          c.send(block);
          out[i]! += block.byteLength;
        }
      });
      await Bun.sleep(100);
    }
    await Bun.write(process.env.DASHBOARD_SCREENSHOT, await shot.screenshot());
  }
});
