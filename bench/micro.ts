/**
 * Micro-benchmarks of the pure hot paths (`bun run bench:micro`): loads every bench/*.bench.ts into one
 * mitata run, then prints a table of throughput (GB/s = payload bytes per iteration / mitata's mean
 * time per iteration) and heap growth per operation in steady state (heapUsed after a full GC, before
 * and after N iterations run outside mitata; ~0 means the path retains nothing).
 *
 *   bun run bench:micro [--json] [--filter REGEX] [--heap-n N] [--heap-ms MS]
 *
 * --json     also write bench/results/micro.json: mitata's json format (without the JIT `debug` text and
 *            raw samples) with a `micro` object added to each run and a top-level `micro` summary.
 * --filter   only benchmarks whose name matches (mitata's filter, e.g. "decode|reorder").
 * --heap-n   iterations for the heap check (default 100000).
 * --heap-ms  time cap per heap check in ms (default 1500); the N actually run is reported.
 *
 * A single file also runs alone: `bun bench/decode.bench.ts`.
 *
 * Each bench file exports `cases`: one Case per mitata bench. The bench's generator calls the case's
 * setup (outside the measured closure) and yields its `op`; the heap check calls the same setup again
 * and repeats the same `op`, so both measure the same steady state.
 */

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { bench, run, summary } from "mitata";
import { BATCH_SLACK, DEFAULT_SESSION_OPTIONS } from "../src/pipe/striped.ts";

/** One benchmark iteration in steady state, with what it moves. */
export interface Steady {
  /** One iteration: the measured closure (it passes its result through do_not_optimize). */
  op: () => unknown;
  /** Payload (application) bytes one iteration moves; 0 when throughput in bytes is meaningless. */
  bytes: number;
  /** What one iteration is ("frame", "chunk", "pick"...): the unit of the ops/s and heap B/op columns. */
  unit: string;
  /** Anything measured during setup worth showing (e.g. the copy alignment actually obtained). */
  note?: string;
}

/** A benchmark as both mitata and the heap check see it. */
export interface Case<T extends number | string = number> {
  /** mitata name, with `$<arg>` where the argument goes. */
  name: string;
  /** The swept argument (mitata `.args`). */
  arg: string;
  values: readonly T[];
  /** Builds one steady state for the argument value; runs outside any measurement. */
  setup: (value: T) => Steady;
  /** A throughput goal to check for one argument value (reported, never enforced). */
  target?: { value: T; gbps: number; label: string };
}

/** What a bench file exports. */
export interface BenchModule {
  cases: readonly Case<any>[];
}

/** Size of the session's pooled batch buffers: the default batchSize plus the same slack StripedPipe adds. */
export const BATCH_BUFFER = DEFAULT_SESSION_OPTIONS.batchSize + BATCH_SLACK;

/** Registers a file's cases with mitata, naive and fast side by side in one `summary`. */
export function registerSummary<A extends string | number>(cases: readonly Case<A>[]): void {
  summary(() => {
    for (const c of cases) {
      bench(c.name, function* (state: { get(name: string): any }) {
        yield c.setup(state.get(c.arg)).op; // setup runs here, outside the measured closure
      }).args(c.arg, [...c.values]);
    }
  });
}

/** Runs one bench file on its own (`bun bench/x.bench.ts`). */
export async function runStandalone<A extends string | number>(cases: Case<A>[]): Promise<void> {
  await runMicro([{ cases }]);
}

/** Deterministic PRNG (mulberry32): seeded input so every run measures the same shuffles and splits. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Bytes as a socket would hand them over: a fresh 512 KiB buffer (Bun's largest receive chunk, see
 * docs in /work/shared/notes/bun-sockets.md) filled with pseudo-random bytes. Fresh large buffers are
 * page-aligned, like Bun's.
 */
