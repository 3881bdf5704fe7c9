/**
 * The suite's command line: the shared flags plus each scenario's own, parsed into Options. Pure: the
 * entry prints errors and usage.
 */

import { BenchUsageError, flagHelp, parseFlags, type FlagSpec, type FlagValue } from "./flags.ts";
import type { Options, Scenario } from "./types.ts";

/** The flags every run of the suite understands. */
function commonFlags(scenarios: readonly Scenario[]): FlagSpec[] {
  return [
    { name: "quick", kind: "bool", help: "short CI smoke: 1 run per figure, ~1 s transfers, 128 MiB uncapped" },
    { name: "runs", kind: "number", arg: "K", help: "runs per figure, median reported (default 3; 1 with --quick)", min: 1, max: 50 },
    { name: "cap", kind: "number", arg: "MBPS", help: "per-connection cap of the link in MB/s = 10^6 B/s (default 4)", min: 0.01, max: 10_000 },
    { name: "delay", kind: "number", arg: "MS", help: "one-way delay of the link in ms (default 10)", min: 0, max: 5000 },
    { name: "stripes", kind: "numbers", arg: "L", help: "stripe counts for the caps scenario (default 1,2,4,8,16)", min: 1, max: 64, integer: true },
    {
      name: "scenario",
      kind: "choices",
      arg: "S",
      help: "run only these scenarios (repeatable or comma list; default: all)",
      choices: scenarios.map((s) => s.name),
    },
  ];
}

/** Every flag: the common ones, then each scenario's own. */
export function allFlags(scenarios: readonly Scenario[]): FlagSpec[] {
  return [...commonFlags(scenarios), ...scenarios.flatMap((s) => s.flags ?? [])];
}

/** The --help text, made from the flags and the scenario registry. */
export function usage(scenarios: readonly Scenario[]): string {
  const w = Math.max(...scenarios.map((s) => s.name.length)) + 2;
  return [
    `usage: bun run bench [--quick] [--runs K] [--cap MBPS] [--delay MS] [--stripes 1,2,4,...]`,
    `                 [--scenario ${scenarios.map((s) => s.name).join("|")}]...`,
    "",
    flagHelp(allFlags(scenarios)),
    "",
    "scenarios:",
    ...scenarios.map((s) => `  ${s.name.padEnd(w)}${s.description}${s.reads.length ? ` (reads ${s.reads.map((r) => `--${r}`).join(", ")})` : ""}`),
  ].join("\n");
}

/** Parses the suite's arguments (without --help, which the entry handles). Throws BenchUsageError. */
export function parseOptions(argv: readonly string[], scenarios: readonly Scenario[]): Options {
  const names = new Set<string>();
  for (const f of allFlags(scenarios)) {
    if (names.has(f.name)) throw new BenchUsageError(`flag --${f.name} is declared twice (a scenario's flag clashes)`);
    names.add(f.name);
  }
  const f = parseFlags(argv, allFlags(scenarios));
  const quick = f.get("quick") === true;
  const o: Options = {
    quick,
    runs: f.has("runs") ? Math.round(f.get("runs") as number) : quick ? 1 : 3,
    capMBps: (f.get("cap") as number | undefined) ?? 4,
    delayMs: (f.get("delay") as number | undefined) ?? 10,
    stripes: (f.get("stripes") as number[] | undefined) ?? [1, 2, 4, 8, 16],
    scenarios: (f.get("scenario") as string[] | undefined) ?? scenarios.map((s) => s.name),
  };
  const own = new Set(scenarios.flatMap((s) => (s.flags ?? []).map((x) => x.name)));
  const extra: Record<string, FlagValue> = {};
  for (const [k, v] of f) if (own.has(k)) extra[k] = v;
  if (Object.keys(extra).length) o.extra = extra;
  return o;
}
