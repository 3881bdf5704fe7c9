/**
 * caps: a capped link (--cap per connection, --delay one way). One direct connection through the link,
 * then the proxy pair with N stripes through it (--stripes), upload and download; ideal N × cap.
 */

import { rateFigure, summaryOf } from "../lib/figures.ts";
import { MB, type Summary } from "../lib/stats.ts";
import { capsSvg } from "../lib/svg.ts";
import type { RunSpec, Scenario } from "../lib/types.ts";

const DIRS = ["up", "down"] as const;

export const caps: Scenario = {
  name: "caps",
  description: "N stripes through a link capped per connection, upload and download, against N × cap",
  reads: ["cap", "delay", "stripes", "quick"],
  rateUnit: "MB/s",

  runs({ o, T }) {
    const specs: RunSpec[] = [];
    const cap = o.capMBps;
    const bound = { deadlineMs: 2 * T * 1000, timeoutMs: (2 * T + 30) * 1000 };
    for (const dir of DIRS) {
      specs.push({
        key: `caps/${dir}/direct`,
        scenario: "caps",
        label: `direct ${dir}`,
        dir,
        path: "link",
        rates: [cap],
        delayMs: o.delayMs,
        bytes: Math.round(cap * MB * T),
        conns: 1,
        hash: true,
        ...bound,
      });
      for (const n of o.stripes) {
        specs.push({
          key: `caps/${dir}/N${n}`,
          scenario: "caps",
          label: `pair N=${n} ${dir}`,
          dir,
          path: "pair",
          mid: "link",
          rates: [cap],
          delayMs: o.delayMs,
          stripes: n,
          bytes: Math.round(n * cap * MB * T),
          conns: 1,
          hash: true,
          ...bound,
        });
      }
    }
    return specs;
  },

  measures: ({ T }) =>
    `- caps: one connection, sized for ~${T} s at the ideal rate (direct: cap × ${T} s; pair: N × cap × ${T} s); data hashed (SHA-256) at both ends.`,

  figures({ o, results }) {
    const cap = o.capMBps;
    return DIRS.flatMap((dir) => {
      const arrow = dir === "up" ? "upload" : "download";
      return [
        rateFigure(results, {
          scenario: "caps",
          case: `${arrow}: direct, 1 connection through the link`,
          key: `caps/${dir}/direct`,
          unit: "MB/s",
          reference: { label: "cap", value: cap },
        }),
        ...o.stripes.map((n) =>
          rateFigure(results, {
            scenario: "caps",
            case: `${arrow}: pair, N=${n}`,
            key: `caps/${dir}/N${n}`,
            unit: "MB/s",
            reference: { label: "N×cap", value: n * cap },
            minRatio: 0.9,
          }),
        ),
      ];
    });
  },

  charts({ o, results }, subtitle) {
    const s = (key: string): Summary | undefined => {
      const v = summaryOf(results.get(key), (r) => r.rate / MB);
      return v.median === null ? undefined : v;
    };
    return [
      {
        name: "caps.svg",
        svg: capsSvg({
          title: `Striped throughput over a capped link (${o.capMBps} MB/s per connection, ${o.delayMs} ms one way)`,
          subtitle,
          capMBps: o.capMBps,
          stripes: o.stripes,
          up: o.stripes.map((n) => s(`caps/up/N${n}`)),
          down: o.stripes.map((n) => s(`caps/down/N${n}`)),
          directUp: s("caps/up/direct"),
          directDown: s("caps/down/direct"),
        }),
      },
    ];
  },
};
