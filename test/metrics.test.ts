/** The Prometheus registry and the striper_* metric set, checked by the real promtool. */

import { describe, expect, test } from "bun:test";
import { Counter, Gauge, Histogram, OVERFLOW_LABEL, Registry, formatSample, striperMetrics } from "../src/ops/metrics.ts";
import { DURATION_BUCKETS, HistogramRecorder, RTT_BUCKETS, combineSources, type StatsSource } from "../src/ops/stats.ts";
import { FakeStats } from "./helpers/fake-stats.ts";
import { promtool } from "./helpers/tools.ts";

const INFO = { version: "0.1.0", mode: "server", startedAt: Date.UTC(2025, 0, 1) };

/** The value of the sample line `name{labels}` in an exposition. */
function sample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  if (line === undefined) throw new Error(`no sample ${series} in:\n${text}`);
  return Number(line.slice(series.length + 1));
}

describe("registry", () => {
  test("HELP and TYPE precede the samples; label values are escaped; special values spelled as Prometheus does", () => {
    const r = new Registry();
    const g = r.add(new Gauge("x_value_bytes", "A value\nwith a newline", ["kind"]));
    g.set(1.5, { kind: 'quote " backslash \\ newline \n' });
    expect(r.render()).toBe(
      '# HELP x_value_bytes A value\\nwith a newline\n# TYPE x_value_bytes gauge\nx_value_bytes{kind="quote \\" backslash \\\\ newline \\n"} 1.5\n',
    );
    expect([Infinity, -Infinity, NaN, 3].map(formatSample)).toEqual(["+Inf", "-Inf", "NaN", "3"]);
  });

  test("counters must end in _total and never go down; names and labels are checked", () => {
    expect(() => new Counter("x_bytes", "h")).toThrow("must end in _total");
    const c = new Counter("x_bytes_total", "h");
    c.inc(5);
    expect(() => c.inc(-1)).toThrow("cannot go down");
    expect(c.value()).toBe(5);
    expect(() => new Gauge("bad-name", "h")).toThrow("bad metric name");
    expect(() => new Gauge("ok", "h", ["le"])).toThrow("bad label name");
    expect(() => new Gauge("ok", "h", ["a"]).set(1, {})).toThrow("label a missing");
    const r = new Registry();
    r.add(new Gauge("dup", "h"));
    expect(() => r.add(new Gauge("dup", "h"))).toThrow("registered twice");
  });

  test("label sets are bounded: past the limit they add up in one 'other' series", () => {
    const c = new Counter("x_events_total", "h", ["reason"], 4);
    for (let i = 0; i < 10; i++) c.inc(i + 1, { reason: `r${i}` });
    expect(c.size).toBe(5);
    expect(c.value({ reason: "r3" })).toBe(4);
    expect(c.value({ reason: OVERFLOW_LABEL })).toBe(5 + 6 + 7 + 8 + 9 + 10);
  });

  test("histograms: cumulative buckets, +Inf equals the count, sum of observations", () => {
    const r = new Registry();
    const h = r.add(new Histogram("x_wait_seconds", "h", [0.1, 1]));
    expect(r.render()).toBe("\n"); // no observation, no series: nothing rendered
    for (const v of [0.05, 0.1, 0.5, 3, NaN]) h.observe(v);
    const text = r.render();
    expect(sample(text, 'x_wait_seconds_bucket{le="0.1"}')).toBe(2);
    expect(sample(text, 'x_wait_seconds_bucket{le="1"}')).toBe(3);
    expect(sample(text, 'x_wait_seconds_bucket{le="+Inf"}')).toBe(4);
    expect(sample(text, "x_wait_seconds_count")).toBe(4);
    expect(sample(text, "x_wait_seconds_sum")).toBeCloseTo(3.65, 10);
    expect(() => h.load(new HistogramRecorder([1, 2, 3]).snapshot())).toThrow("other bounds");
    expect(() => new HistogramRecorder([1, 1])).toThrow("must increase");
  });
});

