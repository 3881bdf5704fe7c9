/**
 * shortconn: many short connections (issue 13). The real curl fetches a 10 KiB file 200 times one after
 * another across a link with 20 ms one-way delay: straight through the link, and through the pair's
 * SOCKS front (8 stripes) in several client set-ups:
 *
 *   wait        the defaults: the SOCKS reply waits for the server's verdict; 2 standby stripes; sessions
 *               start on one stripe and grow after 128 KiB
 *   immediate   --socks-reply immediate (the app's request leaves with the session's first bytes)
 *   no pool     --pool 0 (each session opens its own stripe: OPEN with 0-RTT)
 *   all stripes --pool 0 --grow-after 0 (what every session did before: all 8 stripes at once)
 *
 * Figures per set-up: median and p95 of curl's time_total per fetch, and TCP connections opened
 * through the link (to the server) per fetch, counted from the link's per-connection log lines once
 * the client has exited (so the standby stripes are in the count too). Every body is checked against
 * the target's SHA-256.
 *
 * TCP handshakes: a connect on loopback completes at once, so the link is run with --connect-delay
 * 2 × delay (it holds each new connection for the round trip its opening handshake costs on the route
 * it stands for). "direct" then pays it once per fetch, "no pool" once per session (the OPEN's
 * connection), the pooled set-ups never (their stripe was connected beforehand) — as on a real path.
 */

import { BENCH_KEY_FILE, Chain, LOOP, linkProc, type ProcPlan } from "../lib/chain.ts";
import { okRuns, plainFigure, tally } from "../lib/figures.ts";
import { freePorts } from "../lib/proc.ts";
import { fmt, summarize } from "../lib/stats.ts";
import type { Figure, RunResult, RunSpec, Scenario } from "../lib/types.ts";

const DELAY_MS = 20;
const BODY = 10 * 1024;
const FETCHES = 200;
const QUICK_FETCHES = 40;
/** Fetches before the measured ones (fresh processes: JIT, first dials); their connections count too. */
const WARMUP = 5;
const STRIPES = 8;

/** The set-ups, by RunSpec key: the client's extra arguments (undefined: straight through the link). */
const SETUPS: Record<string, { label: string; client: string[] | undefined }> = {
  "shortconn/direct": { label: "curl through the link alone", client: undefined },
  "shortconn/wait": { label: "SOCKS, defaults (reply waits; pool 2; grow after 128 KiB)", client: [] },
  "shortconn/immediate": { label: "SOCKS, --socks-reply immediate", client: ["--socks-reply", "immediate"] },
  "shortconn/nopool": { label: "SOCKS, --pool 0", client: ["--pool", "0"] },
  "shortconn/allstripes": { label: "SOCKS, --pool 0 --grow-after 0 (every stripe per session)", client: ["--pool", "0", "--grow-after", "0"] },
};

const addr = (port: number): string => `${LOOP}:${port}`;

function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

