/**
 * ops: what watching a proxy costs. Uncapped upload through the pair (4 stripes, keyed), both proxies
 * serving --metrics, in one chain per run whose legs are transfers of the same size:
 *   - the scrape run: a scraper fetching /metrics from both proxies every second (what Prometheus does),
 *     target ≥ 0.98 × unwatched; and every 10 ms (100×, to see a cost the noise hides at 1×);
 *   - the dashboard run: the client's dashboard open in headless Chromium polling every second, target
 *     ≥ 0.95 × unwatched; and every 100 ms (10×).
 * After an unrecorded warm-up leg (JIT), legs run in the order none, 1×, amplified, amplified, 1×, none:
 * the same processes carry every leg (no process-placement luck between A and B), each pair of legs
 * compared is seconds apart, and a linear drift of the shared machine's load cancels out of the means
 * exactly (each condition's mean position is the same). A run's figure is mean(watched legs) /
 * mean(unwatched legs); the row is the median over runs. The watcher is started before its leg, left to
 * settle (its own start-up is not watching: Chromium's first seconds take ~20 % of a core, an open tab
 * 1–2 %), and stopped after the leg.
 *
 * Throughput on a shared 2-core machine is noisy; CPU time is much less so. The `cost` spec measures
 * what one request costs the proxy directly: with 16 sessions of 4 stripes open and idle, the CPU time
 * of both proxies over seconds of back-to-back GET /metrics (then GET /api/sessions, what the dashboard
 * polls), minus their idle CPU over the same time, per request.
 */

import { Chain, LOOP, appProc, clientProc, serverProc, targetProc, until, type ProcPlan } from "../lib/chain.ts";
import { deliver } from "../lib/measure.ts";
import { CLK_TCK, allReady, cpuTicks, freePorts, type Child } from "../lib/proc.ts";
import { join, medianOf, plainFigure } from "../lib/figures.ts";
import { GiB, MiB, fmt } from "../lib/stats.ts";
import type { Figure, RunResult, RunSpec, Scenario } from "../lib/types.ts";

/** One watcher and the two rates it is run at. */
interface Watch {
  label: string;
  kind: "scrape" | "dashboard";
  /** Interval of the 1× legs and of the amplified legs, ms. */
  oneMs: number;
  ampMs: number;
  /** The target: mean(1× legs) / mean(unwatched legs) ≥ this. */
  minRatio: number;
}

const WATCH: Record<string, Watch> = {
  "ops/scrape": { label: "/metrics scraped", kind: "scrape", oneMs: 1000, ampMs: 10, minRatio: 0.98 },
  "ops/dashboard": { label: "dashboard open", kind: "dashboard", oneMs: 1000, ampMs: 100, minRatio: 0.95 },
};

/** What a leg is watched by. */
type Leg = "none" | "one" | "amp";
/** Palindromic: every condition's mean position in time is the same. */
const LEGS: readonly Leg[] = ["none", "one", "amp", "amp", "one", "none"];

const addr = (port: number): string => `${LOOP}:${port}`;

/**
 * A proxy with --metrics on `port`, ready once the endpoint answers: main starts it after the listeners,
 * so the "listening" line alone would let a first request race it (ECONNREFUSED).
 */
function withMetrics(p: ProcPlan, port: number): ProcPlan {
  return { ...p, argv: [...p.argv, "--metrics", addr(port)], ready: /metrics on http/ };
}

/** The watcher process of `w` at `ms`, on the client's (and for scrapes the server's) endpoint. */
function watcherProc(w: Watch, ms: number, mServer: number, mClient: number): ProcPlan {
  if (w.kind === "scrape") {
    const urls = [`http://${addr(mServer)}/metrics`, `http://${addr(mClient)}/metrics`].join(",");
    return { name: "watcher", argv: ["bench/tools/scraper.ts", "--url", urls, "--interval-ms", String(ms)], ready: "json" };
  }
  return { name: "watcher", argv: ["bench/tools/dashboard-viewer.ts", "--url", `http://${addr(mClient)}/?interval=${ms}`], ready: "json" };
}

/** One leg's transfer through the running chain: bytes, seconds, integrity, proxies' CPU seconds. */
async function leg(chain: Chain, spec: RunSpec): Promise<{ bytes: number; seconds: number; intact: boolean; error?: string; cpu: number }> {
  const target = chain.byName.target!;
  const conns = (): Record<string, unknown>[] => target.events.filter((e) => e.event === "conn");
  const before = conns().length;
  const cpu0 = chain.cpuMark();
  const app = chain.spawn(appProc(spec, chain.entry), false);
  const done = await app.waitEvent((e) => e.event === "done", spec.timeoutMs + 10_000, "the app finishing its transfer");
  await target.waitEvent(() => conns().length > before, 10_000, "the target reporting the connection");
  const spent = chain.cpuSince(cpu0);
  const d = deliver(spec, done, conns().slice(before));
  return { bytes: d.bytes, seconds: d.seconds, intact: d.intact, error: d.firstError, cpu: (spent.client ?? 0) + (spent.server ?? 0) };
}

