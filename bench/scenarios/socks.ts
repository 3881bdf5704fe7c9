/**
 * socks: a bulk download through the SOCKS front against the same through a port forward (issue 13),
 * over a link capped per connection (--cap, default 4 MB/s) with --delay one way (default 10 ms), 8
 * stripes (or the one count --stripes gives). Target: ≥ 0.95 × N × cap for both: choosing the destination
 * per connection, starting on one stripe and growing (--grow-after, the client's default) must cost
 * a bulk transfer nothing that matters.
 *
 * The server has no --target route for these: it serves the destination through `--allow
 * 127.0.0.1:TARGET` (the loopback target needs a rule naming it), so both paths go through the
 * allowlist and the SSRF check. The app (bench/tools/app.ts) speaks SOCKS5 with `--socks`.
 */

import { LOOP, linkProc, runTransfer, serverProc, targetProc, type Planner, type ProcPlan } from "../lib/chain.ts";
import { rateFigure } from "../lib/figures.ts";
import { MiB } from "../lib/stats.ts";
import type { Options, RunSpec, Scenario } from "../lib/types.ts";

/** Bytes of the download (256 MiB; 32 MiB with --quick). */
const BYTES = 256 * MiB;
const QUICK_BYTES = 32 * MiB;
const KEYS = { socks: "socks/down/socks", forward: "socks/down/forward" } as const;

const addr = (port: number): string => `${LOOP}:${port}`;

/** 8 stripes as the issue asks, or the single count of `--stripes N` (the default list 1,…,16 is caps'). */
const stripesOf = (o: Options): number => (o.stripes.length === 1 ? o.stripes[0]! : 8);

/** target ← server (allowing only the target) ← link ← client (SOCKS front, or a port forward). */
const plan =
  (how: "socks" | "forward"): Planner =>
  (spec, ports) => {
    const [pTarget, pLink, pServer, pClient] = ports as [number, number, number, number];
    const server = serverProc(spec, pServer, addr(pTarget));
    // No --target route: sessions name their destination and the allowlist lets it through.
    const i = server.argv.indexOf("--target");
    server.argv.splice(i, 2, "--allow", addr(pTarget));
    const front = how === "socks" ? ["--socks", addr(pClient)] : ["--listen", addr(pClient), "--target", addr(pTarget)];
    const client: ProcPlan = {
      name: "client",
      argv: ["src/main.ts", "client", ...front, "--peer", addr(pLink), "--stripes", String(spec.stripes), "--key-file", "bench.key"],
      ready: /client listening on/,
      keep: /session \S+ end /,
    };
    return {
      procs: [targetProc(spec, pTarget), server, linkProc(spec, pLink, addr(pServer)), client],
      entry: pClient,
      appArgs: how === "socks" ? ["--socks", addr(pTarget)] : [],
    };
  };

export const socks: Scenario = {
  name: "socks",
  description: "a bulk download via the SOCKS front and via a port forward, N stripes through a capped link, against N × cap",
  reads: ["cap", "delay", "stripes", "quick"],
  rateUnit: "MB/s",

  runs({ o }) {
    const n = stripesOf(o);
    const bytes = o.quick ? QUICK_BYTES : BYTES;
    const seconds = bytes / (n * o.capMBps * 1e6);
    const base = {
      scenario: "socks",
      dir: "down" as const,
      path: "pair" as const,
      mid: "link" as const,
      rates: [o.capMBps],
      delayMs: o.delayMs,
      stripes: n,
      bytes,
      conns: 1,
      hash: true,
      deadlineMs: Math.ceil(4 * seconds * 1000),
      timeoutMs: Math.ceil((4 * seconds + 60) * 1000),
    };
    return [
      { ...base, key: KEYS.socks, label: `SOCKS5 N=${n} down` },
      { ...base, key: KEYS.forward, label: `port forward N=${n} down` },
    ] satisfies RunSpec[];
  },

  run: (spec, run) => runTransfer(spec, run, { plan: plan(spec.key === KEYS.socks ? "socks" : "forward") }),

  measures: ({ o }) =>
    `- socks: one download of ${o.quick ? "32" : "256"} MiB (hashed at both ends) from the target through the pair with ${stripesOf(o)} stripes over the capped link (${o.capMBps} MB/s per connection, ${o.delayMs} ms one way); the app asks the client's SOCKS front for the target (bench/tools/app.ts --socks), or connects to a port forward (client --listen --target); the server reaches the target only through \`--allow 127.0.0.1:PORT\`. Client defaults: sessions start on one stripe and grow after 128 KiB, 2 standby stripes.`,

  figures({ o, results }) {
    const n = stripesOf(o);
    const ref = { label: "N×cap", value: n * o.capMBps };
    return [
      rateFigure(results, { scenario: "socks", case: `download via SOCKS5, N=${n}`, key: KEYS.socks, unit: "MB/s", reference: ref, minRatio: 0.95 }),
      rateFigure(results, { scenario: "socks", case: `download via a port forward, N=${n}`, key: KEYS.forward, unit: "MB/s", reference: ref, minRatio: 0.95 }),
    ];
  },
};
