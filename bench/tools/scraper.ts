/**
 * A Prometheus stand-in for the `ops` scenario: fetches each URL every --interval-ms (the body read in
 * full, as a scraper does), one request at a time per URL, and counts.
 *
 *   bun bench/tools/scraper.ts --url http://127.0.0.1:P/metrics[,URL...] --interval-ms 1000
 *
 * stdout, JSON lines: {"event":"ready"} once every URL answered 200; {"event":"stats","scrapes":N,
 * "errors":E,"bytes":B,"cpuSeconds":C,"seconds":S} on SIGTERM (its own CPU and wall time since ready),
 * then exit 0.
 */

import { emit, parseFlags } from "../lib/data.ts";

const USAGE = "usage: scraper.ts --url URL[,URL...] --interval-ms MS";
const f = parseFlags(process.argv.slice(2), ["--url", "--interval-ms"], USAGE);
const urls = (f.get("--url") ?? "").split(",").filter(Boolean);
const interval = Number(f.get("--interval-ms") ?? 1000);
if (urls.length === 0 || !(interval > 0)) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}

let scrapes = 0;
let errors = 0;
let bytes = 0;
const answered = new Set<string>();
/** CPU usage and time when every URL had answered (the "ready" event). */
let cpu0 = process.cpuUsage();
let since = performance.now();

async function loop(url: string): Promise<void> {
  for (;;) {
    const started = performance.now();
    try {
      const r = await fetch(url);
      const body = await r.text();
      if (r.ok) {
        scrapes++;
        bytes += body.length;
        if (!answered.has(url)) {
          answered.add(url);
          if (answered.size === urls.length) {
            cpu0 = process.cpuUsage();
            since = performance.now();
            emit({ event: "ready" });
          }
        }
      } else errors++;
    } catch {
      errors++;
    }
    await Bun.sleep(Math.max(0, interval - (performance.now() - started)));
  }
}

process.on("SIGTERM", () => {
  const c = process.cpuUsage(cpu0);
  emit({ event: "stats", scrapes, errors, bytes, cpuSeconds: (c.user + c.system) / 1e6, seconds: (performance.now() - since) / 1000 });
  process.exit(0);
});
for (const u of urls) void loop(u);
