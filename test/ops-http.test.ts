/** The operations endpoint over real HTTP on loopback, fed by a fake StatsSource. */

import { describe, expect, test } from "bun:test";
import { MAX_API_SESSIONS, startOpsServer, type ApiSessions } from "../src/ops/http.ts";
import type { HealthState } from "../src/ops/metrics.ts";
import type { StatsSource } from "../src/ops/stats.ts";
import { FakeStats } from "./helpers/fake-stats.ts";
import { promtool } from "./helpers/tools.ts";
import { cleanups } from "./helpers/util.ts";

const cleanup = cleanups();
const INFO = { version: "0.1.0", mode: "server", startedAt: Date.now() - 5000 };

function serve(source: StatsSource | undefined, health: () => HealthState = () => "accepting") {
  const ops = startOpsServer({ listen: { host: "127.0.0.1", port: 0 }, source, info: INFO, health });
  cleanup.push(() => ops.stop());
  return ops;
}

describe("operations endpoint", () => {
  test("/metrics: the exposition content type, promtool-clean, values moving with the source", async () => {
    const fake = new FakeStats();
    const ops = serve(fake);
    fake.step();
    const r1 = await fetch(`${ops.url}metrics`);
    expect(r1.status).toBe(200);
    expect(r1.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const t1 = await r1.text();
    expect((await promtool(t1)).output).toBe("");
    fake.step();
    const t2 = await (await fetch(`${ops.url}metrics`)).text();
    const up = (t: string) => Number(/^striper_bytes_total\{direction="up"\} (\d+)$/m.exec(t)![1]);
    expect(up(t1)).toBe(fake.counters().bytesUp! - (up(t2) - up(t1)));
    expect(up(t2)).toBe(fake.counters().bytesUp!);
  });

  test("/healthz: 200 while accepting, 503 while draining or stopped", async () => {
    let state: HealthState = "accepting";
    const ops = serve(new FakeStats(), () => state);
    const r1 = await fetch(`${ops.url}healthz`);
    expect([r1.status, await r1.text()]).toEqual([200, "accepting\n"]);
    state = "draining";
    const r2 = await fetch(`${ops.url}healthz`);
    expect([r2.status, await r2.text()]).toEqual([503, "draining\n"]);
    state = "stopped";
    expect((await fetch(`${ops.url}healthz`)).status).toBe(503);
  });

  test("/healthz answers an HTTP/1.0 request without Host (a load balancer's plain health check)", async () => {
    const ops = serve(new FakeStats());
    const answer = await new Promise<string>((resolve, reject) => {
      let got = "";
      void Bun.connect({
        hostname: "127.0.0.1",
        port: ops.port,
        socket: {
          open: (s) => void s.write("GET /healthz HTTP/1.0\r\n\r\n"),
          data: (_s, d) => void (got += d.toString()),
          close: () => resolve(got),
          connectError: (_s, e) => reject(e),
        },
      });
    });
    expect(answer).toMatch(/^HTTP\/1\.[01] 200 /);
    expect(answer).toContain("accepting");
  });

  test("/api/sessions: every live session and stripe as the source reports it, with totals", async () => {
    const fake = new FakeStats(2, 3);
    fake.step();
    fake.step();
    const ops = serve(fake);
    const body = (await (await fetch(`${ops.url}api/sessions`)).json()) as ApiSessions;
    expect(body).toMatchObject({ version: "0.1.0", mode: "server", state: "accepting", statsAvailable: true, sessionCount: 2, truncated: false });
    expect(body.uptimeSeconds).toBeGreaterThanOrEqual(5);
    const want = fake.sessions();
    expect(body.sessions.map((s) => s.id)).toEqual(want.map((s) => s.id));
    body.sessions.forEach((s, i) => {
      expect(s.stripes).toEqual(want[i]!.stripes);
      expect(s.bytesUp).toBe(want[i]!.bytesUp);
      expect(s.usableStripes).toBe(3);
      expect(s.rateBytesPerSecond).toBe(want[i]!.stripes.reduce((t, x) => t + x.rateBytesPerSecond, 0));
    });
    const c = fake.counters();
    expect(body.totals).toMatchObject({ sessionsOpen: 2, stripesOpen: 6, sessionsTotal: c.sessionsTotal, bytesUp: c.bytesUp, redials: c.redials });
    expect(body.totals.stripeDeaths).toEqual(c.stripeDeaths!);
    expect(body.budget).toEqual(fake.budget());
    expect(body.memory.rssBytes).toBeGreaterThan(0);
    expect("stripeRttSeconds" in body.totals).toBe(false);
  });

  test("/api/sessions without a source: process figures only, and it says so", async () => {
    const ops = serve(undefined);
    const body = (await (await fetch(`${ops.url}api/sessions`)).json()) as ApiSessions;
    expect(body).toMatchObject({ statsAvailable: false, sessionCount: 0, sessions: [], budget: null, totals: { sessionsOpen: 0, stripesOpen: 0 } });
    expect(Object.keys(body.totals).sort()).toEqual(["sessionsOpen", "stripesOpen"]);
  });

  test("/api/sessions lists at most MAX_API_SESSIONS, the busiest, and says it left some out", async () => {
    const many = new FakeStats(MAX_API_SESSIONS + 44, 1);
    many.step();
    const ops = serve(many);
    const body = (await (await fetch(`${ops.url}api/sessions`)).json()) as ApiSessions;
    expect(body.sessionCount).toBe(MAX_API_SESSIONS + 44);
    expect(body.sessions.length).toBe(MAX_API_SESSIONS);
    expect(body.truncated).toBe(true);
    // Fake rates grow with the session's index: the 44 slowest are the ones left out.
    const slowest = Math.min(...body.sessions.map((s) => s.rateBytesPerSecond));
    const leftOut = many.sessions().filter((s) => !body.sessions.some((x) => x.id === s.id));
    expect(leftOut.length).toBe(44);
    for (const s of leftOut) expect(s.stripes[0]!.rateBytesPerSecond).toBeLessThanOrEqual(slowest);
  });

  test("/ serves the dashboard with nothing loaded from elsewhere; unknown paths 404, other methods 405", async () => {
    const ops = serve(new FakeStats());
    const page = await fetch(ops.url);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const html = await page.text();
    expect(html).toContain("api/sessions");
    expect(html).not.toMatch(/\b(src|href)\s*=\s*["']?(https?:)?\/\//i);
    expect(html).not.toMatch(/@import|url\(/);
    expect((await fetch(`${ops.url}nope`)).status).toBe(404);
    expect((await fetch(`${ops.url}metrics`, { method: "POST" })).status).toBe(405);
  });

  test("a source that throws gives a 500 and the endpoint keeps serving", async () => {
    let broken = true;
    const fake = new FakeStats();
    const flaky: StatsSource = {
      role: "server",
      sessions: () => {
        if (broken) throw new Error("source exploded");
        return fake.sessions();
      },
      counters: () => fake.counters(),
      budget: () => fake.budget(),
    };
    const ops = serve(flaky);
    const r = await fetch(`${ops.url}api/sessions`);
    expect(r.status).toBe(500);
    expect(await r.text()).toContain("source exploded");
    broken = false;
    expect((await fetch(`${ops.url}metrics`)).status).toBe(200);
  });

  test("an address in use is an error naming the code (main turns it into one fatal line)", () => {
    const ops = serve(undefined);
    let caught: unknown;
    try {
      startOpsServer({ listen: { host: "127.0.0.1", port: ops.port }, source: undefined, info: INFO, health: () => "accepting" });
    } catch (err) {
      caught = err;
    }
    expect((caught as { code?: string }).code).toBe("EADDRINUSE");
  });
});