const mean = (xs: readonly number[]): number => xs.reduce((a, x) => a + x, 0) / xs.length;

/** An A/B run: one chain, the legs of LEGS in order, the watcher of `spec.key` on the watched ones. */
async function abRun(spec: RunSpec, run: number): Promise<RunResult> {
  const w = WATCH[spec.key]!;
  const [pTarget, pServer, pClient, mServer, mClient] = freePorts(8) as [number, number, number, number, number];
  const server = serverProc(spec, pServer, addr(pTarget));
  const client = clientProc(spec, pClient, addr(pServer));
  const chain = await Chain.start({
    procs: [targetProc(spec, pTarget), withMetrics(server, mServer), withMetrics(client, mClient)],
    entry: pClient,
  });
  const rates: Record<Leg, number[]> = { none: [], one: [], amp: [] };
  const cpuPerGiB: Record<Leg, number[]> = { none: [], one: [], amp: [] };
  /** The watcher's own CPU (the scraper; chromium and its helpers), in cores, per watched leg. */
  const watcherCores: Record<Leg, number[]> = { none: [], one: [], amp: [] };
  let bytes = 0;
  let seconds = 0;
  let cpu = 0;
  try {
    // A first, unrecorded leg: the proxies' first transfer runs partly unoptimised (JIT), which would
    // make the first unwatched leg look slow and flatter every watched one.
    const warm = await leg(chain, spec);
    if (!warm.intact) throw new Error(`warm-up leg: ${warm.error ?? "byte count mismatch"}`);
    for (const l of LEGS) {
      let watcher: Child | undefined;
      if (l !== "none") {
        watcher = chain.spawn(watcherProc(w, l === "one" ? w.oneMs : w.ampMs, mServer, mClient), false);
        await allReady([watcher], 30_000);
      }
      const r = await leg(chain, spec);
      if (watcher) {
        await watcher.kill();
        // Its last line may be read a moment after it exits.
        await until(() => watcher.events.some((e) => e.event === "stats"), 2000);
        const st = watcher.events.find((e) => e.event === "stats");
        if (st && typeof st.cpuSeconds === "number" && typeof st.seconds === "number" && st.seconds > 0) watcherCores[l].push(st.cpuSeconds / st.seconds);
      }
      if (!r.intact) throw new Error(`leg ${l}: ${r.error ?? "byte count mismatch"}`);
      rates[l].push(r.bytes / r.seconds);
      cpuPerGiB[l].push(r.cpu / (r.bytes / GiB));
      bytes += r.bytes;
      seconds += r.seconds;
      cpu += r.cpu;
    }
    const none = mean(rates.none);
    return {
      run,
      ok: true,
      intact: true,
      bytes,
      seconds,
      rate: bytes / seconds,
      cpu: { "client+server": cpu },
      rss: {},
      figures: {
        noneGBps: none / 1e9,
        oneRatio: mean(rates.one) / none,
        ampRatio: mean(rates.amp) / none,
        cpuNone: mean(cpuPerGiB.none),
        cpuOne: mean(cpuPerGiB.one),
        cpuAmp: mean(cpuPerGiB.amp),
        ...(watcherCores.one.length > 0 ? { watcherOne: mean(watcherCores.one) } : {}),
        ...(watcherCores.amp.length > 0 ? { watcherAmp: mean(watcherCores.amp) } : {}),
      },
    };
  } catch (err) {
    throw chain.withLogs(err);
  } finally {
    await chain.stop();
  }
}

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
  // Every session on all its stripes at once (sessions otherwise open their other stripes only after
  // --grow-after bytes, and these send one byte): the figures are per sessions of N stripes.
  const client = clientProc({ ...spec, args: { ...spec.args, client: [...(spec.args?.client ?? []), "--grow-after", "0"] } }, pClient, addr(pServer));
  const chain = await Chain.start({
    procs: [
      targetProc({ ...spec, dir: "echo" }, pTarget),
      withMetrics(server, mServer),
      withMetrics(client, mClient),
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

export const ops: Scenario = {
  name: "ops",
  description: "uncapped pair, both proxies with --metrics: legs unwatched, with /metrics scraped (1 s, 10 ms) or the dashboard open in Chromium (1 s, 100 ms polls), in one chain per run; CPU per request",
  reads: ["quick"],
  rateUnit: "GB/s",

  runs({ o }) {
    const bytes = o.quick ? 256 * MiB : GiB;
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

  run: (spec: RunSpec, run: number) => (spec.key === "ops/cost" ? costRun(spec, run) : abRun(spec, run)),

  measures: ({ o }) =>
    `- ops: legs of ${o.quick ? "256 MiB" : "1 GiB"} uploaded through the uncapped pair (4 stripes, keyed, both proxies with --metrics), byte counts checked, in one chain per run, after an unrecorded warm-up leg, in the order unwatched, 1×, amplified, amplified, 1×, unwatched (a linear drift of the machine's load cancels out of the means); watched by bench/tools/scraper.ts (GET /metrics of both proxies, body read, one request at a time per proxy) or bench/tools/dashboard-viewer.ts (headless Chromium on the client's dashboard; its CPU competes with the proxies, as a browser on the same machine would), started before its leg and left to settle first (the scraper 2 s, Chromium 5 s: a browser's first seconds take ~20 % of a core, a tab that is open takes 1–2 %). A run's ratio is the mean rate of its watched legs over the mean of its unwatched legs; the row is the median over runs. CPU per request: ${COST_SESSIONS} sessions of 4 stripes held open and idle through the pair, then ${COST_SECONDS} s of requests back to back to both proxies' endpoint, the proxies' CPU time (/proc) minus their idle CPU over the same time, divided by the requests (milliseconds per request, both proxies together).`,

  figures({ results }) {
    const rows: Figure[] = [];
    const pick = (k: string) => (r: RunResult): number | null => r.figures?.[k] ?? null;
    const unit = { label: "unwatched legs", value: 1 };
    for (const [key, w] of Object.entries(WATCH)) {
      const factor = w.oneMs / w.ampMs;
      const amp = medianOf(results, key, pick("ampRatio"));
      rows.push(plainFigure(results, { scenario: "ops", case: `${w.label}: unwatched legs`, key, unit: "GB/s", pick: pick("noneGBps") }));
      rows.push({
        ...plainFigure(results, {
          scenario: "ops",
          case: `${w.label} every ${w.oneMs / 1000} s (1×)`,
          key,
          unit: "×",
          pick: pick("oneRatio"),
          target: { kind: "ratio", min: w.minRatio },
          note: "rate of the run's 1× legs / its unwatched legs",
        }),
        reference: unit,
      });
      rows.push({
        ...plainFigure(results, {
          scenario: "ops",
          case: `${w.label} every ${w.ampMs} ms (${factor}×)`,
          key,
          unit: "×",
          pick: pick("ampRatio"),
          note: join(
            "amplified: no target",
            amp !== null ? `the 1× cost it implies is (1 − ${fmt(amp, 3)}) / ${factor} = ${fmt(((1 - amp) / factor) * 100, 2)} %` : "",
          ),
        }),
        reference: unit,
      });
      for (const [leg, name] of [["cpuNone", "unwatched"], ["cpuOne", "1×"], ["cpuAmp", `${factor}×`]] as const) {
        rows.push(plainFigure(results, { scenario: "ops", case: `${w.label}: client+server CPU, ${name} legs`, key, unit: "CPU s/GiB", pick: pick(leg) }));
      }
      const who = w.kind === "scrape" ? "the scraper" : "chromium and its helper processes";
      for (const [leg, name] of [["watcherOne", "1×"], ["watcherAmp", `${factor}×`]] as const) {
        rows.push(
          plainFigure(results, {
            scenario: "ops",
            case: `${w.label}: the watcher's own CPU, ${name}`,
            key,
            unit: "% of a core",
            pick: (r) => (r.figures?.[leg] !== undefined ? r.figures[leg]! * 100 : null),
            note: `${who}, CPU time / wall time of the leg: what it takes from the proxies on a machine whose cores they keep busy`,
          }),
        );
      }
    }
    const cost = (name: string, p: "metricsMs" | "apiMs", per: number, what: string): Figure => {
      const ms = medianOf(results, "ops/cost", (r) => r.figures?.[p] ?? null);
      return plainFigure(results, {
        scenario: "ops",
        case: name,
        key: "ops/cost",
        unit: "CPU ms",
        pick: (r) => r.figures?.[p] ?? null,
        note: join(`server + client, ${COST_SESSIONS} idle sessions of 4 stripes`, ms !== null ? `${what}: ${per} × that per second = ${fmt((ms * per) / 10, 3)} % of one core` : ""),
      });
    };
    rows.push(cost("one GET /metrics (each proxy)", "metricsMs", 2, "scraped every second"));
    rows.push(cost("one GET /api/sessions (each proxy)", "apiMs", 1, "the dashboard's poll"));
    return rows;
  },
};
