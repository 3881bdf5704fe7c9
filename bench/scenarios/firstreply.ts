/**
 * firstreply: how long a new connection waits for its first reply through a link with 20 ms one-way
 * delay: straight through the link (app → link → echo target) against the pair (app → client → link →
 * server → target), keyed and --no-auth. The client sends the app's first bytes with stripe 0's first
 * message (0-RTT) and the server contacts the target once it has authenticated, so the pair should add
 * no round trip: target within 5 ms of the direct connection (issue 9; v1 waited one round trip more,
 * 87 ms against 42 ms).
 *
 * Each run makes CONNS connections one after another, each echoing 1 KB; the figure of a run is the
 * median over its connections but the first (which meets processes just started: JIT, first dials) of
 * (first reply byte − connect call), from the app's report.
 */

import { okRuns, plainFigure, tally } from "../lib/figures.ts";
import { summarize } from "../lib/stats.ts";
import type { Figure, RunSpec, Scenario, TransferEvents } from "../lib/types.ts";

const DELAY_MS = 20;
const CONNS = 8;
const BYTES = 1000;
/** The pair may add at most this much to the direct connection's first reply, ms. */
const WITHIN_MS = 5;
const KEYS = { direct: "firstreply/direct", keyed: "firstreply/keyed", plain: "firstreply/plain" } as const;

export const firstreply: Scenario = {
  name: "firstreply",
  description: `first reply of a new connection through a link with ${DELAY_MS} ms one-way delay: direct vs the pair (keyed, --no-auth)`,
  reads: [],
  rateUnit: "MB/s",

  runs() {
    const base = {
      scenario: "firstreply",
      dir: "echo" as const,
      delayMs: DELAY_MS,
      rates: [0],
      bytes: BYTES,
      conns: CONNS,
      hash: true,
      deadlineMs: 0,
      timeoutMs: 30_000,
      args: { app: ["--sequential", "1"] },
    };
    const pair = { ...base, path: "pair" as const, mid: "link" as const, stripes: 4 };
    return [
      { ...base, key: KEYS.direct, label: "direct through the link", path: "link" },
      { ...pair, key: KEYS.keyed, label: "pair, keyed" },
      { ...pair, key: KEYS.plain, label: "pair, --no-auth", args: { ...base.args, server: ["--no-auth"], client: ["--no-auth"] } },
    ] satisfies RunSpec[];
  },

  measures: () =>
    `- firstreply: ${CONNS} connections one after another, each sends ${BYTES} bytes to an echo target and half-closes; the time from the app's connect call to the first byte of the echo, median over the connections of a run but the first (fresh processes); the link (src/main.ts link, uncapped) adds ${DELAY_MS} ms each way; the pair's stripes cross the link, the direct connection does too.`,

  collect(ev: TransferEvents): Record<string, number> {
    const conns = (ev.done.conns as { t0?: number; tFirst?: number }[] | undefined) ?? [];
    const waits = conns.slice(1).filter((c) => c.tFirst && c.t0).map((c) => c.tFirst! - c.t0!);
    const m = summarize(waits).median;
    return m === null ? {} : { firstReplyMs: m };
  },

  figures({ results }) {
    const pick = (r: { figures?: Record<string, number> }) => r.figures?.firstReplyMs ?? null;
    const fig = (key: string, name: string): Figure => plainFigure(results, { scenario: "firstreply", case: name, key, unit: "ms", pick });
    const direct = fig(KEYS.direct, `direct through the link (${DELAY_MS} ms each way)`);
    const keyed = fig(KEYS.keyed, "pair, keyed, 4 stripes");
    const plain = fig(KEYS.plain, "pair, --no-auth, 4 stripes");
    // Median of the pair's runs minus median of the direct runs.
    const extra = (pair: Figure, label: string): Figure => {
      const d = direct.value.median;
      const p = pair.value.median;
      const both = [...(results.get(KEYS.direct) ?? []), ...(results.get(pair === keyed ? KEYS.keyed : KEYS.plain) ?? [])];
      return {
        scenario: "firstreply",
        case: label,
        unit: "ms",
        value: summarize(d === null || p === null ? [] : [p - d]),
        tally: tally(both),
        target: { kind: "max", below: WITHIN_MS, text: `< ${WITHIN_MS} ms` },
        note: okRuns(both).length ? "median of the pair's runs − median of the direct runs" : "",
      };
    };
    return [direct, keyed, plain, extra(keyed, "keyed pair − direct"), extra(plain, "--no-auth pair − direct")];
  },
};