describe("the striper metric set", () => {
  test("promtool finds nothing to complain about, during and after changes", async () => {
    const fake = new FakeStats(3, 4);
    const r = striperMetrics(fake, INFO, () => "accepting");
    for (let i = 0; i < 3; i++) {
      fake.step();
      const { code, output } = await promtool(r.render());
      expect(output).toBe("");
      expect(code).toBe(0);
    }
  });

  test("promtool does reject what breaks the conventions (so the check above can fail)", async () => {
    const bad = "# HELP x_sent_bytes h\n# TYPE x_sent_bytes counter\nx_sent_bytes 1\n# HELP x_rttMs h\n# TYPE x_rttMs gauge\nx_rttMs 1\n";
    const { output } = await promtool(bad);
    expect(output).toContain("counter metrics should have \"_total\" suffix");
    expect(output).toContain("camelCase");
  });

  test("every figure equals the source's: counters, reasons, gauges, budget, histograms", () => {
    const fake = new FakeStats(2, 3);
    for (let i = 0; i < 4; i++) fake.step();
    const text = striperMetrics(fake, INFO, () => "accepting").render();
    const c = fake.counters();
    expect(sample(text, "striper_sessions_open")).toBe(2);
    expect(sample(text, "striper_stripes_open")).toBe(6);
    expect(sample(text, "striper_sessions_total")).toBe(c.sessionsTotal!);
    expect(sample(text, 'striper_bytes_total{direction="up"}')).toBe(c.bytesUp!);
    expect(sample(text, 'striper_bytes_total{direction="down"}')).toBe(c.bytesDown!);
    expect(sample(text, "striper_resent_bytes_total")).toBe(c.resentBytes!);
    expect(sample(text, "striper_ack_bytes_total")).toBe(c.ackBytes!);
    expect(sample(text, "striper_redials_total")).toBe(c.redials!);
    expect(sample(text, 'striper_sessions_refused_total{reason="limit"}')).toBe(c.sessionsRefused!.limit!);
    expect(sample(text, 'striper_stripe_deaths_total{reason="reset"}')).toBe(c.stripeDeaths!.reset!);
    expect(sample(text, 'striper_handshake_rejections_total{reason="bad-auth"}')).toBe(c.handshakeRejections!["bad-auth"]!);
    expect(sample(text, "striper_buffer_used_bytes")).toBe(fake.budget().usedBytes);
    expect(sample(text, "striper_buffer_limit_bytes")).toBe(32 * 1024 * 1024);
    expect(sample(text, 'striper_stripe_rtt_seconds_bucket{le="+Inf"}')).toBe(c.stripeRttSeconds!.count);
    expect(sample(text, "striper_stripe_rtt_seconds_count")).toBe(4 * 2 * 3);
    expect(sample(text, "striper_session_duration_seconds_count")).toBe(c.sessionDurationSeconds!.count);
    expect(sample(text, `striper_build_info{version="0.1.0",bun="${Bun.version}",mode="server"}`)).toBe(1);
    expect(sample(text, "striper_process_start_time_seconds")).toBe(Date.UTC(2025, 0, 1) / 1000);
    expect(sample(text, "striper_process_resident_memory_bytes")).toBeGreaterThan(0);
    // No session id and no address is ever a label.
    for (const s of fake.sessions()) {
      expect(text).not.toContain(s.id);
      expect(text).not.toContain(s.remote);
    }
  });

  test("striper_draining follows the lifecycle", () => {
    let state: "accepting" | "draining" = "accepting";
    const r = striperMetrics(new FakeStats(), INFO, () => state);
    expect(sample(r.render(), "striper_draining")).toBe(0);
    state = "draining";
    expect(sample(r.render(), "striper_draining")).toBe(1);
  });

  test("what a source does not count is left out, not exported as zero; no source: process metrics only", async () => {
    const partial: StatsSource = { role: "client", sessions: () => [], counters: () => ({ redials: 7 }), budget: () => undefined };
    const text = striperMetrics(partial, INFO, () => "accepting").render();
    expect(sample(text, "striper_redials_total")).toBe(7);
    expect(sample(text, "striper_sessions_open")).toBe(0);
    for (const absent of ["striper_sessions_total", "striper_bytes_total", "striper_buffer_used_bytes", "striper_stripe_rtt_seconds"]) {
      expect(text).not.toContain(`${absent}`);
    }
    const none = striperMetrics(undefined, INFO, () => "accepting").render();
    expect(none).toContain("striper_build_info");
    expect(none).not.toContain("striper_sessions_open");
    expect((await promtool(none)).output).toBe("");
  });

  test("sources of several listeners add up", () => {
    const a = new FakeStats(1, 2);
    const b = new FakeStats(2, 2);
    a.step();
    b.step();
    b.step();
    const both = combineSources([a, b]);
    const text = striperMetrics(both, INFO, () => "accepting").render();
    expect(sample(text, "striper_sessions_open")).toBe(3);
    expect(sample(text, 'striper_bytes_total{direction="up"}')).toBe(a.counters().bytesUp! + b.counters().bytesUp!);
    expect(sample(text, 'striper_stripe_deaths_total{reason="reset"}')).toBe(1 + 2);
    expect(sample(text, "striper_stripe_rtt_seconds_count")).toBe(2 + 8);
    expect(sample(text, "striper_buffer_limit_bytes")).toBe(2 * 32 * 1024 * 1024);
    expect(DURATION_BUCKETS.length).toBeGreaterThan(0);
    expect(RTT_BUCKETS[0]).toBe(0.001);
  });
});
