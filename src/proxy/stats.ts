/**
 * ProxyStats: what a client or server proxy exposes to the operations endpoints (the StatsSource of
 * src/ops/stats.ts), and the count of live sessions a drain waits on.
 *
 * The proxy tells it when a session opens and ends, when a new session is refused and when a stripe is
 * re-dialled; nothing is counted per byte. A snapshot reads the live sessions' own figures
 * (StripedPipe.metrics() and .stats) when someone asks, and adds the final figures of ended sessions,
 * kept as totals. Stripe round-trip times go into a histogram as samples of each stripe's smoothed RTT:
 * once a second while any session is live, and once more when its session ends — so the histogram does
 * not depend on how often it is scraped, and a session shorter than a second is counted too.
 */

import type { ErrorCode } from "../errors.ts";
import { DURATION_BUCKETS, HistogramRecorder, RTT_BUCKETS, type CounterSnapshot, type SessionSnapshot, type StatsSource, type StripeSnapshot } from "../ops/stats.ts";
import type { SessionMetrics, StripedPipe } from "../pipe/striped.ts";
import type { SendBudget } from "../stripe/budget.ts";
import type { StripeMetrics } from "../stripe/metrics.ts";
import { formatBytes, type LogEvent } from "./log.ts";
import { guardedInterval } from "../util/guard.ts";

/** How often live stripes' RTTs are sampled into the histogram (ms). */
export const RTT_SAMPLE_MS = 1000;

/** A metric label for an error code: "E_STRIPE_SILENT" → "silent", "ECONNRESET" → "econnreset". */
export function reasonLabel(code: ErrorCode | string): string {
  return code.replace(/^E_STRIPE_/, "").replace(/^E_/, "").toLowerCase().replace(/_/g, "-");
}

/** Options of a ProxyStats. */
export interface ProxyStatsOptions {
  role: "server" | "client";
  budget: SendBudget;
  /** Stripe handshakes refused silently, by reason (the server's Rejections counts). */
  rejections?: () => Readonly<Record<string, number>>;
  /** Monotonic ms (default performance.now) and wall-clock ms (default Date.now); tests pass their own. */
  now?: () => number;
  wall?: () => number;
  /** Period of the RTT sampling (default RTT_SAMPLE_MS; 0: never, tests call sample()). */
  sampleMs?: number;
}

/** What the proxy says about a session when it opens. */
export interface SessionInfo {
  /** Short hex id, as in the logs. */
  id: string;
  /** The app's address (client) or the client proxy's (server). */
  remote: string;
  /** Where the server connects it. */
  target?: string;
}

interface Live extends SessionInfo {
  session: StripedPipe;
  /** Epoch ms and monotonic ms at open. */
  startedAt: number;
  started: number;
}

/** Totals of ended sessions. */
interface Totals {
  bytesUp: number;
  bytesDown: number;
  resentBytes: number;
  ackBytes: number;
  deaths: Record<string, number>;
}

