#!/usr/bin/env bun
/**
 * Runs chosen cases of the attacks scenario alone and prints each run's figures as JSON lines:
 *   bun bench/attacks-run.ts [--runs K] [key ...]     (keys as in bench/scenarios/attacks.ts, e.g. attacks/ping)
 * For working on one attack; the suite (`bun run bench -- --scenario attacks`) runs them all.
 */

import { killAll } from "./lib/proc.ts";
import { removeSnapshot, takeSnapshot } from "./lib/snapshot.ts";
import { attacks } from "./scenarios/attacks.ts";

const args = process.argv.slice(2);
let runs = 1;
const keys: string[] = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--runs") runs = Number(args[++i]);
  else keys.push(args[i]!);
}
const o = { quick: false, runs, capMBps: 4, delayMs: 10, stripes: [4], scenarios: ["attacks"] };
const specs = attacks.runs({ o, T: 4 }).filter((s) => keys.length === 0 || keys.includes(s.key));
const code = takeSnapshot();
process.stderr.write(`code under test: ${code.commit}${code.dirty ? " (dirty)" : ""} src ${code.srcSha256}\n`);
try {
  for (const spec of specs) {
    for (let run = 1; run <= runs; run++) {
      let r;
      try {
        r = await attacks.run!(spec, run);
      } catch (err) {
        const e = err as Error & { logs?: Record<string, string[]> };
        r = { run, ok: false, error: e.message, logs: e.logs };
      }
      process.stdout.write(`${JSON.stringify({ key: spec.key, ...r })}\n`);
    }
  }
} finally {
  await killAll(500);
  removeSnapshot();
}
process.exit(0);
