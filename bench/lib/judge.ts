/**
 * The judge (pure): measured figures and their targets in, table rows out — the ratio to the
 * reference, met or missed, and why runs failed. It reads numbers only, never processes or files, so a
 * report can be re-judged from the results JSON.
 *
 * Verdicts: any failed run (timeout, crash, different bytes) or no run at all → missed; otherwise the
 * target decides; a figure without a target gets no verdict.
 */

import { fmt, type Summary } from "./stats.ts";
import type { Figure, Row, Target } from "./types.ts";

/** The target as the table shows it. */
export function targetText(t: Target | undefined): string {
  if (!t) return "";
  switch (t.kind) {
    case "ratio":
      return `≥ ${t.min.toFixed(2)}`;
    case "max":
    case "median":
    case "equal":
      return t.text;
    default: {
      const never: never = t;
      throw new Error(`unknown target ${JSON.stringify(never)}`);
    }
  }
}

/** Whether good runs meet the target. */
export function met(t: Target, value: Summary, ratio: number | null): boolean {
  switch (t.kind) {
    case "ratio":
      return ratio !== null && ratio >= t.min;
    case "max":
      return value.max !== null && value.max < t.below;
    case "median":
      return value.median !== null && value.median < t.below;
    case "equal":
      return value.median === t.to;
    default: {
      const never: never = t;
      throw new Error(`unknown target ${JSON.stringify(never)}`);
    }
  }
}

/** Judges one figure. */
export function judge(f: Figure): Row {
  const failed = f.tally.total === 0 || f.tally.ok !== f.tally.total;
  const ratio = f.reference?.value && f.value.median !== null ? f.value.median / f.reference.value : null;
  const pass = failed ? false : f.target ? met(f.target, f.value, ratio) : null;
  const bad = f.tally.total - f.tally.ok;
  const failure = bad > 0 ? `${bad} run(s) failed: ${[...new Set(f.tally.errors)].join("; ")}` : "";
  // Key order as the JSON has always had it: `text` (when set) right after `value`.
  return {
    scenario: f.scenario,
    case: f.case,
    unit: f.unit,
    value: f.value,
    ...(f.text !== undefined ? { text: f.text } : {}),
    runs: f.tally.ok === f.tally.total ? String(f.tally.total) : `${f.tally.ok}/${f.tally.total}`,
    reference: f.reference ? `${f.reference.label} ${fmt(f.reference.value)} ${f.unit}` : "",
    ratio,
    target: targetText(f.target),
    pass,
    note: [f.note, failure].filter(Boolean).join("; "),
  };
}

/** Judges every figure, in order. */
export function judgeAll(figures: readonly Figure[]): Row[] {
  return figures.map(judge);
}
