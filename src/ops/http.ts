/**
 * The operations endpoint (`--metrics HOST:PORT`, off by default; keep it on loopback or an admin
 * network, never on the stripe port):
 *   GET /metrics       Prometheus text exposition (metrics.ts)
 *   GET /healthz       200 "accepting" / 503 "draining" — what a load balancer's health check reads
 *   GET /api/sessions  JSON: totals, budget, memory, and live sessions with their stripes
 *   GET /              the live dashboard (dashboard.ts)
 */

import type { Address } from "../pipe/tcp.ts";
import { DASHBOARD_HTML } from "./dashboard.ts";
import { METRICS_CONTENT_TYPE, striperMetrics, type HealthState, type ProcessInfo } from "./metrics.ts";
import type { CounterSnapshot, SessionSnapshot, StatsSource } from "./stats.ts";

/** Most sessions /api/sessions lists (the busiest, oldest first); the rest are counted. */
export const MAX_API_SESSIONS = 256;

/** A session in /api/sessions: the snapshot plus derived figures. */
export interface ApiSession extends SessionSnapshot {
  ageSeconds: number;
  usableStripes: number;
  /** Sum of its stripes' rates, bytes per second. */
  rateBytesPerSecond: number;
}

/** The body of /api/sessions. */
export interface ApiSessions {
  /** When the snapshot was taken, ms since the epoch. */
  time: number;
  version: string;
  mode: string;
  state: HealthState;
  /** False when the proxy exposes no statistics (only process figures are then real). */
  statsAvailable: boolean;
  uptimeSeconds: number;
  totals: Partial<Omit<CounterSnapshot, "stripeRttSeconds" | "sessionDurationSeconds">> & { sessionsOpen: number; stripesOpen: number };
  budget: { usedBytes: number; limitBytes: number } | null;
  memory: { rssBytes: number; heapUsedBytes: number; arrayBuffersBytes: number };
  /** Live sessions in all. */
  sessionCount: number;
  /** True when more than MAX_API_SESSIONS are live and only the busiest are listed. */
  truncated: boolean;
  sessions: ApiSession[];
}

/** Builds the /api/sessions body. */
export function apiSessions(source: StatsSource | undefined, info: ProcessInfo, state: HealthState, now = Date.now()): ApiSessions {
  const live = source?.sessions() ?? [];
  const all: ApiSession[] = live.map((s) => ({
    ...s,
    ageSeconds: Math.max(0, (now - s.startedAt) / 1000),
    usableStripes: s.stripes.filter((x) => x.usable).length,
    rateBytesPerSecond: s.stripes.reduce((t, x) => t + x.rateBytesPerSecond, 0),
  }));
  let shown = all;
  if (all.length > MAX_API_SESSIONS) {
    shown = [...all].sort((a, b) => b.rateBytesPerSecond - a.rateBytesPerSecond).slice(0, MAX_API_SESSIONS);
    shown.sort((a, b) => a.startedAt - b.startedAt);
  }
  const { stripeRttSeconds: _r, sessionDurationSeconds: _d, ...counters } = source?.counters() ?? {};
  const mem = process.memoryUsage();
  return {
    time: now,
    version: info.version,
    mode: info.mode,
    state,
    statsAvailable: source !== undefined,
    uptimeSeconds: Math.max(0, (now - info.startedAt) / 1000),
    totals: { sessionsOpen: all.length, stripesOpen: all.reduce((t, s) => t + s.usableStripes, 0), ...counters },
    budget: source?.budget() ?? null,
    memory: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, arrayBuffersBytes: mem.arrayBuffers },
    sessionCount: all.length,
    truncated: shown.length < all.length,
    sessions: shown,
  };
}

/** Options of the operations endpoint. */
export interface OpsServerOptions {
  listen: Address;
  /** The proxy's statistics (undefined: process metrics only). */
  source: StatsSource | undefined;
  info: ProcessInfo;
  /** The lifecycle's state (for /healthz and striper_draining). */
  health: () => HealthState;
  /** More JSON endpoints: `/api/<name>` answers with what the function resolves to (`/api/workers`). */
  api?: Readonly<Record<string, () => Promise<unknown>>>;
}

/** A running operations endpoint. */
export interface OpsServer {
  readonly port: number;
  /** "http://host:port/" */
  readonly url: string;
  stop(): void;
}

const text = (body: string, status = 200, type = "text/plain; charset=utf-8"): Response =>
  new Response(body, { status, headers: { "content-type": type, "cache-control": "no-store" } });

/** Starts the endpoint. Throws (EADDRINUSE...) like Bun.serve when the address cannot be bound. */
export function startOpsServer(o: OpsServerOptions): OpsServer {
  const registry = striperMetrics(o.source, o.info, o.health);
  const server = Bun.serve({
    hostname: o.listen.host,
    port: o.listen.port,
    development: false,
    // Measured (Bun 1.4.5): with development off and reusePort unset, a second process binds the same
    // port without an error and the kernel splits the scrapes between them. Make it fail instead.
    reusePort: false,
    async fetch(req) {
      if (req.method !== "GET" && req.method !== "HEAD") return text("method not allowed\n", 405);
      // An HTTP/1.0 request without Host (HAProxy's plain `option httpchk`) comes as a bare path.
      const path = new URL(req.url, "http://localhost").pathname;
      const extra = path.startsWith("/api/") ? o.api?.[path.slice(5)] : undefined;
      if (extra !== undefined) return Response.json(await extra(), { headers: { "cache-control": "no-store" } });
      // A source fed from elsewhere (a server's workers) is brought up to date first.
      if ((path === "/metrics" || path === "/api/sessions") && o.source?.refresh) await o.source.refresh();
      switch (path) {
        case "/metrics":
          return text(registry.render(), 200, METRICS_CONTENT_TYPE);
        case "/healthz": {
          const state = o.health();
          return text(`${state}\n`, state === "accepting" ? 200 : 503);
        }
        case "/api/sessions":
          return Response.json(apiSessions(o.source, o.info, o.health()), { headers: { "cache-control": "no-store" } });
        case "/":
          return text(DASHBOARD_HTML, 200, "text/html; charset=utf-8");
        default:
          return text("not found\n", 404);
      }
    },
    error(err) {
      // A failing source must not take the process down; the scraper sees a 500 and retries.
      return text(`internal error: ${err.message}\n`, 500);
    },
  });
  const host = o.listen.host.includes(":") ? `[${o.listen.host}]` : o.listen.host;
  return {
    port: server.port!,
    url: `http://${host}:${server.port}/`,
    stop: () => server.stop(true),
  };
}