/** One curl fetch: time_total in ms, and whether the body's SHA-256 is the expected one. */
async function fetchOnce(args: string[], sha: string): Promise<{ ms: number; ok: boolean; error: string }> {
  const p = Bun.spawn(["curl", "-sS", "--max-time", "20", "-w", "%{stderr}@@%{time_total}", ...args], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [code, body, err] = await Promise.all([p.exited, new Response(p.stdout).arrayBuffer(), new Response(p.stderr).text()]);
  const at = err.lastIndexOf("@@");
  const ms = Number(err.slice(at + 2)) * 1000;
  const got = new Bun.CryptoHasher("sha256").update(new Uint8Array(body)).digest("hex");
  return { ms, ok: code === 0 && got === sha, error: code === 0 ? (got === sha ? "" : "body hash differs") : `curl exit ${code}: ${err.slice(0, at).trim()}` };
}

async function runSpec(spec: RunSpec, run: number): Promise<RunResult> {
  const setup = SETUPS[spec.key]!;
  const [pHttp, pLink, pServer, pClient] = freePorts(8) as [number, number, number, number];
  const http: ProcPlan = { name: "http", argv: ["bench/tools/http-target.ts", "--port", String(pHttp), "--bytes", String(BODY)], ready: "json" };
  const linkTo = setup.client === undefined ? pHttp : pServer;
  const linked = linkProc(spec, pLink, addr(linkTo));
  // A fresh connection costs its handshake's round trip on the route the link stands for.
  const link: ProcPlan = { ...linked, argv: [...linked.argv, "--connect-delay", String(2 * DELAY_MS)], keep: /\blink conn \d+ \[/ }; // after the log's timestamp
  const procs = [http];
  if (setup.client !== undefined) {
    procs.push({
      name: "server",
      // One process: a server of several workers tells the client its workers' join ports, which are on
      // the server's own address — the JOINs would go around the link, uncounted and undelayed.
      argv: ["src/main.ts", "server", "--listen", addr(pServer), "--allow", addr(pHttp), "--key-file", BENCH_KEY_FILE, "--workers", "1"],
      ready: /server listening on/,
    });
  }
  procs.push(link);
  if (setup.client !== undefined) {
    procs.push({
      name: "client",
      argv: ["src/main.ts", "client", "--socks", addr(pClient), "--peer", addr(pLink), "--stripes", String(STRIPES), "--key-file", BENCH_KEY_FILE, ...setup.client],
      ready: /client listening on/,
    });
  }
  const chain = await Chain.start({ procs, entry: setup.client === undefined ? pLink : pClient });
  try {
    const sha = String(chain.byName.http!.events.find((e) => e.event === "ready")!.sha256);
    const args = setup.client === undefined ? [`http://${addr(pLink)}/f`] : ["--socks5-hostname", addr(pClient), `http://${addr(pHttp)}/f`];
    if (setup.client !== undefined) await Bun.sleep(300); // the client's pool fills, as it would before an app comes
    const times: number[] = [];
    for (let i = 0; i < WARMUP + spec.conns; i++) {
      const r = await fetchOnce(args, sha);
      if (!r.ok) throw new Error(`fetch ${i}: ${r.error}`);
      if (i >= WARMUP) times.push(r.ms);
    }
    // Every connection the link carried is logged when it closes: stop the client first (its standby
    // stripes close with it), then count.
    await chain.byName.client?.kill();
    await Bun.sleep(500);
    const conns = chain.byName.link!.kept.length;
    // Every fetch crossed the link on some connection: none counted means the count itself is broken.
    if (conns === 0) throw new Error("the link logged no connection lines (has their format changed?)");
    return {
      run,
      ok: true,
      intact: true,
      bytes: BODY * times.length,
      seconds: times.reduce((a, b) => a + b, 0) / 1000,
      rate: 0,
      cpu: {},
      rss: {},
      figures: { medianMs: percentile(times, 50), p95Ms: percentile(times, 95), connsPerFetch: conns / (WARMUP + spec.conns) },
    };
  } catch (err) {
    throw chain.withLogs(err);
  } finally {
    await chain.stop();
  }
}

export const shortconn: Scenario = {
  name: "shortconn",
  description: `${FETCHES} sequential curl fetches of 10 KiB across a ${DELAY_MS} ms link: direct vs the SOCKS front (pool, growth, reply timing)`,
  reads: ["quick"],
  rateUnit: "MB/s",

  runs({ o }) {
    return Object.entries(SETUPS).map(([key, s]) => ({
      key,
      scenario: "shortconn",
      label: s.label,
      dir: "down" as const,
      path: s.client === undefined ? ("link" as const) : ("pair" as const),
      mid: "link" as const,
      rates: [0],
      delayMs: DELAY_MS,
      stripes: STRIPES,
      bytes: BODY,
      conns: o.quick ? QUICK_FETCHES : FETCHES,
      hash: true,
      deadlineMs: 0,
      timeoutMs: 600_000,
    })) satisfies RunSpec[];
  },

  run: runSpec,

  measures: ({ o }) =>
    `- shortconn: curl (-sS, --socks5-hostname for the pair) fetches a ${BODY / 1024} KiB body ${o.quick ? QUICK_FETCHES : FETCHES} times one after another (after ${WARMUP} unmeasured ones) from bench/tools/http-target.ts; the link (src/main.ts link, uncapped) adds ${DELAY_MS} ms each way and sits in front of the server (pair) or the target (direct); the pair has ${STRIPES} stripes. Time per fetch: curl's time_total (the process start is not in it). Connections per fetch: connections the link accepted (its log lines, counted after the client exited, standby stripes included) ÷ all fetches. Bodies checked by SHA-256. The link holds each new connection for ${2 * DELAY_MS} ms (--connect-delay) before forwarding it: the round trip a TCP handshake costs on a real path, which loopback does not — "direct" pays it on every fetch, "--pool 0" on every session, the pooled set-ups never.`,

  figures({ results }) {
    const direct = summarize(okRuns(results.get("shortconn/direct")).map((r) => r.figures?.medianMs)).median;
    const out: Figure[] = [];
    for (const [key, s] of Object.entries(SETUPS)) {
      const pick = (name: string) => (r: RunResult) => r.figures?.[name];
      const isImmediate = key === "shortconn/immediate";
      const median = plainFigure(results, {
        scenario: "shortconn",
        case: `${s.label}: median per fetch`,
        key,
        unit: "ms",
        pick: pick("medianMs"),
        note: key === "shortconn/wait" ? "the verdict's round trip takes the place of the handshake's: the stripe was connected beforehand" : "",
      });
      // The goal, "no slower than going without the pair", within the 5 ms the first-reply target allows.
      if ((isImmediate || key === "shortconn/wait") && direct !== null) median.target = { kind: "max", below: direct + 5, text: `< direct + 5 ms (${fmt(direct + 5, 1)})` };
      out.push(median);
      out.push(plainFigure(results, { scenario: "shortconn", case: `${s.label}: p95 per fetch`, key, unit: "ms", pick: pick("p95Ms") }));
      // Connections across the link: to the server (pair) or to the target (direct, one per fetch).
      const conns = plainFigure(results, { scenario: "shortconn", case: `${s.label}: TCP connections across the link per fetch`, key, unit: "", pick: pick("connsPerFetch") });
      if (s.client !== undefined && key !== "shortconn/allstripes") conns.target = { kind: "max", below: 2, text: `< 2 (N = ${STRIPES})` };
      out.push(conns);
    }
    if (out.length === 0) out.push({ scenario: "shortconn", case: "no runs", unit: "", value: summarize([]), tally: tally([]), note: "" });
    return out;
  },
};
