/**
 * StatsSource: what a proxy exposes to the operations endpoints (/metrics, /api/sessions, the
 * dashboard, SIGUSR1). The proxies implement it; everything in src/ops reads only this interface, so
 * the endpoints are tested with a fake source and the proxies can change freely behind it.
 *
 * Snapshots are plain data, taken when a scrape or page asks (never pushed), so a proxy pays nothing
 * while nobody looks. Session ids and addresses appear in /api/sessions only, never as metric labels.
 */

/** One stripe of a live session. */
export interface StripeSnapshot {
  index: number;
  /** Carrying traffic now (connected, handshake done, not declared dead). */
  usable: boolean;
  /** Measured send rate, bytes per second. */
  rateBytesPerSecond: number;
  /** Bytes sent on this stripe and not yet confirmed by the peer. */
  inflightBytes: number;
  /** Smoothed round-trip time in seconds (0 until measured). */
  rttSeconds: number;
  /** Times the stripe held up in-order delivery and had what it carried re-sent on the others. */
  stalls: number;
  /** Bytes it carried that were queued to be sent again on the others at those stalls. */
  resentBytes: number;
  /** Bytes written to it and received from it (frames, after the handshake). */
  sentBytes: number;
  receivedBytes: number;
  /** The scheduler's view, when it reports one (issue 11): minimum RTT, queue (smoothed − minimum), in-flight cap. */
  minRttSeconds?: number;
  queueSeconds?: number;
  capBytes?: number;
}

/** One live session. */
export interface SessionSnapshot {
  /** Short hex id, as in the logs. */
  id: string;
  /** The listener it arrived on ("0.0.0.0:7000"). */
  listener: string;
  /** The app's address (client side) or the client proxy's (server side). */
  remote: string;
  /** Where the server connected the session (server side). */
  target?: string;
  /** When it opened, ms since the epoch. */
  startedAt: number;
  /** App bytes client → server so far. */
  bytesUp: number;
  /** App bytes server → client so far. */
  bytesDown: number;
  /** Unacknowledged bytes this session holds for re-sending. */
  sendBufferBytes: number;
  /** Out-of-order bytes waiting in its reorder buffer. */
  reorderBytes: number;
  stripeDeaths: number;
  resentBytes: number;
  stripes: StripeSnapshot[];
}

/** A histogram's state: `counts[i]` observations ≤ `bounds[i]` (not cumulative), `counts[bounds.length]` above. */
export interface HistogramSnapshot {
  bounds: readonly number[];
  counts: readonly number[];
  sum: number;
  count: number;
}

/**
 * Cumulative figures since the process started. Reason maps use a small fixed set of reason words
 * (they become label values). A field a source does not count yet is left out, and its metric is
 * then not exported (rather than exported as a false zero).
 */
export interface CounterSnapshot {
  /** Sessions opened. */
  sessionsTotal: number;
  /** Sessions refused, by reason ("limit", "draining", ...). */
  sessionsRefused: Readonly<Record<string, number>>;
  /** App bytes client → server, live sessions included. */
  bytesUp: number;
  /** App bytes server → client, live sessions included. */
  bytesDown: number;
  /** Bytes sent a second time after a stripe died or stalled. */
  resentBytes: number;
  /** Bytes of ACK frames sent. */
  ackBytes: number;
  /** Stripes lost, by reason ("reset", "silent", "closed", ...). */
  stripeDeaths: Readonly<Record<string, number>>;
  /** Stripes re-dialled (client). */
  redials: number;
  /** Stripe handshakes rejected, by reason ("bad-auth", "replay", ...). */
  handshakeRejections: Readonly<Record<string, number>>;
  /** Round-trip time samples of every stripe, seconds. */
  stripeRttSeconds: HistogramSnapshot;
  /** Lifetimes of ended sessions, seconds. */
  sessionDurationSeconds: HistogramSnapshot;
}

/** The shared memory budget of a proxy's sessions. */
export interface BudgetSnapshot {
  usedBytes: number;
  limitBytes: number;
}

