/**
 * A small declarative flag parser for the benchmark suite: pure (no exit, no printing), so it is
 * tested without processes. The suite does not use src/cli/args.ts on purpose: it runs from the working
 * tree while the code under test runs from a snapshot, and its own needs differ (boolean flags,
 * repeatable comma lists).
 *
 * Accepted forms: `--name value`, `--name=value`, and `--name` alone for booleans.
 */

/** A bad command line: one line that names the flag; the entry prints it with the usage, exit 2. */
export class BenchUsageError extends Error {
  readonly code = "E_USAGE";
  constructor(message: string) {
    super(message);
    this.name = "BenchUsageError";
  }
}

/** One flag the suite accepts. */
export type FlagSpec =
  | { name: string; kind: "bool"; help: string }
  | { name: string; kind: "number"; arg: string; help: string; min: number; max: number; integer?: boolean }
  /** Comma list of numbers, deduplicated and sorted. */
  | { name: string; kind: "numbers"; arg: string; help: string; min: number; max: number; integer?: boolean }
  /** Comma list of names from `choices`, repeatable, deduplicated, in the order of `choices`. */
  | { name: string; kind: "choices"; arg: string; help: string; choices: readonly string[] }
  | { name: string; kind: "string"; arg: string; help: string };

/** A parsed value. */
export type FlagValue = boolean | number | number[] | string[] | string;

/** `--help` or `-h` anywhere. */
export function wantsHelp(argv: readonly string[]): boolean {
  return argv.includes("--help") || argv.includes("-h");
}

function number(spec: { name: string; min: number; max: number; integer?: boolean }, v: string): number {
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < spec.min || n > spec.max) {
    throw new BenchUsageError(`--${spec.name} wants a number in [${spec.min}, ${spec.max}], got "${v}"`);
  }
  if (spec.integer && !Number.isInteger(n)) throw new BenchUsageError(`--${spec.name} wants whole numbers, got "${v}"`);
  return n;
}

/**
 * Parses `argv` against `specs`: returns the given flags only (defaults are the caller's). Throws
 * BenchUsageError for an unknown flag, a missing or bad value, or a non-repeatable flag given twice.
 */
export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[]): Map<string, FlagValue> {
  const out = new Map<string, FlagValue>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf("=");
    const name = a.startsWith("--") ? (eq > 0 ? a.slice(2, eq) : a.slice(2)) : "";
    const spec = specs.find((s) => s.name === name);
    if (!spec) throw new BenchUsageError(`unknown argument "${a}"`);
    if (spec.kind === "bool") {
      if (eq > 0) throw new BenchUsageError(`--${name} takes no value`);
      out.set(name, true);
      continue;
    }
    const v = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (v === undefined || (eq < 0 && v.startsWith("--"))) throw new BenchUsageError(`--${name} needs a value (${spec.arg})`);
    if (out.has(name) && spec.kind !== "choices") throw new BenchUsageError(`--${name} given twice`);
    switch (spec.kind) {
      case "number":
        out.set(name, number(spec, v));
        break;
      case "numbers":
        out.set(name, [...new Set(v.split(",").map((s) => number(spec, s)))].sort((x, y) => x - y));
        break;
      case "choices": {
        const seen = new Set((out.get(name) as string[] | undefined) ?? []);
        for (const s of v.split(",").filter(Boolean)) {
          if (!spec.choices.includes(s)) throw new BenchUsageError(`--${name}: expected one of ${spec.choices.join(", ")}, got "${s}"`);
          seen.add(s);
        }
        out.set(name, spec.choices.filter((c) => seen.has(c)));
        break;
      }
      case "string":
        out.set(name, v);
        break;
      default: {
        const never: never = spec;
        throw new Error(`unhandled flag kind ${JSON.stringify(never)}`);
      }
    }
  }
  return out;
}

/** Usage lines, one per flag: `  --name ARG   help`. */
export function flagHelp(specs: readonly FlagSpec[]): string {
  const left = specs.map((s) => (s.kind === "bool" ? `--${s.name}` : `--${s.name} ${s.arg}`));
  const w = Math.max(...left.map((l) => l.length)) + 2;
  return specs.map((s, i) => `  ${left[i]!.padEnd(w)}${s.help}`).join("\n");
}
