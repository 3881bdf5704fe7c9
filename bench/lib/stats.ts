/** Small statistics and formatting helpers for the end-to-end suite. */

/** Median and range of a set of runs; null figures when no run produced a value. */
export interface Summary {
  median: number | null;
  min: number | null;
  max: number | null;
  /** Values that went into it. */
  n: number;
}

/** Median (mean of the middle two for even counts), min and max of the finite values. */
export function summarize(values: readonly (number | null | undefined)[]): Summary {
  const v = values.filter((x): x is number => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return { median: null, min: null, max: null, n: 0 };
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { median, min: v[0]!, max: v[v.length - 1]!, n: v.length };
}

/** Fixed-point with a sensible number of decimals for the magnitude. */
export function fmt(x: number | null | undefined, decimals?: number): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "—";
  const d = decimals ?? (Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2);
  return x.toFixed(d);
}

export const MB = 1e6;
export const GB = 1e9;
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
