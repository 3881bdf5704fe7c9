/**
 * Prometheus metrics: a small registry (counters, gauges, histograms with fixed buckets, labels with a
 * bounded number of series) rendering the text exposition format 0.0.4, and the tcp-striper metric set
 * read from a StatsSource at each scrape.
 *
 * Conventions (prometheus.io/docs/practices/naming): one prefix `striper_`, base units in the name
 * (`_bytes`, `_seconds`), counters end in `_total`, dimensions as labels, and never a label whose
 * values grow without bound (no client addresses, no session ids): every labelled metric keeps at
 * most `maxSeries` label sets and folds the rest into one series labelled "other".
 */

import { type CounterSnapshot, DURATION_BUCKETS, type HistogramSnapshot, RTT_BUCKETS, type StatsSource } from "./stats.ts";

/** Label name → value. */
export type Labels = Readonly<Record<string, string>>;

type MetricType = "counter" | "gauge" | "histogram";

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/** Label sets per metric unless told otherwise. */
export const DEFAULT_MAX_SERIES = 32;
/** The value every label takes in the series that collects label sets beyond the limit. */
export const OVERFLOW_LABEL = "other";

/** Escapes a label value for the exposition format. */
function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Escapes HELP text. */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** Formats a sample value (integers exactly, ±Inf and NaN as Prometheus spells them). */
export function formatSample(v: number): string {
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  if (Number.isNaN(v)) return "NaN";
  return String(v);
}

function labelText(names: readonly string[], values: readonly string[], extra?: [string, string]): string {
  const parts = names.map((n, i) => `${n}="${escapeLabel(values[i]!)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabel(extra[1])}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

/**
 * Common part of every metric: name, help, label names and the bounded set of series: at most
 * `maxSeries` label sets, and beyond them one more series whose every label is "other".
 */
abstract class Metric<S> {
  protected readonly series = new Map<string, { values: string[]; state: S }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: MetricType,
    readonly labelNames: readonly string[] = [],
    readonly maxSeries = DEFAULT_MAX_SERIES,
  ) {
    if (!NAME_RE.test(name)) throw new Error(`bad metric name ${name}`);
    for (const l of labelNames) if (!LABEL_RE.test(l) || l.startsWith("__") || l === "le") throw new Error(`bad label name ${l}`);
  }

  protected abstract fresh(): S;

  /** The state of the series for `labels`, created on first use; past maxSeries, the overflow series. */
  protected get(labels: Labels = {}): S {
    const values = this.labelNames.map((n) => {
      const v = labels[n];
      if (v === undefined) throw new Error(`${this.name}: label ${n} missing`);
      return v;
    });
    const key = values.join("\u0000");
    let s = this.series.get(key);
    if (!s) {
      const other = this.labelNames.map(() => OVERFLOW_LABEL);
      const otherKey = other.join("\u0000");
      const held = this.series.size - (this.series.has(otherKey) ? 1 : 0);
      if (this.labelNames.length > 0 && held >= this.maxSeries) {
        s = this.series.get(otherKey);
        if (!s) this.series.set(otherKey, (s = { values: other, state: this.fresh() }));
      } else this.series.set(key, (s = { values, state: this.fresh() }));
    }
    return s.state;
  }

  /** Forgets every series (values read from a source are set again at each collection). */
  reset(): void {
    this.series.clear();
  }

  /** Number of label sets held. */
  get size(): number {
    return this.series.size;
  }

  protected abstract samples(values: readonly string[], state: S): string[];

  /** HELP, TYPE and the sample lines. */
  render(): string {
    const out = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`];
    for (const { values, state } of this.series.values()) out.push(...this.samples(values, state));
    return out.join("\n");
  }
}

/** A value that only goes up (or is set from a cumulative source). Name must end in `_total`. */
export class Counter extends Metric<{ v: number }> {
  constructor(name: string, help: string, labelNames: readonly string[] = [], maxSeries?: number) {
    super(name, help, "counter", labelNames, maxSeries);
    if (!name.endsWith("_total")) throw new Error(`counter ${name} must end in _total`);
  }
  protected fresh() {
    return { v: 0 };
  }
  inc(n = 1, labels?: Labels): void {
    if (!(n >= 0)) throw new Error(`${this.name}: a counter cannot go down`);
    this.get(labels).v += n;
  }
  /** Sets the series from a cumulative count kept elsewhere. */
  set(v: number, labels?: Labels): void {
    this.get(labels).v = v;
  }
  value(labels?: Labels): number {
    return this.get(labels).v;
  }
  protected samples(values: readonly string[], s: { v: number }): string[] {
    return [`${this.name}${labelText(this.labelNames, values)} ${formatSample(s.v)}`];
  }
}