export function receiveChunk(size = 512 * 1024, seed = 1): Uint8Array {
  const buf = new Uint8Array(size);
  const rnd = prng(seed);
  for (let i = 0; i < size; i += 4) {
    const x = (rnd() * 4294967296) >>> 0;
    buf[i] = x;
    buf[i + 1] = x >>> 8;
    buf[i + 2] = x >>> 16;
    buf[i + 3] = x >>> 24;
  }
  return buf;
}

/** Consecutive `size`-byte views of `chunk`, the way SendBuffer.read cuts frames from a receive chunk. */
export function slices(chunk: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at + size <= chunk.byteLength; at += size) out.push(chunk.subarray(at, at + size));
  return out;
}

/** Size in bytes as "16 KiB". */
export function fmtSize(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}

// --- runner ----------------------------------------------------------------------------------------

interface Options {
  json: boolean;
  filter: RegExp | undefined;
  heapN: number;
  heapMs: number;
}

interface Row {
  name: string;
  arg: string;
  unit: string;
  bytesPerIter: number;
  nsPerIter: number;
  nsPerIterP50: number;
  gbps: number | null;
  mopsPerSec: number;
  heapBytesPerOp: number;
  heapN: number;
  note: string;
}

interface HeapResult {
  steady: Steady;
  bytesPerOp: number;
  n: number;
}

/** Heap growth per iteration: full GC, heapUsed, N iterations, full GC, heapUsed. */
function measureHeap(c: Case<any>, value: unknown, opts: Options): HeapResult {
  const steady = c.setup(value);
  const op = steady.op;
  // Warm up: JIT tiers, lazily grown arrays and pools reach their steady size before the first reading.
  const warm = Math.min(10_000, Math.max(100, opts.heapN >>> 4));
  for (let i = 0; i < warm; i++) op();
  Bun.gc(true);
  const h0 = process.memoryUsage().heapUsed;
  const deadline = performance.now() + opts.heapMs;
  let n = 0;
  while (n < opts.heapN) {
    op();
    n++;
    if ((n & 255) === 0 && performance.now() > deadline) break;
  }
  Bun.gc(true);
  const h1 = process.memoryUsage().heapUsed;
  return { steady, bytesPerOp: (h1 - h0) / n, n };
}

function parseArgs(argv: string[]): Options {
  const opts: Options = { json: false, filter: undefined, heapN: 100_000, heapMs: 1500 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--json") opts.json = true;
    else if (a === "--filter") opts.filter = new RegExp(value());
    else if (a === "--heap-n") opts.heapN = Number(value());
    else if (a === "--heap-ms") opts.heapMs = Number(value());
    else throw new Error(`unknown argument ${a} (expected --json, --filter REGEX, --heap-n N, --heap-ms MS)`);
  }
  if (!(opts.heapN > 0) || !(opts.heapMs > 0)) throw new Error("--heap-n and --heap-ms must be positive");
  return opts;
}

