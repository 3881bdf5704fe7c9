/**
 * The contracts of the end-to-end suite: what a run is (RunSpec), what it measured (RunResult), what a
 * scenario module exports (Scenario), a figure before and after judging (Figure, Row), and the run's
 * metadata (Meta). RunSpec, RunResult, Row and Meta are written to bench/results/*.json as they are.
 */

import type { FlagSpec, FlagValue } from "./flags.ts";
import type { Summary } from "./stats.ts";

/** Which way the payload goes: app → target, target → app, or both (the target echoes). */
export type Dir = "up" | "down" | "echo";

/** Processes of the standard chain; each can be given extra command-line arguments (RunSpec.args). */
export type Role = "target" | "link" | "relay" | "fault" | "server" | "client" | "app";

/** Everything that defines a run; the same spec is run --runs times. */
export interface RunSpec {
  /** Unique within the suite; the key of the results map. */
  key: string;
  scenario: string;
  /** Short name in progress lines. */
  label: string;
  dir: Dir;
  /** direct: app→target; link: app→link→target; relay: app→relay→target; pair: app→client→[mid]→server→target. */
  path: "direct" | "link" | "relay" | "pair";
  mid?: "link" | "fault" | "none";
  /** Per-connection caps in MB/s, assigned in turn (link or fault proxy). */
  rates?: number[];
  delayMs?: number;
  stripes?: number;
  scheduler?: string;
  /** Bytes per connection (each way for echo). */
  bytes: number;
  conns: number;
  hash: boolean;
  /** The sender stops early (then FIN) after this long: bounds runs that are far below ideal. 0 = never. */
  deadlineMs: number;
  /** The whole transfer must finish within this, else the run is killed and reported failed. */
  timeoutMs: number;
  resetEveryMs?: number;
  /** Process names whose CPU time and peak RSS are recorded ("app": CPU only, from its own report). */
  measure?: string[];
  /** Extra command-line arguments per process, appended to the standard ones (e.g. server: ["--workers", "2"]). */
  args?: Partial<Record<Role, string[]>>;
  /**
   * Other scripts in place of bench/tools/app.ts or target.ts (paths relative to the repository, under
   * bench/tools so the snapshot has them). They take the standard tool's flags (plus `args`) and
   * report the same JSON events.
   */
  tools?: { app?: string; target?: string };
}

/** What one run measured. */
export interface RunResult {
  run: number;
  ok: boolean;
  error?: string;
  /** Payload bytes delivered (each way for echo). */
  bytes: number;
  seconds: number;
  /** bytes / seconds, B/s. */
  rate: number;
  /** Hashes (or, unhashed, byte counts) matched and every stream ended cleanly. */
  intact: boolean;
  sessions?: { total: number; intact: number };
  /** CPU seconds during the transfer, per measured process. */
  cpu: Record<string, number>;
  /** Peak RSS (VmHWM) in bytes, per measured process. */
  rss: Record<string, number>;
  resets?: number;
  /** Stripe deaths the client logged at session end (null: its log line did not come in time). */
  stripeDeaths?: number | null;
  /** CPU seconds of every process in the chain (app included) over the transfer / transfer seconds. */
  coresBusy?: number;
  /** Scenario-specific figures (Scenario.collect), e.g. an app's round-trip percentiles. */
  figures?: Record<string, number>;
  /** Tails of the components' logs, kept for failed runs. */
  logs?: Record<string, string[]>;
}

/** Runs of each spec, by RunSpec.key. */
export type Results = Map<string, RunResult[]>;

/** The suite's options (written to the JSON as `meta.options`). */
export interface Options {
  quick: boolean;
  runs: number;
  capMBps: number;
  delayMs: number;
  stripes: number[];
  scenarios: string[];
  /** Values of scenario-specific flags (Scenario.flags), by flag name; absent when none was given. */
  extra?: Record<string, FlagValue>;
}

/** Option names a scenario can say it reads (shown in --help). */
export type SuiteOption = "cap" | "delay" | "stripes" | "quick";

/** What a scenario plans its runs from. */
export interface PlanCtx {
  o: Options;
  /** Target duration of a capped run, s (4; 1 with --quick). */
  T: number;
}

/** What a scenario reports from: the plan plus the machine and every run's results. */
export interface ReportCtx extends PlanCtx {
  /** CPUs of the machine the runs ran on (from the metadata, so a report can be rebuilt elsewhere). */
  cpus: number;
  results: Results;
}

