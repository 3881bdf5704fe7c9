/**
 * nocap: no cap, 1 GiB upload (128 MiB with --quick): direct, plain relay, and the pair with 1, 4 and 8
 * stripes; GB/s, and CPU seconds per GiB and peak RSS of each proxy.
 */

import { join, medianOf, plainFigure, rateFigure, summaryOf } from "../lib/figures.ts";
import { CLK_TCK } from "../lib/proc.ts";
import { GiB, MB, MiB, fmt, type Summary } from "../lib/stats.ts";
import { barsSvg } from "../lib/svg.ts";
import type { Figure, RunResult, RunSpec, Scenario } from "../lib/types.ts";

const PAIRS = [1, 4, 8] as const;

/** CPU seconds per GiB of process `proc` in a run, or null when it was not measured. */
const cpuPerGiB = (proc: string) => (r: RunResult): number | null =>
  r.cpu[proc] !== undefined && r.bytes > 0 ? r.cpu[proc]! / (r.bytes / GiB) : null;

export const nocap: Scenario = {
  name: "nocap",
  description: "no cap: direct, relay and the pair with 1, 4, 8 stripes; GB/s and CPU s/GiB per proxy",
  reads: ["quick"],
  rateUnit: "GB/s",

  runs({ o }) {
    const bytes = o.quick ? 128 * MiB : GiB;
    const base = { scenario: "nocap", dir: "up" as const, bytes, conns: 1, hash: false, deadlineMs: 30_000, timeoutMs: 60_000 };
    return [
      { ...base, key: "nocap/direct", label: "direct", path: "direct" },
      { ...base, key: "nocap/relay", label: "relay", path: "relay", measure: ["relay"] },
      ...PAIRS.map(
        (n): RunSpec => ({ ...base, key: `nocap/N${n}`, label: `pair N=${n}`, path: "pair", mid: "none", stripes: n, measure: ["client", "server"] }),
      ),
    ];
  },

  measures: ({ o, cpus }) =>
    `- nocap: upload of ${o.quick ? "128 MiB" : "1 GiB"}, byte counts checked, not hashed (hashing costs more CPU than the proxies); CPU = utime+stime from /proc/PID/stat (CLK_TCK ${CLK_TCK}) over the transfer, per GiB. With ${cpus} cores, direct has 2 busy processes, relay 3, the pair 4.`,

  figures({ results, cpus }) {
    const gbps = (key: string): number | null => medianOf(results, key, (r) => r.rate / 1e9);
    const busy = (key: string): string => {
      const b = medianOf(results, key, (r) => r.coresBusy ?? null);
      return b === null ? "" : `${fmt(b, 1)} of ${cpus} cores busy (all processes)`;
    };
    const mem = (key: string): string => {
      const c = medianOf(results, key, (r) => (r.rss.client ?? 0) / MB);
      const s = medianOf(results, key, (r) => (r.rss.server ?? 0) / MB);
      return c && s ? `peak RSS client ${fmt(c, 0)} MB, server ${fmt(s, 0)} MB` : "";
    };
    const cpu = (name: string, key: string, proc: string): Figure =>
      plainFigure(results, { scenario: "nocap", case: name, key, unit: "CPU s/GiB", pick: cpuPerGiB(proc) });
    return [
      rateFigure(results, { scenario: "nocap", case: "direct (app → target)", key: "nocap/direct", unit: "GB/s", note: busy("nocap/direct") }),
      rateFigure(results, {
        scenario: "nocap",
        case: "relay",
        key: "nocap/relay",
        unit: "GB/s",
        reference: { label: "direct", value: gbps("nocap/direct") },
        minRatio: 0.8,
        note: busy("nocap/relay"),
      }),
      ...PAIRS.map((n) =>
        rateFigure(results, {
          scenario: "nocap",
          case: `pair, N=${n}`,
          key: `nocap/N${n}`,
          unit: "GB/s",
          reference: { label: "relay", value: gbps("nocap/relay") },
          minRatio: n === 4 ? 0.6 : undefined,
          note: join(busy(`nocap/N${n}`), mem(`nocap/N${n}`)),
        }),
      ),
      cpu("relay process CPU", "nocap/relay", "relay"),
      ...PAIRS.flatMap((n) => [
        cpu(`pair N=${n}: client proxy CPU`, `nocap/N${n}`, "client"),
        cpu(`pair N=${n}: server proxy CPU`, `nocap/N${n}`, "server"),
      ]),
    ];
  },

  charts({ o, results }, subtitle) {
    const g = (key: string): Summary => summaryOf(results.get(key), (r) => r.rate / 1e9);
    const cpu = (key: string, proc: string): string => {
      const v = medianOf(results, key, cpuPerGiB(proc));
      return v === null ? "" : `${proc} ${v.toFixed(2)}`;
    };
    const svg = barsSvg(`Uncapped loopback upload, ${o.quick ? "128 MiB" : "1 GiB"}`, `${subtitle} · below: CPU s/GiB per proxy process`, "GB/s (10^9 B/s)", [
      { label: "direct", value: g("nocap/direct") },
      { label: "relay", value: g("nocap/relay"), note: cpu("nocap/relay", "relay") },
      ...PAIRS.map((n) => ({
        label: `pair N=${n}`,
        value: g(`nocap/N${n}`),
        note: [cpu(`nocap/N${n}`, "client"), cpu(`nocap/N${n}`, "server")].filter(Boolean).join("\n"),
      })),
    ]);
    return [{ name: "nocap.svg", svg }];
  },
};
