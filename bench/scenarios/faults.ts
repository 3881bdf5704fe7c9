/**
 * faults: 8 stripes through the fault proxy capped at --cap per connection with --delay latency, one
 * random live stripe reset every 300 ms, against the same run without resets. Uncapped, the surviving
 * stripes would absorb a lost one for free on loopback, so only a capped run measures what a reset costs.
 */

import { join, medianOf, rateFigure, summaryOf, okRuns } from "../lib/figures.ts";
import { MB, fmt } from "../lib/stats.ts";
import type { Scenario } from "../lib/types.ts";

const STRIPES = 8;
const RESET_EVERY_MS = 300;

export const faults: Scenario = {
  name: "faults",
  description: `${STRIPES} stripes through a capped fault proxy, one stripe reset every ${RESET_EVERY_MS} ms, against no resets`,
  reads: ["cap", "delay", "quick"],
  rateUnit: "MB/s",

  runs({ o, T }) {
    // At least 2 s even with --quick: a reset every 300 ms needs a few to measure anything.
    const t = Math.max(T, 2);
    const base = {
      scenario: "faults",
      dir: "up" as const,
      path: "pair" as const,
      mid: "fault" as const,
      rates: [o.capMBps],
      delayMs: o.delayMs,
      stripes: STRIPES,
      bytes: Math.round(STRIPES * o.capMBps * MB * t),
      conns: 1,
      hash: true,
      deadlineMs: 2 * t * 1000,
      timeoutMs: (2 * t + 40) * 1000,
    };
    return [
      { ...base, key: "faults/clean", label: "clean" },
      { ...base, key: "faults/resets", label: `reset every ${RESET_EVERY_MS} ms`, resetEveryMs: RESET_EVERY_MS },
    ];
  },

  measures: ({ o }) =>
    `- faults: ${STRIPES} stripes through the fault proxy (bench/tools/fault-proxy.ts) capped at ${o.capMBps} MB/s per connection with ${o.delayMs} ms one-way latency — uncapped, the surviving stripes absorb a lost one for free on loopback, so only the capped run measures what a reset costs; one random stripe that is carrying data (past its reply, 64 KiB through it) reset every ${RESET_EVERY_MS} ms from the app's start to the end of the transfer; hashed.`,

  figures({ o, results }) {
    const fr = results.get("faults/resets");
    const resets = summaryOf(fr, (r) => r.resets ?? null).median;
    const deaths = summaryOf(fr, (r) => r.stripeDeaths ?? null).median;
    return [
      rateFigure(results, {
        scenario: "faults",
        case: `${STRIPES} stripes, no resets`,
        key: "faults/clean",
        unit: "MB/s",
        reference: { label: "N×cap", value: STRIPES * o.capMBps },
      }),
      rateFigure(results, {
        scenario: "faults",
        case: `${STRIPES} stripes, one reset every ${RESET_EVERY_MS} ms`,
        key: "faults/resets",
        unit: "MB/s",
        reference: { label: "clean", value: medianOf(results, "faults/clean", (r) => r.rate / MB) },
        minRatio: 0.7,
        note: join(
          resets !== null ? `${fmt(resets, 0)} resets per run (median)` : "",
          deaths !== null ? `${fmt(deaths, 0)} stripe deaths logged by the client` : "",
          okRuns(fr).length ? "hashes match" : "",
        ),
      }),
    ];
  },
};
