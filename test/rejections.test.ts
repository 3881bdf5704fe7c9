/**
 * The server's record of silent refusals (src/proxy/rejections.ts) on an injected clock: counts per
 * reason, the first of a reason logged at once, then one summary line per reason and interval naming the
 * busiest sources, bounded memory, and nothing more for a reason that went quiet. And the same kind of
 * aggregation for stripes dropped by a damaged record (src/proxy/damage.ts).
 */

import { describe, expect, test } from "bun:test";
import { DamageLog } from "../src/proxy/damage.ts";
import { MAX_SOURCES, Rejections } from "../src/proxy/rejections.ts";
import { RecordError } from "../src/secure/errors.ts";
import { SILENT_REASONS } from "../src/secure/messages.ts";

function setup() {
  let now = 1000;
  const lines: string[] = [];
  const r = new Rejections({ log: (l) => lines.push(l), intervalMs: 10_000, now: () => now });
  return { r, lines, advance: (ms: number) => (now += ms) };
}

describe("Rejections", () => {
  test("counts every refusal per reason and starts at zero for every reason", () => {
    const { r } = setup();
    expect(Object.keys(r.counts)).toEqual([...SILENT_REASONS]);
    expect(Object.values(r.counts).every((n) => n === 0)).toBe(true);
    r.note("bad-auth", "192.0.2.1");
    r.note("bad-auth", "192.0.2.2");
    r.note("replay", "192.0.2.1");
    expect(r.counts["bad-auth"]).toBe(2);
    expect(r.counts.replay).toBe(1);
    expect(r.total).toBe(3);
    r.close();
  });

  test("a flood of one reason is one line at once and one summary per interval, naming the top sources", () => {
    const { r, lines, advance } = setup();
    for (let i = 0; i < 1000; i++) r.note("bad-auth", i % 10 === 0 ? "198.51.100.7" : `203.0.113.${i % 5}`);
    expect(lines).toEqual(["stripe handshake from 198.51.100.7 refused silently: bad-auth (repeats are summarised every 10 s)"]);
    advance(9_999);
    r.flush();
    expect(lines.length).toBe(1); // the interval is not over
    advance(1);
    r.flush();
    expect(lines.length).toBe(2);
    // 100 from 198.51.100.7, 100 from 203.0.113.0 and 200 from each of 203.0.113.1-4.
    expect(lines[1]).toMatch(/^1000 stripe handshakes refused silently \(bad-auth\) in the last 10 s from 203\.0\.113\.[1-4] ×200, 203\.0\.113\.[1-4] ×200, 203\.0\.113\.[1-4] ×200 and 3 more sources$/);
    expect(r.counts["bad-auth"]).toBe(1000);
    r.close();
  });

  test("each reason has its own lines; a reason that went quiet is forgotten and its next refusal is logged at once", () => {
    const { r, lines, advance } = setup();
    r.note("bad-auth", "a");
    r.note("timeout", "b");
    expect(lines.length).toBe(2);
    advance(10_000);
    r.flush(); // nothing beyond the first of each: no summaries
    expect(lines.length).toBe(2);
    r.note("bad-auth", "c");
    expect(lines[2]).toBe("stripe handshake from c refused silently: bad-auth (repeats are summarised every 10 s)");
    r.close();
  });

  test("sources beyond the bound are counted together, not remembered", () => {
    const { r, lines, advance } = setup();
    for (let i = 0; i < MAX_SOURCES + 50; i++) r.note("truncated", `10.0.${i >> 8}.${i & 255}`);
    advance(10_000);
    r.flush();
    expect(lines[1]).toContain(`(+50 from sources beyond the first ${MAX_SOURCES})`);
    expect(lines[1]).toStartWith(`${MAX_SOURCES + 50} stripe handshakes refused silently (truncated)`);
    r.close();
  });

  test("close() logs what is pending", () => {
    const { r, lines, advance } = setup();
    r.note("replay", "x");
    r.note("replay", "x");
    advance(3000);
    r.close();
    expect(lines).toEqual([
      "stripe handshake from x refused silently: replay (repeats are summarised every 10 s)",
      "2 stripe handshakes refused silently (replay) in the last 3 s from x ×2",
    ]);
  });
});

describe("DamageLog", () => {
  test("dropped stripes: one line at once per code and source, then one summary per interval, whatever the flood", () => {
    let now = 0;
    const lines: string[] = [];
    const d = new DamageLog((l) => lines.push(l), { intervalMs: 10_000, now: () => now });
    const err = new RecordError("E_RECORD_AUTH", "record 3: body did not authenticate");
    for (let i = 0; i < 500; i++) d.note(`s${i % 7}`, i % 16, err, "203.0.113.7:4000");
    d.note("s8", 2, err, "[2001:db8::1]:443");
    d.note("s9", 1, new RecordError("E_RECORD_TOO_LARGE", "record 0: 9999999 bytes exceeds the maximum of 1048576"), "203.0.113.7:4001");
    expect(lines).toEqual([
      "session s0 stripe 0 dropped: E_RECORD_AUTH record 3: body did not authenticate (remote 203.0.113.7:4000; repeats are summarised every 10 s)",
      "session s8 stripe 2 dropped: E_RECORD_AUTH record 3: body did not authenticate (remote [2001:db8::1]:443; repeats are summarised every 10 s)",
      "session s9 stripe 1 dropped: E_RECORD_TOO_LARGE record 0: 9999999 bytes exceeds the maximum of 1048576 (remote 203.0.113.7:4001; repeats are summarised every 10 s)",
    ]);
    now = 10_000;
    d.flush();
    expect(lines.slice(3)).toEqual(["500 stripes from 203.0.113.7 dropped in the last 10 s: E_RECORD_AUTH (a record did not authenticate); their data was re-sent"]);
    d.close();
  });

  test("refused stripes: the first of a code and source at once, the rest summarised; a source's text is escaped", () => {
    let now = 0;
    const lines: string[] = [];
    const d = new DamageLog((l) => lines.push(l), { intervalMs: 10_000, now: () => now });
    for (let i = 0; i < 300; i++) d.refused(`203.0.113.7:${1000 + i}`, "E_SESSION_LIMIT", "session limit 1024");
    d.refused("evil\nhost:1", "E_SOURCE_LIMIT", "limit of 256 sessions per source address");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe("stripe from 203.0.113.7:1000 refused: E_SESSION_LIMIT session limit 1024 (repeats are summarised every 10 s)");
    expect(lines[1]).not.toContain("\n");
    now = 10_000;
    d.flush();
    expect(lines.slice(2)).toEqual(["300 stripes from 203.0.113.7 refused in the last 10 s: E_SESSION_LIMIT"]);
    d.close();
  });
});
