/**
 * uneven: upload over 8 stripes through links of different caps, per scheduler: rates cap,cap,cap,cap/10
 * in turn, and one slow stripe (7 × cap + cap/10). Targets apply to the default scheduler (rate).
 */

import { join, rateFigure, short } from "../lib/figures.ts";
import { MB, fmt } from "../lib/stats.ts";
import type { Figure, RunSpec, Scenario } from "../lib/types.ts";

const SCHEDULERS = ["rate", "until-congested", "round-robin"] as const;
const STRIPES = 8;

/** Link rates of the two cases, MB/s, assigned to connections in turn. */
function rates(cap: number): { uneven: number[]; slow: number[] } {
  return { uneven: [cap, cap, cap, cap / 10], slow: [cap, cap, cap, cap, cap, cap, cap, cap / 10] };
}

/** Sum of the caps the first n connections get when `rates` are assigned in turn. */
function capSum(rs: readonly number[], n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += rs[i % rs.length]!;
  return s;
}

export const uneven: Scenario = {
  name: "uneven",
  description: "8 stripes over links of uneven caps (cap,cap,cap,cap/10 and 7×cap + cap/10), per scheduler",
  reads: ["cap", "delay", "quick"],
  rateUnit: "MB/s",

  runs({ o, T }) {
    const { uneven, slow } = rates(o.capMBps);
    const specs: RunSpec[] = [];
    for (const sched of SCHEDULERS) {
      for (const [name, rs] of [["uneven", uneven], ["slow", slow]] as const) {
        specs.push({
          key: `uneven/${name}/${sched}`,
          scenario: "uneven",
          label: `${name} ${sched}`,
          dir: "up",
          path: "pair",
          mid: "link",
          rates: [...rs],
          delayMs: o.delayMs,
          stripes: STRIPES,
          scheduler: sched,
          bytes: Math.round(capSum(rs, STRIPES) * MB * T),
          conns: 1,
          hash: true,
          // A scheduler that runs at N × the slowest cap would take ~8× longer: the sender stops at 2T,
          // and what it already handed over still has to drain.
          deadlineMs: 2 * T * 1000,
          timeoutMs: (2 * T + 40) * 1000,
        });
      }
    }
    return specs;
  },

  measures: ({ T }) =>
    `- uneven: upload, 8 stripes, link rates assigned to connections in turn; sized for ~${T} s at the sum of the caps; the sender stops at ${2 * T} s (then FIN) so a scheduler stuck near N × the smallest cap still ends in bounded time; hashed. Targets apply to the default scheduler (rate); the others are shown for comparison.`,

  figures({ o, results }) {
    const cap = o.capMBps;
    const { uneven, slow } = rates(cap);
    const sumU = capSum(uneven, STRIPES);
    const minU = STRIPES * Math.min(...uneven);
    const others = capSum(slow, STRIPES - 1);
    const suffix = (sched: string): string => `${sched}${sched === "rate" ? " (default)" : ""}`;
    const unevenRows = SCHEDULERS.map((sched): Figure => {
      const f = rateFigure(results, {
        scenario: "uneven",
        case: `rates ${uneven.map(short).join(",")} ×2, N=8, ${suffix(sched)}`,
        key: `uneven/uneven/${sched}`,
        unit: "MB/s",
        reference: { label: "sum", value: sumU },
        minRatio: sched === "rate" ? 0.8 : undefined,
      });
      const m = f.value.median;
      f.note = join(`N×smallest cap = ${fmt(minU)} MB/s${m !== null ? ` (${fmt(m / minU)}× that)` : ""}`, f.note);
      return f;
    });
    const slowRows = SCHEDULERS.map((sched) =>
      rateFigure(results, {
        scenario: "uneven",
        case: `one slow stripe (7×${short(cap)} + ${short(cap / 10)}), N=8, ${suffix(sched)}`,
        key: `uneven/slow/${sched}`,
        unit: "MB/s",
        reference: { label: "sum of others", value: others },
        minRatio: sched === "rate" ? 0.9 : undefined,
        note: `all 8 caps: ${fmt(others + cap / 10)} MB/s`,
      }),
    );
    return [...unevenRows, ...slowRows];
  },
};
