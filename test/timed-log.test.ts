/**
 * TimedAggregator: a burst followed by quiet still gets its summary (the timer flushes it), and the timer
 * stops once nothing is pending, so an idle proxy runs no timer for its logs.
 */

import { expect, test } from "bun:test";
import type { LogEvent } from "../src/proxy/log.ts";
import { TimedAggregator } from "../src/proxy/timed-log.ts";
import { until } from "./helpers/util.ts";

test("a burst then quiet: the first line at once, the summary from the timer, then no timer", async () => {
  const lines: LogEvent[] = [];
  const agg = new TimedAggregator("test flush", (ev) => lines.push(ev), { intervalMs: 50 });
  const first: LogEvent = { level: "warn", event: "x.first", msg: "first" };
  for (let i = 0; i < 5; i++) agg.note("k", first, (n, s) => ({ level: "warn", event: "x.summary", msg: `${n} in ${s} s` }));
  expect(lines.map((l) => l.event)).toEqual(["x.first"]);
  expect(agg.size).toBe(1);
  // Nothing more is noted: only the timer can write the summary (it counts the interval's 5 events).
  await until(() => lines.length === 2, "the summary line");
  expect(lines[1]!.event).toBe("x.summary");
  expect(lines[1]!.msg).toMatch(/^5 in /);
  await until(() => agg.size === 0, "the kind forgotten after a quiet interval");
  agg.close();
  expect(lines.length).toBe(2);
});
