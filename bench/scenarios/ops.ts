/**
 * ops: what watching a proxy costs. Uncapped upload through the pair (4 stripes), plain, against the
 * same with both proxies serving --metrics and
 *   - a scraper fetching /metrics from both every second (what Prometheus does), target ≥ 0.98 × plain;
 *   - the client's dashboard open in headless Chromium, polling every second, target ≥ 0.95 × plain;
 * and, to see the cost above the noise of a shared machine, the same at 100× (a scrape every 10 ms)
 * and 10× (the dashboard polling every 100 ms) the rate: a cost that is invisible at 1× should show
 * there, scaled.
 *
 * The suite runs the specs round-robin (run 1 of every spec, then run 2...), so each variant run sits
 * next to a plain one in time; besides the ratio of medians, each row's note gives the median of the
 * per-round ratios (variant run k / plain run k), which a slow drift of the machine's load cancels out of.
 *
 * Throughput on a shared 2-core machine is noisy; CPU time is much less so. The `cost` spec measures
 * what one request costs the proxy directly: with 16 sessions of 4 stripes open and idle, the CPU time
 * of both proxies over seconds of back-to-back GET /metrics (then GET /api/sessions, what the dashboard
 * polls), minus their idle CPU over the same time, per request.
 */

import { Chain, LOOP, clientProc, planChain, runTransfer, serverProc, targetProc, type Planner } from "../lib/chain.ts";
import { CLK_TCK, cpuTicks, freePorts } from "../lib/proc.ts";
import { join, medianOf, okRuns, plainFigure, rateFigure } from "../lib/figures.ts";
import { GiB, MiB, fmt, summarize } from "../lib/stats.ts";
import type { Figure, Results, RunResult, RunSpec, Scenario } from "../lib/types.ts";

/** How each run watches the proxies. */
interface Watch {
  label: string;
  /** A scraper of both proxies' /metrics every `scrapeMs`. */
  scrapeMs?: number;
  /** Chromium on the client's dashboard, polling every `pollMs`. */
  pollMs?: number;
  /** The target for ratio to plain, when this is the 1× case. */
  minRatio?: number;
}

const WATCH: Record<string, Watch> = {
  "ops/plain": { label: "plain" },
  "ops/scrape-1s": { label: "/metrics scraped every 1 s", scrapeMs: 1000, minRatio: 0.98 },
  "ops/dashboard-1s": { label: "dashboard open (1 s polls)", pollMs: 1000, minRatio: 0.95 },
  "ops/scrape-10ms": { label: "/metrics every 10 ms (100×)", scrapeMs: 10 },
  "ops/dashboard-100ms": { label: "dashboard at 100 ms (10×)", pollMs: 100 },
};

const addr = (port: number): string => `${LOOP}:${port}`;

/** The standard pair, with --metrics on both proxies and the watcher of `spec.key`. */
const plan: Planner = (spec, ports) => {
  const w = WATCH[spec.key];
  if (!w || (w.scrapeMs === undefined && w.pollMs === undefined)) return planChain(spec, ports);
  const [pTarget, , pServer, pClient, mServer, mClient] = ports as [number, number, number, number, number, number];
  const base = planChain(spec, ports);
  const procs = base.procs.map((p) => {
    if (p.name === "server") {
      const s = serverProc(spec, pServer, addr(pTarget));
      return { ...s, argv: [...s.argv, "--metrics", addr(mServer)] };
    }
    if (p.name === "client") {
      const c = clientProc(spec, pClient, addr(pServer));
      return { ...c, argv: [...c.argv, "--metrics", addr(mClient)] };
    }
    return p;
  });
  if (w.scrapeMs !== undefined) {
    const urls = [`http://${addr(mServer)}/metrics`, `http://${addr(mClient)}/metrics`].join(",");
    procs.push({ name: "watcher", argv: ["bench/tools/scraper.ts", "--url", urls, "--interval-ms", String(w.scrapeMs)], ready: "json" });
  } else {
    procs.push({ name: "watcher", argv: ["bench/tools/dashboard-viewer.ts", "--url", `http://${addr(mClient)}/?interval=${w.pollMs}`], ready: "json" });
  }
  return { procs, entry: base.entry };
};

