/**
 * A Prometheus stand-in for the `ops` scenario: fetches each URL every --interval-ms (the body read in
 * full, as a scraper does), one request at a time per URL, and counts.
 *
 *   bun bench/tools/scraper.ts --url http://127.0.0.1:P/metrics[,URL...] --interval-ms 1000 [--settle-ms 2000]
 *
 * stdout, JSON lines: {"event":"ready"} once every URL answered 200 and then --settle-ms have passed
 * (the runtime's own start-up — JIT, first GCs — is not part of scraping); {"event":"stats","scrapes":N,
 * "errors":E,"bytes":B,"cpuSeconds":C,"seconds":S} on SIGTERM (its own CPU and wall time since ready),
 * then exit 0.
 */

import { emit, parseFlags } from "../lib/data.ts";

const USAGE = "usage: scraper.ts --url URL[,URL...] --interval-ms MS [--settle-ms MS]";
const f = parseFlags(process.argv.slice(2), ["--url", "--interval-ms", "--settle-ms"], USAGE);
const urls = (f.get("--url") ?? "").split(",").filter(Boolean);
const interval = Number(f.get("--interval-ms") ?? 1000);
const settleMs = Number(f.get("--settle-ms") ?? 2000);
if (urls.length === 0 || !(interval > 0) || !(settleMs >= 0)) {
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
            setTimeout(() => {
              cpu0 = process.cpuUsage();
              since = performance.now();
              emit({ event: "ready" });
            }, settleMs);
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