function fmtNs(ns: number): string {
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(2)} µs`;
  return `${ns.toFixed(2)} ns`;
}

function printTable(rows: Row[]): void {
  const head = ["benchmark", "arg", "ns/iter", "GB/s", "Mops/s", "op", "heap B/op", "heap N", "note"];
  const body = rows.map((r) => [
    r.name,
    r.arg,
    fmtNs(r.nsPerIter),
    r.gbps === null ? "-" : r.gbps.toFixed(2),
    r.mopsPerSec >= 100 ? r.mopsPerSec.toFixed(0) : r.mopsPerSec.toFixed(3),
    r.unit,
    r.heapBytesPerOp.toFixed(2),
    String(r.heapN),
    r.note,
  ]);
  const right = new Set([2, 3, 4, 6, 7]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  console.log("");
  console.log("GB/s = payload bytes per iteration / mean ns per iteration; heap B/op = heapUsed growth after full GC");
  console.log(line(head));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const b of body) console.log(line(b));
}

/** Runs the mitata benches registered by `modules`, then the throughput table and heap checks. */
export async function runMicro(modules: readonly BenchModule[], argv: string[] = process.argv.slice(2)): Promise<void> {
  const opts = parseArgs(argv);
  const byName = new Map<string, Case<any>>();
  for (const m of modules) for (const c of m.cases) byName.set(c.name, c);

  const started = performance.now();
  const result = await run({ format: "mitata", ...(opts.filter ? { filter: opts.filter } : {}) });
  const benchMs = performance.now() - started;

  const rows: Row[] = [];
  const targets: { label: string; gbps: number | null; goal: number; met: boolean }[] = [];
  for (const trial of result.benchmarks) {
    const c = byName.get(trial.alias);
    if (!c) continue;
    for (const r of trial.runs) {
      if (!r.stats) continue;
      const value = c.arg in r.args ? r.args[c.arg] : undefined;
      const heap = measureHeap(c, value, opts);
      const { steady } = heap;
      const ns = r.stats.avg;
      const gbps = steady.bytes > 0 ? steady.bytes / ns : null;
      const row: Row = {
        name: c.name.replace(/\s*\S*\$\S+/g, "").trim() || c.name,
        arg: typeof value === "number" ? fmtSize(value) : String(value ?? ""),
        unit: steady.unit,
        bytesPerIter: steady.bytes,
        nsPerIter: ns,
        nsPerIterP50: r.stats.p50,
        gbps,
        mopsPerSec: 1e3 / ns,
        heapBytesPerOp: heap.bytesPerOp,
        heapN: heap.n,
        note: steady.note ?? "",
      };
      rows.push(row);
      (r as typeof r & { micro: object }).micro = {
        bytesPerIter: row.bytesPerIter,
        unit: row.unit,
        gbps: row.gbps,
        mopsPerSec: row.mopsPerSec,
        heapBytesPerOp: row.heapBytesPerOp,
        heapN: row.heapN,
        note: row.note,
      };
      if (c.target && c.target.value === value) {
        targets.push({ label: c.target.label, gbps, goal: c.target.gbps, met: gbps !== null && gbps >= c.target.gbps });
      }
    }
  }

  printTable(rows);
  for (const t of targets) {
    const got = t.gbps === null ? "n/a" : `${t.gbps.toFixed(2)} GB/s`;
    const verdict = t.met
      ? "met"
      : `NOT met: ${t.gbps === null ? "" : `${(t.goal / t.gbps).toFixed(2)}× short (${(t.goal - t.gbps).toFixed(2)} GB/s)`}`;
    console.log(`\ntarget: ${t.label} ≥ ${t.goal} GB/s: ${got}, ${verdict}`);
  }
  const totalMs = performance.now() - started;
  console.log(`\n${rows.length} runs; mitata ${(benchMs / 1000).toFixed(1)} s, total ${(totalMs / 1000).toFixed(1)} s`);

  if (opts.json) {
    const dir = join(import.meta.dir, "results");
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "micro.json");
    const out = {
      layout: (result as typeof result & { layout?: unknown }).layout,
      benchmarks: result.benchmarks,
      context: result.context,
      micro: { heapN: opts.heapN, heapMs: opts.heapMs, benchMs, totalMs, targets, rows },
    };
    // mitata's own json replacer with debug and samples turned off; errors become {message, stack}.
    const json = JSON.stringify(out, (k, v) => {
      if (k === "debug") return "";
      if (k === "samples") return null;
      return v instanceof Error ? { message: String(v.message), stack: v.stack } : v;
    });
    writeFileSync(file, json + "\n");
    console.log(`wrote ${file}`);
  }
}

async function main(): Promise<void> {
  const files = [...new Bun.Glob("*.bench.ts").scanSync({ cwd: import.meta.dir })].sort();
  const modules: BenchModule[] = [];
  for (const f of files) modules.push((await import(join(import.meta.dir, f))) as BenchModule);
  await runMicro(modules);
}

// No top-level await: bench files import helpers from this module, and a module still evaluating
// (awaiting their dynamic import) would deadlock them.
if (import.meta.main) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