/** What a proxy implements for the operations endpoints. Every method must be cheap and bounded. */
export interface StatsSource {
  readonly role: "server" | "client";
  /** Live sessions with per-stripe figures. */
  sessions(): readonly SessionSnapshot[];
  /** Cumulative counters (fields not counted yet left out). */
  counters(): Partial<CounterSnapshot>;
  /** The buffer budget, when the proxy has one. */
  budget(): BudgetSnapshot | undefined;
  /**
   * Brings the snapshots up to date before a scrape reads them, when they come from elsewhere (the
   * workers of a `--workers` server, over IPC). The endpoints await it; a local source has none.
   */
  refresh?(): Promise<void>;
}

/** Several sources as one (one per listener of a process). */
export function combineSources(sources: readonly StatsSource[]): StatsSource {
  if (sources.length === 1) return sources[0]!;
  const role = sources[0]?.role ?? "server";
  return {
    role,
    sessions: () => sources.flatMap((s) => s.sessions()),
    counters: () => {
      const all = sources.map((s) => s.counters());
      const out: Partial<CounterSnapshot> = {};
      const num = ["sessionsTotal", "bytesUp", "bytesDown", "resentBytes", "ackBytes", "redials"] as const;
      for (const k of num) if (all.some((c) => c[k] !== undefined)) out[k] = all.reduce((t, c) => t + (c[k] ?? 0), 0);
      const maps = ["sessionsRefused", "stripeDeaths", "handshakeRejections"] as const;
      for (const k of maps) {
        if (!all.some((c) => c[k] !== undefined)) continue;
        const m: Record<string, number> = {};
        for (const c of all) for (const [r, n] of Object.entries(c[k] ?? {})) m[r] = (m[r] ?? 0) + n;
        out[k] = m;
      }
      for (const k of ["stripeRttSeconds", "sessionDurationSeconds"] as const) {
        const hs = all.map((c) => c[k]).filter((h) => h !== undefined);
        if (hs.length > 0) out[k] = mergeHistograms(hs);
      }
      return out;
    },
    budget: () => {
      const bs = sources.map((s) => s.budget()).filter((b) => b !== undefined);
      if (bs.length === 0) return undefined;
      return { usedBytes: bs.reduce((t, b) => t + b.usedBytes, 0), limitBytes: bs.reduce((t, b) => t + b.limitBytes, 0) };
    },
  };
}

/** Adds histograms with the same bounds. */
export function mergeHistograms(hs: readonly HistogramSnapshot[]): HistogramSnapshot {
  const bounds = hs[0]!.bounds;
  const counts = new Array<number>(bounds.length + 1).fill(0);
  let sum = 0;
  let count = 0;
  for (const h of hs) {
    if (h.bounds.length !== bounds.length || h.bounds.some((b, i) => b !== bounds[i])) throw new Error("histograms with different bounds");
    h.counts.forEach((c, i) => (counts[i]! += c));
    sum += h.sum;
    count += h.count;
  }
  return { bounds, counts, sum, count };
}

/** Bucket bounds for stripe round-trip times, seconds (1 ms … 10 s). */
export const RTT_BUCKETS: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Bucket bounds for session lifetimes, seconds (100 ms … 1 day). */
export const DURATION_BUCKETS: readonly number[] = [0.1, 1, 10, 60, 300, 1800, 3600, 21_600, 86_400];

/**
 * A fixed-bucket histogram a proxy records into (O(buckets) per observation, fixed memory) and hands
 * out as a snapshot.
 */
export class HistogramRecorder {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(readonly bounds: readonly number[]) {
    for (let i = 1; i < bounds.length; i++) if (!(bounds[i]! > bounds[i - 1]!)) throw new Error("histogram bounds must increase");
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  /** Records one value (NaN is ignored: it would poison the sum). */
  observe(v: number): void {
    if (Number.isNaN(v)) return;
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }

  snapshot(): HistogramSnapshot {
    return { bounds: this.bounds, counts: [...this.counts], sum: this.sum, count: this.count };
  }
}