/** A value that goes up and down. */
export class Gauge extends Metric<{ v: number }> {
  constructor(name: string, help: string, labelNames: readonly string[] = [], maxSeries?: number) {
    super(name, help, "gauge", labelNames, maxSeries);
  }
  protected fresh() {
    return { v: 0 };
  }
  set(v: number, labels?: Labels): void {
    this.get(labels).v = v;
  }
  value(labels?: Labels): number {
    return this.get(labels).v;
  }
  protected samples(values: readonly string[], s: { v: number }): string[] {
    return [`${this.name}${labelText(this.labelNames, values)} ${formatSample(s.v)}`];
  }
}

/** Fixed buckets; observed directly or loaded from a HistogramSnapshot. No labels. */
export class Histogram extends Metric<{ counts: number[]; sum: number; count: number }> {
  constructor(
    name: string,
    help: string,
    readonly bounds: readonly number[],
  ) {
    super(name, help, "histogram");
    for (let i = 1; i < bounds.length; i++) if (!(bounds[i]! > bounds[i - 1]!)) throw new Error(`${name}: bucket bounds must increase`);
  }
  protected fresh() {
    return { counts: new Array<number>(this.bounds.length + 1).fill(0), sum: 0, count: 0 };
  }
  observe(v: number): void {
    if (Number.isNaN(v)) return;
    const s = this.get();
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]!) i++;
    s.counts[i]!++;
    s.sum += v;
    s.count++;
  }
  /** Replaces the state with a snapshot recorded elsewhere (same bounds). */
  load(h: HistogramSnapshot): void {
    if (h.bounds.length !== this.bounds.length || h.bounds.some((b, i) => b !== this.bounds[i])) throw new Error(`${this.name}: snapshot has other bounds`);
    const s = this.get();
    s.counts = [...h.counts];
    s.sum = h.sum;
    s.count = h.count;
  }
  protected samples(_values: readonly string[], s: { counts: number[]; sum: number; count: number }): string[] {
    const out: string[] = [];
    let cumulative = 0;
    this.bounds.forEach((b, i) => {
      cumulative += s.counts[i]!;
      out.push(`${this.name}_bucket${labelText([], [], ["le", formatSample(b)])} ${cumulative}`);
    });
    out.push(`${this.name}_bucket{le="+Inf"} ${s.count}`);
    out.push(`${this.name}_sum ${formatSample(s.sum)}`, `${this.name}_count ${s.count}`);
    return out;
  }
}

type AnyMetric = Counter | Gauge | Histogram;

/** A set of metrics rendered together; `collect` hooks run before each render. */
export class Registry {
  private readonly metrics = new Map<string, AnyMetric>();
  private readonly collectors: (() => void)[] = [];

  /** Adds a metric (names are unique). Returns it. */
  add<M extends AnyMetric>(m: M): M {
    if (this.metrics.has(m.name)) throw new Error(`metric ${m.name} registered twice`);
    this.metrics.set(m.name, m);
    return m;
  }

  /** Runs `fn` before every render (to pull values from a source). */
  onCollect(fn: () => void): void {
    this.collectors.push(fn);
  }

  /** The metric named `name`, if registered. */
  get(name: string): AnyMetric | undefined {
    return this.metrics.get(name);
  }

  /** The text exposition (format 0.0.4), newline-terminated. Metrics with no series are left out. */
  render(): string {
    for (const c of this.collectors) c();
    const blocks: string[] = [];
    for (const m of this.metrics.values()) if (m.size > 0) blocks.push(m.render());
    return `${blocks.join("\n")}\n`;
  }
}

/** The Content-Type of the text exposition. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Static facts about the process, for `striper_build_info` and the start time. */
export interface ProcessInfo {
  version: string;
  mode: string;
  /** When the process started, ms since the epoch. */
  startedAt: number;
}

/** The live state the lifecycle reports (see lifecycle.ts). */
export type HealthState = "accepting" | "draining" | "stopped";

/**
 * The tcp-striper metric set over a StatsSource (or none: relay, or before a proxy exists). Counters
 * a source leaves out are not exported. `health` and `memory` are injectable for tests.
 */
