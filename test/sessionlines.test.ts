/** SessionLines: session start/end lines with a budget per source, then one summary per interval. Pure; clock passed in. */

import { describe, expect, test } from "bun:test";
import { SessionLines } from "../src/proxy/sessionlines.ts";

const ev = (msg: string) => ({ event: "session.start", msg });

describe("SessionLines", () => {
  test("a source writes its budget of lines, then is summarised once per interval; other sources are unaffected", () => {
    let now = 0;
    const lines: string[] = [];
    const s = new SessionLines((l) => lines.push(l), { intervalMs: 10_000, perSource: 4, now: () => now });
    for (let i = 0; i < 10; i++) {
      s.start("203.0.113.7", ev(`start ${i}`));
      s.end("203.0.113.7", i < 8 ? "E_ABANDONED" : "ok", ev(`end ${i}`));
    }
    s.start("198.51.100.1", ev("other start"));
    expect(lines).toEqual(["start 0", "end 0", "start 1", "end 1", "other start"]);
    now = 9_999;
    s.flush();
    expect(lines).toHaveLength(5);
    now = 10_000;
    s.flush();
    expect(lines.slice(5)).toEqual(["16 session lines from 203.0.113.7 not logged in the last 10 s: 8 started, 8 ended (E_ABANDONED ×6, ok ×2)"]);
    // A new interval: the budget is back.
    s.start("203.0.113.7", ev("start again"));
    expect(lines.at(-1)).toBe("start again");
    s.close();
  });

  test("beyond maxSources, further sources share one budget and one summary; close() writes what is pending", () => {
    const lines: string[] = [];
    const s = new SessionLines((l) => lines.push(l), { intervalMs: 10_000, perSource: 1, maxSources: 2, now: () => 0 });
    for (const src of ["a", "b", "c", "d", "e"]) s.start(src, ev(`start ${src}`));
    expect(lines).toEqual(["start a", "start b", "start c"]);
    s.close();
    expect(lines.slice(3)).toEqual(["2 session lines from other sources not logged in the last 1 s: 2 started, 0 ended"]);
  });
});
