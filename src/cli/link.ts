/**
 * `link` mode: run a capped link from the command line.
 *
 *   bun run src/cli/link.ts --listen 127.0.0.1:9000 --target 127.0.0.1:9001 --rate 4,4,4,0.4 --delay 10 [--burst BYTES] [--connect-delay MS]
 *
 * Rates in MB/s (10^6 bytes/s), assigned to connections in turn, 0 = uncapped; delay in ms one way.
 */

import { flags, parseAddress, parseNumber } from "./args.ts";
import { UsageError } from "../errors.ts";
import { type CappedLinkOptions, type LinkConnStats, startCappedLink } from "../link/capped.ts";
import { stderrLog, type LogSink } from "../proxy/log.ts";
import { ListenError } from "../ops/daemon.ts";

/**
 * Parses `link` arguments into capped-link options with the same helpers as the other modes;
 * throws UsageError on anything malformed.
 */
export function parseLinkArgs(argv: string[]): CappedLinkOptions {
  const f = flags(argv, ["listen", "target", "rate", "delay", "burst", "connect-delay"], "link");
  const target = f.get("target");
  if (target === undefined) throw new UsageError("link: --target is required");
  const t = parseAddress(target, "--target");
  const l = parseAddress(f.get("listen") ?? "127.0.0.1:0", "--listen");
  const opts: CappedLinkOptions = { listenHost: l.host, listenPort: l.port, targetHost: t.host, targetPort: t.port };
  const rate = f.get("rate");
  if (rate !== undefined) opts.rates = rate.split(",").map((r) => parseNumber(r, "--rate", 0, Infinity) * 1e6);
  const delay = f.get("delay");
  if (delay !== undefined) opts.delayMs = parseNumber(delay, "--delay", 0, Infinity);
  const burst = f.get("burst");
  if (burst !== undefined) opts.burst = parseNumber(burst, "--burst", 1, Infinity);
  const connectDelay = f.get("connect-delay");
  if (connectDelay !== undefined) opts.connectDelayMs = parseNumber(connectDelay, "--connect-delay", 0, 60_000);
  return opts;
}

function describe(c: LinkConnStats): string {
  const cap = c.rate > 0 ? `${c.rate / 1e6} MB/s` : "uncapped";
  const how = c.open ? "open" : c.error === undefined ? "closed" : `reset (${c.error})`;
  return `link conn ${c.index} [${cap}]: up ${c.bytesUp} B, down ${c.bytesDown} B, ${how}`;
}

/** "4 MB/s", "4,4,4,0.4 MB/s (in turn)", "uncapped". */
function describeRates(rates: readonly number[] | undefined): string {
  const r = rates?.length ? rates : [0];
  if (r.every((x) => x === 0)) return "uncapped";
  const list = r.map((x) => (x === 0 ? "uncapped" : String(x / 1e6))).join(",");
  return r.length === 1 ? `${list} MB/s per connection` : `${list} MB/s per connection (in turn)`;
}

/**
 * Runs the link until SIGINT/SIGTERM, then stops it and resolves (the caller exits 0). Bad arguments
 * throw UsageError. Lines go to `log` (timestamped, like the other modes). SIGUSR1 logs every open
 * connection's counters; SIGHUP is ignored with a line (nothing to reload): neither kills the link.
 */
export async function runLinkCli(argv: string[], log: LogSink = stderrLog): Promise<void> {
  const opts = parseLinkArgs(argv);
  opts.onConnectionClosed = (c) => log(describe(c));
  // Caught before the listener starts, so that no signal finds the default action (which kills).
  let link: Awaited<ReturnType<typeof startCappedLink>> | undefined;
  process.on("SIGUSR1", () => {
    if (!link) return;
    const open = link.connections().filter((c) => c.open);
    log(`link: ${open.length} connection(s) open, ${link.queuedBytes()} B held in the link`);
    for (const c of open) log(describe(c));
    // What each open connection holds (bench/tools/windowed-run.ts locates queues with it).
    if (open.length > 0) {
      const parts = link.held().map((h) => `#${h.index} up wire ${h.up.wire} queue ${h.up.queue} down wire ${h.down.wire} queue ${h.down.queue}`);
      log(`link held ${parts.join("; ")}`);
    }
  });
  process.on("SIGHUP", () => log("link: SIGHUP ignored (nothing to reload)"));
  try {
    link = await startCappedLink(opts);
  } catch (err) {
    // One line naming the address and the reason, as the other modes say it (issue 12).
    throw new ListenError({ host: opts.listenHost ?? "127.0.0.1", port: opts.listenPort ?? 0 }, "", err);
  }
  const burst = (opts.burst !== undefined ? ` burst ${opts.burst} B` : "") + (opts.connectDelayMs ? ` connect delay ${opts.connectDelayMs} ms` : "");
  log(`link listening on ${link.hostname}:${link.port} -> ${opts.targetHost}:${opts.targetPort} rate ${describeRates(opts.rates)} delay ${opts.delayMs ?? 0} ms each way${burst}`);
  await new Promise<void>((resolve) => {
    const done = () => {
      process.off("SIGINT", done);
      process.off("SIGTERM", done);
      resolve();
    };
    process.on("SIGINT", done);
    process.on("SIGTERM", done);
  });
  await link.stop();
}

if (import.meta.main) {
  runLinkCli(process.argv.slice(2)).then(
    () => process.exit(0),
    (err) => {
      console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(err instanceof UsageError ? 2 : 1);
    },
  );
}
