/**
 * sessions: 100 concurrent sessions through the pair (no link), each echoing 4 MiB through a target,
 * 4 stripes each: wall time, every session intact, and the peak RSS of each proxy.
 */

import { medianOf, plainFigure, tally } from "../lib/figures.ts";
import { MB, MiB, fmt } from "../lib/stats.ts";
import type { Scenario } from "../lib/types.ts";

const SESSIONS = 100;
const SESSION_BYTES = 4 * MiB;
const KEY = "sessions/echo";
/** Peak RSS each proxy must stay under, MB (10^6 B), in the worst run. */
const RSS_LIMIT_MB = 200;

export const sessions: Scenario = {
  name: "sessions",
  description: `${SESSIONS} concurrent sessions × ${SESSION_BYTES / MiB} MiB each way through an echo target, 4 stripes each`,
  reads: [],
  rateUnit: "MB/s",

  runs: () => [
    {
      key: KEY,
      scenario: "sessions",
      label: `${SESSIONS} sessions echo`,
      dir: "echo",
      path: "pair",
      mid: "none",
      stripes: 4,
      bytes: SESSION_BYTES,
      conns: SESSIONS,
      hash: true,
      deadlineMs: 0,
      timeoutMs: 120_000,
      measure: ["client", "server"],
    },
  ],

  measures: () =>
    `- sessions: ${SESSIONS} concurrent connections through the pair (no link), each sends ${SESSION_BYTES / MiB} MiB to an echo target and compares the SHA-256 of what comes back; wall time from the first connect to the last close; RSS = VmHWM of each proxy (worst run checked).`,

  figures({ results }) {
    const all = results.get(KEY) ?? [];
    const total = all.reduce((a, r) => a + (r.sessions?.total ?? SESSIONS), 0);
    const intact = all.reduce((a, r) => a + (r.sessions?.intact ?? 0), 0);
    const agg = medianOf(results, KEY, (r) => r.rate / MB);
    return [
      plainFigure(results, {
        scenario: "sessions",
        case: `${SESSIONS} sessions × ${SESSION_BYTES / MiB} MiB each way, 4 stripes: wall time`,
        key: KEY,
        unit: "s",
        pick: (r) => r.seconds,
        note: agg !== null ? `${fmt(agg)} MB/s each way in total` : "",
      }),
      {
        scenario: "sessions",
        case: "sessions intact (sha256 of echo = sent)",
        unit: "",
        // Counted over every run, failed ones too: a session that broke is the point of this row.
        value: { median: intact, min: null, max: null, n: all.length },
        text: `${intact}/${total}`,
        tally: tally(all),
        target: { kind: "equal", to: total, text: "all" },
        note: "",
      },
      ...(["client", "server"] as const).map((proc) =>
        plainFigure(results, {
          scenario: "sessions",
          case: `${proc} proxy peak RSS (VmHWM)`,
          key: KEY,
          unit: "MB",
          pick: (r) => (r.rss[proc] !== undefined ? r.rss[proc]! / MB : null),
          target: { kind: "max", below: RSS_LIMIT_MB, text: `< ${RSS_LIMIT_MB} MB (worst run)` },
        }),
      ),
    ];
  },
};