/** An SVG chart file: `name` without the --quick prefix. */
export interface Chart {
  name: string;
  svg: string;
}

/** How many runs of a figure there were, how many were good, and why the others failed. */
export interface Tally {
  total: number;
  ok: number;
  /** The error of each failed run. */
  errors: string[];
}

/** A target a figure must meet. */
export type Target =
  /** value / reference ≥ min (a run that failed misses it). */
  | { kind: "ratio"; min: number }
  /** The worst (largest) run < below. */
  | { kind: "max"; below: number; text: string }
  /** The median of the runs < below (a typical figure, as a target stated on medians of 3). */
  | { kind: "median"; below: number; text: string }
  /** The value equals `to` exactly (counts). */
  | { kind: "equal"; to: number; text: string };

/** One measured figure, before judging. */
export interface Figure {
  scenario: string;
  case: string;
  unit: string;
  value: Summary;
  /** Overrides the median cell (e.g. "300/300"). */
  text?: string;
  tally: Tally;
  /** What the ratio is taken against, in the figure's unit. */
  reference?: { label: string; value: number | null };
  target?: Target;
  note: string;
}

/** One line of the results table: a judged figure. */
export interface Row {
  scenario: string;
  case: string;
  unit: string;
  value: Summary;
  /** Overrides the median cell (e.g. "300/300"). */
  text?: string;
  /** e.g. "3" or "2/3"; failed runs make the row fail. */
  runs: string;
  /** What the ratio is taken against, as text. */
  reference: string;
  ratio: number | null;
  /** e.g. "≥ 0.90"; empty when no target exists. */
  target: string;
  /** true: met; false: missed or a run failed; null: nothing to judge. */
  pass: boolean | null;
  note: string;
}

/** The events of one standard transfer, for Scenario.collect. */
export interface TransferEvents {
  spec: RunSpec;
  /** The app's {"event":"done"} report. */
  done: Record<string, unknown>;
  /** The target's {"event":"conn"} reports. */
  targetConns: Record<string, unknown>[];
}

/**
 * A scenario module's export (bench/scenarios/<name>.ts), registered in bench/scenarios/index.ts.
 * Everything except `run` is pure: the report can be rebuilt from the results JSON alone.
 */
export interface Scenario {
  /** Name for --scenario and the table's first column. */
  name: string;
  /** One line for --help. */
  description: string;
  /** Suite options it reads (--help shows them). */
  reads: readonly SuiteOption[];
  /** Flags of its own (values in Options.extra); names must not clash with other scenarios'. */
  flags?: readonly FlagSpec[];
  /** Unit of the rate in progress lines; GB/s also shows CPU per GiB. */
  rateUnit: "MB/s" | "GB/s";
  /** The runs; each is repeated --runs times. */
  runs(c: PlanCtx): RunSpec[];
  /** How its figures are measured: one markdown bullet under the table. */
  measures(c: PlanCtx & { cpus: number }): string;
  /** Its rows of the table, each with its target where one exists (judged by lib/judge.ts). */
  figures(c: ReportCtx): Figure[];
  /** Charts, pure given the results. */
  charts?(c: ReportCtx, subtitle: string): Chart[];
  /** Extra figures from a standard transfer's events, stored in RunResult.figures. */
  collect?(ev: TransferEvents): Record<string, number>;
  /** Runs one spec some other way than the standard transfer (lib/chain.ts has the parts). */
  run?(spec: RunSpec, run: number): Promise<RunResult>;
  /**
   * Prepares the machine before the scenario's first run (e.g. installs a program it drives); lines
   * passed to `progress` appear in the suite's log. A failure here must not throw: the runs that need
   * what is missing report it instead.
   */
  setup?(c: PlanCtx, progress: (line: string) => void): Promise<void>;
}

/** Metadata of a suite run (`meta` in the JSON); the report header is made from it alone. */
export interface Meta {
  date: string;
  commit: string | null;
  srcUncommittedChanges: boolean;
  srcSha256: string;
  bun: string;
  cpus: number;
  cpuModel: string | null;
  loadavgStart: number;
  loadavgEnd: number;
  options: Options;
  transferSeconds: number;
  durationSeconds: number;
  scenarioSeconds: Record<string, number>;
}