/** Sessions held open (idle) while the cost per request is measured, and stripes each. */
const COST_SESSIONS = 16;
const COST_SECONDS = 4;

/** CPU seconds of `pids` (summed) while `during` runs. */
async function cpuOver(pids: number[], during: () => Promise<number>): Promise<{ cpu: number; n: number; seconds: number }> {
  const t0 = pids.map((p) => cpuTicks(p) ?? 0);
  const started = performance.now();
  const n = await during();
  const seconds = (performance.now() - started) / 1000;
  const cpu = pids.reduce((t, p, i) => t + ((cpuTicks(p) ?? 0) - t0[i]!), 0) / CLK_TCK;
  return { cpu, n, seconds };
}

/** Requests `urls` back to back, in turn, for COST_SECONDS; returns how many answered. */
async function hammer(urls: string[]): Promise<number> {
  const end = performance.now() + COST_SECONDS * 1000;
  let n = 0;
  while (performance.now() < end) {
    for (const u of urls) {
      const r = await fetch(u);
      await r.text();
      if (r.ok) n++;
    }
  }
  return n;
}

/** The `cost` run: CPU per /metrics and per /api/sessions request, over idle sessions. */
async function costRun(spec: RunSpec, run: number): Promise<RunResult> {
  const [pTarget, pServer, pClient, mServer, mClient] = freePorts(8) as [number, number, number, number, number];
  const server = serverProc(spec, pServer, addr(pTarget));
  const client = clientProc(spec, pClient, addr(pServer));
  const chain = await Chain.start({
    procs: [
      targetProc({ ...spec, dir: "echo" }, pTarget),
      { ...server, argv: [...server.argv, "--metrics", addr(mServer)] },
      { ...client, argv: [...client.argv, "--metrics", addr(mClient)] },
    ],
    entry: pClient,
  });
  const held: { end(): void }[] = [];
  try {
    for (let i = 0; i < COST_SESSIONS; i++) {
      const sock = await Bun.connect({ hostname: LOOP, port: pClient, socket: { data() {} } });
      sock.write("x");
      held.push(sock);
    }
    const api = async (): Promise<{ sessions: { stripes: unknown[] }[] }> => (await fetch(`http://${addr(mClient)}/api/sessions`)).json() as Promise<{ sessions: { stripes: unknown[] }[] }>;
    const deadline = performance.now() + 20_000;
    for (;;) {
      const a = await api();
      if (a.sessions.length === COST_SESSIONS && a.sessions.every((x) => x.stripes.length === (spec.stripes ?? 4))) break;
      if (performance.now() > deadline) throw new Error(`${COST_SESSIONS} sessions of ${spec.stripes} stripes did not come up`);
      await Bun.sleep(50);
    }
    const pids = [chain.byName.server!.pid, chain.byName.client!.pid];
    const idle = await cpuOver(pids, async () => {
      await Bun.sleep(COST_SECONDS * 1000);
      return 0;
    });
    const idlePerSecond = idle.cpu / idle.seconds;
    const per = async (path: string): Promise<number> => {
      const m = await cpuOver(pids, () => hammer([`http://${addr(mServer)}${path}`, `http://${addr(mClient)}${path}`]));
      return ((m.cpu - idlePerSecond * m.seconds) / m.n) * 1000;
    };
    const metricsMs = await per("/metrics");
    const apiMs = await per("/api/sessions");
    return { run, ok: true, intact: true, bytes: 0, seconds: 0, rate: 0, cpu: {}, rss: {}, figures: { metricsMs, apiMs, idleCores: idlePerSecond } };
  } catch (err) {
    throw chain.withLogs(err);
  } finally {
    for (const h of held) h.end();
    await chain.stop();
  }
}

/** Per-round ratios variant / plain (rounds where both runs were good). */
function paired(results: Results, key: string): number[] {
  const base = results.get("ops/plain") ?? [];
  const out: number[] = [];
  for (const r of okRuns(results.get(key))) {
    const b = okRuns(base).find((x) => x.run === r.run);
    if (b && b.rate > 0) out.push(r.rate / b.rate);
  }
  return out;
}