/** One proxy's statistics; see the module comment. */
export class ProxyStats implements StatsSource {
  readonly role: "server" | "client";
  /** The listener's address, for snapshots (set once the proxy listens). */
  listener = "";
  private readonly live = new Map<StripedPipe, Live>();
  private readonly ended: Totals = { bytesUp: 0, bytesDown: 0, resentBytes: 0, ackBytes: 0, deaths: {} };
  private sessionsTotal = 0;
  private redials = 0;
  private readonly refusedBy: Record<string, number> = {};
  private readonly rtt = new HistogramRecorder(RTT_BUCKETS);
  private readonly durations = new HistogramRecorder(DURATION_BUCKETS);
  private readonly now: () => number;
  private readonly wall: () => number;
  private readonly sampleMs: number;
  private sampler: Timer | undefined;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: ProxyStatsOptions) {
    this.role = opts.role;
    this.now = opts.now ?? (() => performance.now());
    this.wall = opts.wall ?? Date.now;
    this.sampleMs = opts.sampleMs ?? RTT_SAMPLE_MS;
  }

  /** Live sessions. */
  get liveSessions(): number {
    return this.live.size;
  }

  /** A session opened. */
  opened(session: StripedPipe, info: SessionInfo): void {
    this.live.set(session, { ...info, session, startedAt: this.wall(), started: this.now() });
    this.sessionsTotal++;
    if (this.sampler === undefined && this.sampleMs > 0) {
      this.sampler = guardedInterval("rtt sampling", () => this.sample(), this.sampleMs);
      this.sampler.unref?.();
    }
  }

  /** A session ended: its final figures join the totals. Wakes idle() waiters when it was the last. */
  closed(session: StripedPipe): void {
    const l = this.live.get(session);
    if (l === undefined) return;
    this.live.delete(session);
    const m = session.metrics();
    const [up, down] = this.bytes(session);
    this.ended.bytesUp += up;
    this.ended.bytesDown += down;
    this.ended.resentBytes += m.resentBytes;
    this.ended.ackBytes += m.ackBytes;
    addDeaths(this.ended.deaths, m);
    // Its stripes' last RTTs: a session shorter than the sampling period is sampled once, at its end.
    for (const p of m.perStripe) if (p.rtt > 0) this.rtt.observe(p.rtt / 1000);
    this.durations.observe((this.now() - l.started) / 1000);
    if (this.live.size > 0) return;
    clearInterval(this.sampler);
    this.sampler = undefined;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** A new session was refused (server: its OPEN; client: it could not open), for `reason`. */
  refused(reason: string): void {
    this.refusedBy[reason] = (this.refusedBy[reason] ?? 0) + 1;
  }

  /** A stripe was dialled again (client), or a re-dialled stripe joined (server). */
  redialed(): void {
    this.redials++;
  }

  /** Resolves once no session is live (at once when none is). */
  idle(): Promise<void> {
    if (this.live.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Records the smoothed RTT of every live stripe that has one (the sampling timer calls it). */
  sample(): void {
    for (const l of this.live.values()) {
      if (l.session.closed) continue;
      for (const p of l.session.metrics().perStripe) if (p.rtt > 0) this.rtt.observe(p.rtt / 1000);
    }
  }

  /** Stops the sampling timer (the proxy stopped). */
  close(): void {
    clearInterval(this.sampler);
    this.sampler = undefined;
  }

  // --- StatsSource ---------------------------------------------------------------------------------

  sessions(): SessionSnapshot[] {
    const out: SessionSnapshot[] = [];
    for (const l of this.live.values()) {
      const m = l.session.metrics();
      const [bytesUp, bytesDown] = this.bytes(l.session);
      const usable = !l.session.closed;
      out.push({
        id: l.id,
        listener: this.listener,
        remote: l.remote,
        ...(l.target !== undefined ? { target: l.target } : {}),
        startedAt: l.startedAt,
        bytesUp,
        bytesDown,
        sendBufferBytes: m.sendBufferBytes,
        reorderBytes: m.reorderBytes,
        stripeDeaths: m.stripeDeaths,
        resentBytes: m.resentBytes,
        stripes: m.perStripe.map((p) => stripeSnapshot(p, usable)),
      });
    }
    return out;
  }

  counters(): CounterSnapshot {
    const t = this.ended;
    let { bytesUp, bytesDown, resentBytes, ackBytes } = t;
    const deaths = { ...t.deaths };
    for (const l of this.live.values()) {
      const m = l.session.metrics();
      const [up, down] = this.bytes(l.session);
      bytesUp += up;
      bytesDown += down;
      resentBytes += m.resentBytes;
      ackBytes += m.ackBytes;
      addDeaths(deaths, m);
    }
    return {
      sessionsTotal: this.sessionsTotal,
      sessionsRefused: { ...this.refusedBy },
      bytesUp,
      bytesDown,
      resentBytes,
      ackBytes,
      stripeDeaths: deaths,
      redials: this.redials,
      handshakeRejections: { ...(this.opts.rejections?.() ?? {}) },
      stripeRttSeconds: this.rtt.snapshot(),
      sessionDurationSeconds: this.durations.snapshot(),
    };
  }

  budget(): { usedBytes: number; limitBytes: number } {
    return { usedBytes: this.opts.budget.used, limitBytes: this.opts.budget.limit };
  }

  /** App bytes [up, down] of a session: up is client → server, whichever side counts. */
  private bytes(s: StripedPipe): [number, number] {
    return this.role === "client" ? [s.stats.bytesOut, s.stats.bytesIn] : [s.stats.bytesIn, s.stats.bytesOut];
  }
}

/** Adds a session's stripe deaths to `into`, by reason label. */
function addDeaths(into: Record<string, number>, m: SessionMetrics): void {
  for (const [code, n] of Object.entries(m.stripeDeathsByReason)) {
    const r = reasonLabel(code);
    into[r] = (into[r] ?? 0) + (n ?? 0);
  }
}

function stripeSnapshot(p: StripeMetrics, usable: boolean): StripeSnapshot {
  return {
    index: p.index,
    usable,
    rateBytesPerSecond: p.rate,
    inflightBytes: p.inflight,
    rttSeconds: p.rtt / 1000,
    stalls: p.stalls,
    resentBytes: p.resent,
    sentBytes: p.sent,
    receivedBytes: p.received,
    // The scheduler's view (issue 11): minimum RTT and queue once measured, the cap in modes that have one.
    ...(p.minRtt > 0 ? { minRttSeconds: p.minRtt / 1000, queueSeconds: p.queue / 1000 } : {}),
    ...(p.cap > 0 ? { capBytes: p.cap } : {}),
  };
}

// --- SIGUSR1 -------------------------------------------------------------------------------------------

const rate = (bps: number): string => `${(bps / 1e6).toFixed(2)} MB/s`;
const ms = (s: number): string => `${(s * 1000).toFixed(1)} ms`;

/**
 * The SIGUSR1 statistics of some sessions: per session a line with its totals, then a line per stripe
 * (rate, in flight, RTT, stalls, re-sent, sent, received). Every line names the session, so it can be
 * grepped; as JSON the figures are fields.
 */
export function statsEvents(sessions: readonly SessionSnapshot[], now = Date.now()): LogEvent[] {
  const out: LogEvent[] = [];
  for (const s of sessions) {
    const usable = s.stripes.filter((x) => x.usable).length;
    const age = Math.max(0, (now - s.startedAt) / 1000);
    out.push({
      event: "stats.session",
      session: s.id,
      remote: s.remote,
      msg:
        `session ${s.id} ${s.remote}${s.target ? ` -> ${s.target}` : ""} age ${age.toFixed(1)} s up ${formatBytes(s.bytesUp)} down ${formatBytes(s.bytesDown)} ` +
        `stripes ${usable}/${s.stripes.length} store ${formatBytes(s.sendBufferBytes)} reorder ${formatBytes(s.reorderBytes)} ` +
        `deaths ${s.stripeDeaths} resent ${formatBytes(s.resentBytes)}`,
      fields: {
        ageSeconds: Math.round(age * 10) / 10,
        bytesUp: s.bytesUp,
        bytesDown: s.bytesDown,
        stripes: s.stripes.length,
        usableStripes: usable,
        sendBufferBytes: s.sendBufferBytes,
        reorderBytes: s.reorderBytes,
        stripeDeaths: s.stripeDeaths,
        resentBytes: s.resentBytes,
      },
    });
    for (const p of s.stripes) {
      // The queue the stripe holds (smoothed RTT above its minimum) is what issue 11 keeps short.
      const sched =
        (p.capBytes !== undefined ? ` cap ${formatBytes(Math.round(p.capBytes))}` : "") +
        (p.minRttSeconds !== undefined ? ` min ${ms(p.minRttSeconds)} queue ${ms(p.queueSeconds ?? 0)}` : "");
      out.push({
        event: "stats.stripe",
        session: s.id,
        msg:
          `session ${s.id} stripe ${p.index}: ${rate(p.rateBytesPerSecond)} in flight ${formatBytes(p.inflightBytes)} rtt ${ms(p.rttSeconds)}${sched} ` +
          `stalls ${p.stalls} resent ${formatBytes(p.resentBytes)} sent ${formatBytes(p.sentBytes)} received ${formatBytes(p.receivedBytes)}`,
        fields: {
          stripe: p.index,
          rateBytesPerSecond: Math.round(p.rateBytesPerSecond),
          inflightBytes: p.inflightBytes,
          rttSeconds: p.rttSeconds,
          stalls: p.stalls,
          resentBytes: p.resentBytes,
          sentBytes: p.sentBytes,
          receivedBytes: p.receivedBytes,
          capBytes: p.capBytes,
          minRttSeconds: p.minRttSeconds,
          queueSeconds: p.queueSeconds,
        },
      });
    }
  }
  return out;
}