export function striperMetrics(
  source: StatsSource | undefined,
  info: ProcessInfo,
  health: () => HealthState,
  memory: () => { rss: number; heapUsed: number; arrayBuffers: number } = () => process.memoryUsage(),
): Registry {
  const r = new Registry();
  const buildInfo = r.add(new Gauge("striper_build_info", "Build and mode of this process; always 1", ["version", "bun", "mode"], 1));
  const startTime = r.add(new Gauge("striper_process_start_time_seconds", "When the process started, seconds since the Unix epoch"));
  const draining = r.add(new Gauge("striper_draining", "1 while the process drains (refuses new sessions, finishes live ones), else 0"));
  const rss = r.add(new Gauge("striper_process_resident_memory_bytes", "Resident set size of the process"));
  const heap = r.add(new Gauge("striper_process_heap_used_bytes", "JavaScript heap in use"));
  const arrayBuffers = r.add(new Gauge("striper_process_array_buffers_bytes", "Memory held by array buffers (socket reads, frame batches)"));

  const sessionsOpen = r.add(new Gauge("striper_sessions_open", "Sessions open now"));
  const stripesOpen = r.add(new Gauge("striper_stripes_open", "Stripes carrying traffic now, over all sessions"));
  const sessionsTotal = r.add(new Counter("striper_sessions_total", "Sessions opened"));
  const refused = r.add(new Counter("striper_sessions_refused_total", "Sessions refused, by reason", ["reason"]));
  const bytes = r.add(new Counter("striper_bytes_total", "App bytes carried, by direction (up: client to server); counted as the client takes them from apps and as the server delivers them to targets, and the other way for down", ["direction"], 2));
  const resent = r.add(new Counter("striper_resent_bytes_total", "Bytes sent again after a stripe died or stalled"));
  const acks = r.add(new Counter("striper_ack_bytes_total", "Bytes of ACK frames sent"));
  const deaths = r.add(new Counter("striper_stripe_deaths_total", "Stripes lost, by reason", ["reason"]));
  const redials = r.add(new Counter("striper_redials_total", "Stripes re-dialled by the client"));
  const rejections = r.add(new Counter("striper_handshake_rejections_total", "Stripe handshakes rejected, by reason", ["reason"]));
  const budgetUsed = r.add(new Gauge("striper_buffer_used_bytes", "Unacknowledged bytes all sessions hold now (the shared budget in use)"));
  const budgetLimit = r.add(new Gauge("striper_buffer_limit_bytes", "Limit of the shared buffer budget"));
  const rtt = r.add(new Histogram("striper_stripe_rtt_seconds", "Round-trip time samples of stripes", RTT_BUCKETS));
  const duration = r.add(new Histogram("striper_session_duration_seconds", "Lifetimes of ended sessions", DURATION_BUCKETS));

  // Reasons come whole from the source each time: rebuilt so that reasons past the series limit add
  // up in "other" instead of overwriting each other.
  const setMap = (c: Counter, m: Readonly<Record<string, number>> | undefined): void => {
    if (m === undefined) return;
    c.reset();
    for (const [reason, n] of Object.entries(m)) c.inc(n, { reason });
  };

  r.onCollect(() => {
    buildInfo.set(1, { version: info.version, bun: Bun.version, mode: info.mode });
    startTime.set(Math.floor(info.startedAt / 1000));
    draining.set(health() === "draining" ? 1 : 0);
    const mem = memory();
    rss.set(mem.rss);
    heap.set(mem.heapUsed);
    arrayBuffers.set(mem.arrayBuffers);
    if (!source) return;
    const live = source.sessions();
    sessionsOpen.set(live.length);
    stripesOpen.set(live.reduce((t, s) => t + s.stripes.filter((x) => x.usable).length, 0));
    const c: Partial<CounterSnapshot> = source.counters();
    if (c.sessionsTotal !== undefined) sessionsTotal.set(c.sessionsTotal);
    setMap(refused, c.sessionsRefused);
    if (c.bytesUp !== undefined) bytes.set(c.bytesUp, { direction: "up" });
    if (c.bytesDown !== undefined) bytes.set(c.bytesDown, { direction: "down" });
    if (c.resentBytes !== undefined) resent.set(c.resentBytes);
    if (c.ackBytes !== undefined) acks.set(c.ackBytes);
    setMap(deaths, c.stripeDeaths);
    if (c.redials !== undefined) redials.set(c.redials);
    setMap(rejections, c.handshakeRejections);
    const b = source.budget();
    if (b) {
      budgetUsed.set(b.usedBytes);
      budgetLimit.set(b.limitBytes);
    }
    if (c.stripeRttSeconds) rtt.load(c.stripeRttSeconds);
    if (c.sessionDurationSeconds) duration.load(c.sessionDurationSeconds);
  });
  return r;
}