const cpuPerGiB = (proc: string) => (r: RunResult): number | null => (r.cpu[proc] !== undefined && r.bytes > 0 ? r.cpu[proc]! / (r.bytes / GiB) : null);

export const ops: Scenario = {
  name: "ops",
  description: "uncapped pair with /metrics scraped (1 s, 10 ms) or the dashboard open in Chromium (1 s, 100 ms polls), against no watcher",
  reads: ["quick"],
  rateUnit: "GB/s",

  runs({ o }) {
    const bytes = o.quick ? 256 * MiB : 2 * GiB;
    const base = {
      scenario: "ops",
      dir: "up" as const,
      path: "pair" as const,
      mid: "none" as const,
      stripes: 4,
      bytes,
      conns: 1,
      hash: false,
      deadlineMs: 60_000,
      timeoutMs: 120_000,
      measure: ["client", "server"],
    };
    return [
      ...Object.entries(WATCH).map(([key, w]): RunSpec => ({ ...base, key, label: w.label })),
      { ...base, key: "ops/cost", label: "CPU per request", bytes: 0 },
    ];
  },

  run: (spec: RunSpec, run: number) => (spec.key === "ops/cost" ? costRun(spec, run) : runTransfer(spec, run, { plan })),

  measures: ({ o }) =>
    `- ops: CPU per request: ${COST_SESSIONS} sessions of 4 stripes held open and idle through the pair, then ${COST_SECONDS} s of requests back to back to both proxies' endpoint, the proxies' CPU time (/proc) minus their idle CPU over the same time, divided by the requests (milliseconds per request, both proxies together). Upload of ${o.quick ? "256 MiB" : "2 GiB"} through the uncapped pair (4 stripes, keyed), byte counts checked; both proxies with --metrics, watched by bench/tools/scraper.ts (GET /metrics of both, body read, one at a time per proxy) or bench/tools/dashboard-viewer.ts (headless Chromium on the client's dashboard; its CPU competes with the proxies, as a browser on the same machine would). Specs run round-robin; "per-round" ratios pair each run with the plain run of the same round.`,

  figures({ results }) {
    const plainGbps = medianOf(results, "ops/plain", (r) => r.rate / 1e9);
    const rows: Figure[] = [];
    for (const [key, w] of Object.entries(WATCH)) {
      const ratios = paired(results, key);
      const s = summarize(ratios);
      const note =
        key === "ops/plain"
          ? ""
          : join(
              s.median !== null ? `per-round ratio median ${fmt(s.median, 3)} (${fmt(s.min!, 3)}–${fmt(s.max!, 3)}, ${ratios.length} rounds)` : "",
              w.minRatio === undefined ? "amplified: no target; the 1× cost is about (1 − ratio) / the factor" : "",
            );
      rows.push(
        rateFigure(results, {
          scenario: "ops",
          case: w.label,
          key,
          unit: "GB/s",
          reference: key === "ops/plain" ? undefined : { label: "plain", value: plainGbps },
          minRatio: w.minRatio,
          note,
        }),
      );
    }
    const cost = (name: string, pick: "metricsMs" | "apiMs", per: number, what: string): Figure =>
      plainFigure(results, {
        scenario: "ops",
        case: name,
        key: "ops/cost",
        unit: "CPU ms",
        pick: (r) => r.figures?.[pick] ?? null,
        note: `server + client, ${COST_SESSIONS} idle sessions of 4 stripes; ${what} = that × ${per} per second, as a share of one core`,
      });
    rows.push(cost("one GET /metrics (each proxy)", "metricsMs", 2, "scraped every second"));
    rows.push(cost("one GET /api/sessions (each proxy)", "apiMs", 1, "the dashboard's poll"));
    for (const [key, w] of Object.entries(WATCH)) {
      for (const proc of ["client", "server"]) {
        rows.push(plainFigure(results, { scenario: "ops", case: `${w.label}: ${proc} CPU`, key, unit: "CPU s/GiB", pick: cpuPerGiB(proc) }));
      }
    }
    return rows;
  },
};
