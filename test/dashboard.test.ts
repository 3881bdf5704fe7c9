/**
 * The live dashboard in a real browser (headless Chromium): the figures it shows follow the source
 * by themselves and equal /api/sessions; charts are drawn; sessions come and go; draining shows.
 *
 * DASHBOARD_SCREENSHOT=docs/dashboard.png bun test --timeout 60000 test/dashboard.test.ts  keeps a
 * screenshot (of the fake source: two sessions, four stripes, a minute of history).
 */

import { expect, test } from "bun:test";
import { startOpsServer, type ApiSessions } from "../src/ops/http.ts";
import type { HealthState } from "../src/ops/metrics.ts";
import { Page } from "./helpers/chromium.ts";
import { FakeStats } from "./helpers/fake-stats.ts";
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
  if (process.env.DASHBOARD_SCREENSHOT) {
    // A fuller picture for the README: two sessions of four stripes with a minute of history.
    const rich = new FakeStats(2, 4);
    const ops2 = startOpsServer({ listen: { host: "127.0.0.1", port: 0 }, source: rich, info: { version: "0.1.0", mode: "server", startedAt: Date.now() - 3_600_000 }, health: () => "accepting" });
    cleanup.push(() => ops2.stop());
    await using shot = await Page.open(`${ops2.url}?interval=100`);
    for (let i = 0; i < 60; i++) {
      rich.step();
      await Bun.sleep(110);
    }
    await Bun.write(process.env.DASHBOARD_SCREENSHOT, await shot.screenshot());
  }
});
