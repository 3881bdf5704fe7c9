/**
 * `link` mode: run a capped link from the command line.
 *
 *   bun run src/link/cli.ts --listen 127.0.0.1:9000 --target 127.0.0.1:9001 --rate 4,4,4,0.4 --delay 10 [--burst BYTES]
 *
 * Rates in MB/s (10^6 bytes/s), assigned to connections in turn, 0 = uncapped; delay in ms one way.
 */

import { UsageError } from "../errors.ts";
import { type CappedLinkOptions, type LinkConnStats, startCappedLink } from "./capped.ts";

const USAGE = "usage: link --target HOST:PORT [--listen HOST:PORT] [--rate MBPS[,MBPS...]] [--delay MS] [--burst BYTES]";

function parseHostPort(flag: string, v: string): { host: string; port: number } {
  const i = v.lastIndexOf(":");
  const host = v.slice(0, i).replace(/^\[(.*)\]$/, "$1"); // [::1]:9000
  const port = Number(v.slice(i + 1));
  if (i <= 0 || !host || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`${flag} wants HOST:PORT, got "${v}"`);
  }
  return { host, port };
}

function parseNumber(flag: string, v: string, min: number): number {
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < min) throw new UsageError(`${flag} wants a number >= ${min}, got "${v}"`);
  return n;
}

/** Parses `link` arguments into capped-link options; throws UsageError on anything malformed. */
export function parseLinkArgs(argv: string[]): CappedLinkOptions {
  const vals = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf("=");
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (!["--listen", "--target", "--rate", "--delay", "--burst"].includes(flag)) throw new UsageError(`unknown argument "${a}"; ${USAGE}`);
    const v = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (v === undefined) throw new UsageError(`${flag} needs a value`);
    vals.set(flag, v);
  }
  const target = vals.get("--target");
  if (target === undefined) throw new UsageError(`--target is required; ${USAGE}`);
  const t = parseHostPort("--target", target);
  const l = parseHostPort("--listen", vals.get("--listen") ?? "127.0.0.1:0");
  const opts: CappedLinkOptions = { listenHost: l.host, listenPort: l.port, targetHost: t.host, targetPort: t.port };
  const rate = vals.get("--rate");
  if (rate !== undefined) opts.rates = rate.split(",").map((r) => parseNumber("--rate", r, 0) * 1e6);
  const delay = vals.get("--delay");
  if (delay !== undefined) opts.delayMs = parseNumber("--delay", delay, 0);
  const burst = vals.get("--burst");
  if (burst !== undefined) opts.burst = parseNumber("--burst", burst, 1);
  return opts;
}

function describe(c: LinkConnStats): string {
  const cap = c.rate > 0 ? `${c.rate / 1e6} MB/s` : "uncapped";
  const how = c.error === undefined ? "closed" : `reset (${c.error})`;
  return `link conn ${c.index} [${cap}]: up ${c.bytesUp} B, down ${c.bytesDown} B, ${how}`;
}

/** Runs the link until SIGINT/SIGTERM, then stops it and resolves (the caller exits 0). Bad arguments throw UsageError. */
export async function runLinkCli(argv: string[]): Promise<void> {
  const opts = parseLinkArgs(argv);
  opts.onConnectionClosed = (c) => console.error(describe(c));
  const link = await startCappedLink(opts);
  console.error(`link listening on ${link.hostname}:${link.port} -> ${opts.targetHost}:${opts.targetPort}`);
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
      console.error(`link: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(err instanceof UsageError ? 2 : 1);
    },
  );
}
