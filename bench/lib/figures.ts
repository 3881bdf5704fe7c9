/**
 * From runs to figures (pure): which runs count, their median and range, and the rate figure most
 * scenarios report. Scenario modules build their table rows with these; lib/judge.ts judges them.
 */

import { MB, summarize, type Summary } from "./stats.ts";
import type { Figure, Results, RunResult, Target, Tally } from "./types.ts";

/** Runs that finished with intact data: the only ones whose figures count. */
export function okRuns(rs: readonly RunResult[] | undefined): RunResult[] {
  return (rs ?? []).filter((r) => r.ok && r.intact);
}

/** How many runs there were, how many were good, and why the others failed. */
export function tally(rs: readonly RunResult[] | undefined): Tally {
  const all = rs ?? [];
  const bad = all.filter((r) => !(r.ok && r.intact));
  return { total: all.length, ok: all.length - bad.length, errors: bad.map((r) => r.error ?? "failed") };
}

/** Median and range of `pick` over the good runs. */
export function summaryOf(rs: readonly RunResult[] | undefined, pick: (r: RunResult) => number | null | undefined): Summary {
  return summarize(okRuns(rs).map(pick));
}

/** Median of `pick` over the good runs of `key`. */
export function medianOf(res: Results, key: string, pick: (r: RunResult) => number | null | undefined): number | null {
  return summaryOf(res.get(key), pick).median;
}

/** Joins note parts with "; ", skipping empty ones. */
export function join(...parts: string[]): string {
  return parts.filter(Boolean).join("; ");
}

/** Short number for labels: 4, 0.4, 2.5. */
export function short(x: number): string {
  return String(Number(x.toFixed(3)));
}

/** Divisor of a rate unit. */
const DIV = { "MB/s": MB, "GB/s": 1e9 } as const;

/** A throughput figure of the runs of `key`, with an optional reference (same unit) and target. */
export function rateFigure(
  res: Results,
  f: { scenario: string; case: string; key: string; unit: "MB/s" | "GB/s"; reference?: { label: string; value: number | null }; minRatio?: number; note?: string },
): Figure {
  const rs = res.get(f.key);
  const out: Figure = {
    scenario: f.scenario,
    case: f.case,
    unit: f.unit,
    value: summaryOf(rs, (r) => r.rate / DIV[f.unit]),
    tally: tally(rs),
    note: f.note ?? "",
  };
  if (f.reference) out.reference = f.reference;
  if (f.minRatio !== undefined) out.target = { kind: "ratio", min: f.minRatio } satisfies Target;
  return out;
}

/** A figure of some other quantity of the runs of `key` (CPU, memory, time), optionally with a target. */
export function plainFigure(
  res: Results,
  f: { scenario: string; case: string; key: string; unit: string; pick: (r: RunResult) => number | null | undefined; target?: Target; note?: string },
): Figure {
  const rs = res.get(f.key);
  const out: Figure = { scenario: f.scenario, case: f.case, unit: f.unit, value: summaryOf(rs, f.pick), tally: tally(rs), note: f.note ?? "" };
  if (f.target) out.target = f.target;
  return out;
}
