#!/usr/bin/env bun
/**
 * End-to-end benchmark suite (`bun run bench`): every component a separate process on loopback —
 * target, capped link or fault proxy, server proxy, client proxy, app — on ports from a free-port probe.
 *
 *   bun run bench/e2e.ts [--quick] [--runs K] [--cap MBPS] [--delay MS] [--stripes 1,2,4,...]
 *                        [--scenario caps|uneven|nocap|sessions|faults]...
 *
 * This file is the entry only: options (lib/options.ts), snapshot of the code under test
 * (lib/snapshot.ts), the runs (lib/suite.ts over lib/chain.ts), the judge (lib/judge.ts) and the
 * report (lib/report.ts). The scenarios are bench/scenarios/*.ts; bench/README.md says how to add one.
 *
 * Progress goes to stderr; the markdown table to stdout and bench/results/latest.md; raw runs to
 * latest.json; charts to caps.svg and nocap.svg (--quick writes quick.md, quick.json, quick-*.svg
 * instead, so a CI smoke never overwrites a full run's results). Exit code 1 if any run failed
 * (timeout, crash, corrupt data); missed performance targets are reported, not fatal; 2 on bad usage.
 */

import { mkdirSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { resolve } from "node:path";
import { BenchUsageError, wantsHelp } from "./lib/flags.ts";
import { judgeAll } from "./lib/judge.ts";
import { parseOptions, usage } from "./lib/options.ts";
import { ROOT, killAll, killAllNow, liveCount } from "./lib/proc.ts";
import { duration, reportFiles, writeFiles } from "./lib/report.ts";
import { removeSnapshot, takeSnapshot } from "./lib/snapshot.ts";
import { runSuite } from "./lib/suite.ts";
import type { Meta, Options } from "./lib/types.ts";
import { SCENARIOS, selected } from "./scenarios/index.ts";

function progress(line: string): void {
  process.stderr.write(`${line}\n`);
}

function options(argv: string[]): Options {
  if (wantsHelp(argv)) {
    process.stdout.write(`${usage(SCENARIOS)}\n`);
    process.exit(0);
  }
  try {
    return parseOptions(argv, SCENARIOS);
  } catch (err) {
    if (!(err instanceof BenchUsageError)) throw err;
    process.stderr.write(`error: ${err.message}\n\n${usage(SCENARIOS)}\n`);
    process.exit(2);
  }
}

async function main(): Promise<number> {
  const o = options(process.argv.slice(2));
  const scenarios = selected(o.scenarios);
  const T = o.quick ? 1 : 4;
  const started = performance.now();
  const startedAt = new Date();
  const code = takeSnapshot();
  const load0 = loadavg()[0]!;
  const runs = scenarios.reduce((a, s) => a + s.runs({ o, T }).length, 0) * o.runs;
  progress(
    `tcp-striper e2e: ${o.scenarios.join(", ")}; ${o.runs} run(s) per figure${o.quick ? " (quick)" : ""}; ` +
      `cap ${o.capMBps} MB/s per connection, ${o.delayMs} ms one-way delay; ${runs} runs`,
  );
  progress(`code under test: commit ${code.commit || "?"}${code.dirty ? " + uncommitted changes in src/" : ""}, src/ ${code.srcSha256}, copied to ${code.dir}`);

  const { specs, results, scenarioMs } = await runSuite(o, scenarios, T, progress);
  const elapsed = performance.now() - started;
  const meta: Meta = {
    date: startedAt.toISOString(),
    commit: code.commit || null,
    srcUncommittedChanges: code.dirty,
    srcSha256: code.srcSha256,
    bun: Bun.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? null,
    loadavgStart: load0,
    loadavgEnd: loadavg()[0]!,
    options: o,
    transferSeconds: T,
    durationSeconds: Math.round(elapsed / 100) / 10,
    scenarioSeconds: Object.fromEntries([...scenarioMs].map(([s, ms]) => [s, Math.round(ms / 100) / 10])),
  };
  const rows = judgeAll(scenarios.flatMap((s) => s.figures({ o, T, cpus: meta.cpus, results })));
  const files = reportFiles(meta, rows, specs, results, scenarios);
  const outDir = resolve(ROOT, "bench/results");
  mkdirSync(outDir, { recursive: true });
  writeFiles(outDir, files);

  process.stdout.write(files[0]!.text);
  progress(`\nwrote ${files.map((f) => `bench/results/${f.name}`).join(", ")}; took ${duration(elapsed)}`);
  const failed = [...results.values()].flat().filter((r) => !r.ok || !r.intact).length;
  if (failed) progress(`${failed} run(s) failed (see the table and ${o.quick ? "quick" : "latest"}.json)`);
  if (liveCount() !== 0) progress(`warning: ${liveCount()} child process(es) still alive at the end; killing them`);
  await killAll(500);
  removeSnapshot();
  return failed ? 1 : 0;
}

// Cleanup on every way out: normal exit, Ctrl-C, termination, crash.
let stopping = false;
const onSignal = (sig: string, code: number) => (): void => {
  if (stopping) {
    killAllNow();
    process.exit(code);
  }
  stopping = true;
  progress(`\n${sig}: stopping all child processes`);
  void killAll(500).finally(() => {
    removeSnapshot();
    process.exit(code);
  });
};
process.on("SIGINT", onSignal("SIGINT", 130));
process.on("SIGTERM", onSignal("SIGTERM", 143));
process.on("SIGHUP", onSignal("SIGHUP", 129));
process.on("exit", () => {
  killAllNow();
  removeSnapshot();
});
process.on("uncaughtException", (err) => {
  progress(`fatal: ${err.stack ?? err}`);
  killAllNow();
  process.exit(1);
});
process.on("unhandledRejection", (err) => {
  progress(`fatal: unhandled rejection: ${(err as Error)?.stack ?? err}`);
  killAllNow();
  process.exit(1);
});

main().then(
  (code) => process.exit(code),
  (err) => {
    progress(`fatal: ${(err as Error).stack ?? err}`);
    killAllNow();
    process.exit(1);
  },
);
