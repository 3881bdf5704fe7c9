/**
 * The run loop: every spec of every selected scenario, --runs times, with a progress line per run.
 * Runs go round-robin over the specs of a scenario (run 1 of each, then run 2 ...), so a burst of other
 * load on the shared machine spreads over figures instead of sinking one.
 */

import { runOnce, runTransfer } from "./chain.ts";
import { duration } from "./report.ts";
import { GiB, MB } from "./stats.ts";
import type { Options, Results, RunResult, RunSpec, Scenario } from "./types.ts";

/** Everything the runs produced. */
export interface SuiteRun {
  specs: RunSpec[];
  results: Results;
  /** Wall time per scenario, ms. */
  scenarioMs: Map<string, number>;
}

/** One progress line's verdict part: rate, time, integrity, CPU, RSS, resets. */
export function describeRun(unit: Scenario["rateUnit"], spec: RunSpec, r: RunResult): string {
  if (!r.ok) return `FAILED: ${r.error}`;
  const perGiB = unit === "GB/s";
  const rate = perGiB ? `${(r.rate / 1e9).toFixed(2)} GB/s` : `${(r.rate / MB).toFixed(2)} MB/s`;
  const parts = [rate, `${r.seconds.toFixed(2)} s`, r.intact ? (spec.hash ? "hash ok" : "bytes ok") : `BROKEN (${r.error})`];
  if (r.sessions) parts.push(`${r.sessions.intact}/${r.sessions.total} intact`);
  for (const [n, c] of Object.entries(r.cpu)) parts.push(perGiB ? `${n} ${(c / (r.bytes / GiB)).toFixed(2)} CPU s/GiB` : `${n} ${c.toFixed(1)} CPU s`);
  for (const [n, b] of Object.entries(r.rss)) parts.push(`${n} RSS ${(b / MB).toFixed(0)} MB`);
  if (r.resets !== undefined) parts.push(`${r.resets} resets`);
  if (r.stripeDeaths) parts.push(`${r.stripeDeaths} stripe deaths`);
  if (r.coresBusy !== undefined) parts.push(`${r.coresBusy.toFixed(1)} cores busy`);
  for (const [k, v] of Object.entries(r.figures ?? {})) parts.push(`${k} ${Number(v.toFixed(2))}`);
  return parts.join(", ");
}

/** Runs the scenarios; `T` is the capped transfer length in seconds. */
export async function runSuite(o: Options, scenarios: readonly Scenario[], T: number, progress: (line: string) => void): Promise<SuiteRun> {
  const started = performance.now();
  const plans = scenarios.map((s) => ({ s, specs: s.runs({ o, T }) }));
  const specs = plans.flatMap((p) => p.specs);
  const keys = new Set<string>();
  for (const s of specs) {
    if (keys.has(s.key)) throw new Error(`two runs share the key ${s.key}`);
    keys.add(s.key);
  }
  const results: Results = new Map(specs.map((s) => [s.key, []]));
  const scenarioMs = new Map<string, number>();
  const total = specs.length * o.runs;
  let k = 0;
  for (const { s, specs: mine } of plans) {
    const t = performance.now();
    await s.setup?.({ o, T }, progress);
    const attempt = (spec: RunSpec, run: number): Promise<RunResult> => (s.run ? s.run(spec, run) : runTransfer(spec, run, { collect: s.collect }));
    for (let run = 1; run <= o.runs; run++) {
      for (const spec of mine) {
        k++;
        const head = `[${String(k).padStart(3)}/${total} ${duration(performance.now() - started).padStart(9)}] ${s.name.padEnd(8)} ${spec.label.padEnd(26)} run ${run}/${o.runs}`;
        const r = await runOnce(spec, run, attempt, progress);
        results.get(spec.key)!.push(r);
        progress(`${head}  ${describeRun(s.rateUnit, spec, r)}`);
        if (!r.ok || !r.intact) {
          for (const [name, lines] of Object.entries(r.logs ?? {})) {
            if (lines.length) progress(`      ${name}: ${lines.slice(-4).join("\n      " + " ".repeat(name.length + 2))}`);
          }
        }
      }
    }
    scenarioMs.set(s.name, performance.now() - t);
    progress(`  ${s.name} done in ${duration(scenarioMs.get(s.name)!)}`);
  }
  return { specs, results, scenarioMs };
}
