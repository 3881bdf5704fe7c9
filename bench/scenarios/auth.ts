/**
 * auth: what the keys cost. The keyed pair (the default: every stripe sealed with AES-256-GCM) against
 * the `--no-auth` pair, 4 stripes, uncapped, 1 GiB upload (128 MiB with --quick), in the same suite run
 * so both meet the same machine; GB/s and CPU seconds per GiB of each proxy. Target: keyed ≥ 0.8 ×
 * plain (issue 9).
 */

import { join, medianOf, plainFigure, rateFigure } from "../lib/figures.ts";
import { CLK_TCK } from "../lib/proc.ts";
import { GiB, MiB, fmt } from "../lib/stats.ts";
import type { Figure, RunResult, RunSpec, Scenario } from "../lib/types.ts";

const STRIPES = 4;
const MODES = [
  { name: "keyed", key: "auth/keyed", args: undefined },
  { name: "--no-auth", key: "auth/plain", args: { server: ["--no-auth"], client: ["--no-auth"] } },
] as const;

/** CPU seconds per GiB of process `proc` in a run, or null when it was not measured. */
const cpuPerGiB = (proc: string) => (r: RunResult): number | null =>
  r.cpu[proc] !== undefined && r.bytes > 0 ? r.cpu[proc]! / (r.bytes / GiB) : null;

export const auth: Scenario = {
  name: "auth",
  description: `keyed pair vs --no-auth pair, ${STRIPES} stripes, uncapped: GB/s and CPU s/GiB per proxy`,
  reads: ["quick"],
  rateUnit: "GB/s",

  runs({ o }) {
    const bytes = o.quick ? 128 * MiB : GiB;
    const base = { scenario: "auth", dir: "up" as const, path: "pair" as const, mid: "none" as const, stripes: STRIPES, bytes, conns: 1, hash: false };
    return MODES.map(
      (m): RunSpec => ({
        ...base,
        key: m.key,
        label: m.name,
        deadlineMs: 30_000,
        timeoutMs: 60_000,
        measure: ["client", "server"],
        ...(m.args ? { args: { server: [...m.args.server], client: [...m.args.client] } } : {}),
      }),
    );
  },

  measures: ({ o }) =>
    `- auth: upload of ${o.quick ? "128 MiB" : "1 GiB"} through the pair with ${STRIPES} stripes, uncapped, once keyed (stripes sealed with AES-256-GCM; the suite's own key file) and once with --no-auth, alternating in the same run; byte counts checked, not hashed; CPU = utime+stime from /proc/PID/stat (CLK_TCK ${CLK_TCK}) over the transfer, per GiB.`,

  figures({ results }) {
    const gbps = (key: string): number | null => medianOf(results, key, (r) => r.rate / 1e9);
    const busy = (key: string): string => {
      const b = medianOf(results, key, (r) => r.coresBusy ?? null);
      return b === null ? "" : `${fmt(b, 1)} cores busy (all processes)`;
    };
    const cpu = (mode: string, key: string, proc: string): Figure =>
      plainFigure(results, { scenario: "auth", case: `${mode}: ${proc} proxy CPU`, key, unit: "CPU s/GiB", pick: cpuPerGiB(proc) });
    return [
      rateFigure(results, { scenario: "auth", case: `--no-auth pair, N=${STRIPES}`, key: "auth/plain", unit: "GB/s", note: busy("auth/plain") }),
      rateFigure(results, {
        scenario: "auth",
        case: `keyed pair, N=${STRIPES}`,
        key: "auth/keyed",
        unit: "GB/s",
        reference: { label: "--no-auth", value: gbps("auth/plain") },
        minRatio: 0.8,
        note: join(busy("auth/keyed")),
      }),
      ...MODES.flatMap((m) => [cpu(m.name, m.key, "client"), cpu(m.name, m.key, "server")]),
    ];
  },
};
