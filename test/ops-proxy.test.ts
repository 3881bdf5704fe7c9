/**
 * The operations endpoint of real proxy processes (not a fake source): /metrics passes promtool during
 * and after a striped transfer, its byte counters agree with the transfer's known size (within 1 %, the
 * issue's bound; they are exact in practice), /api/sessions shows the live session and its stripes, and
 * handshake rejections and refused sessions are counted by reason.
 */

import { expect, test } from "bun:test";
import type { ApiSessions } from "../src/ops/http.ts";
import { generateKey } from "../src/secure/keys.ts";
import { appExchange, converse, randomData, sha256, startTarget } from "./helpers/net.ts";
import { Proc } from "./helpers/proc.ts";
import { promtool } from "./helpers/tools.ts";
import { cleanups } from "./helpers/util.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const cleanup = cleanups();
const KEY = generateKey();
const MiB = 1024 * 1024;

function spawn(args: string[], key = KEY): Proc {
  return Proc.spawn([process.execPath, MAIN, ...args], cleanup, { env: { ...(process.env as Record<string, string>), STRIPER_KEY: key } });
}

/** A proxy process with --metrics: its port and its operations URL. */
async function proxy(args: string[], what: "server" | "client", key?: string) {
  const p = spawn([...args, "--metrics", "127.0.0.1:0"], key);
  const ops = (await p.waitFor(/metrics on (http:\/\/[^ ]+\/)/))[1]!;
  return { p, ops, port: await p.listeningPort(what) };
}

/** The value of one series in an exposition (undefined when absent). */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const scrape = async (ops: string): Promise<string> => (await fetch(`${ops}metrics`)).text();

/** Scrapes until `cond` holds on the exposition (a watchdog, not a timing assumption). */
async function scrapeUntil(ops: string, cond: (text: string) => boolean, what: string): Promise<string> {
  const end = performance.now() + 60_000;
  for (;;) {
    const text = await scrape(ops);
    if (cond(text)) return text;
    if (performance.now() > end) throw new Error(`/metrics never showed ${what}:\n${text}`);
    await Bun.sleep(20);
  }
}

/** Within 1 % of `want`. */
function near(got: number | undefined, want: number): void {
  expect(got).toBeDefined();
  expect(Math.abs(got! - want)).toBeLessThanOrEqual(want * 0.01);
}

test("a real transfer: promtool-clean /metrics, byte counters within 1 % of the known size, the live session in /api/sessions", async () => {
  const target = startTarget({ mode: "echo" });
  cleanup.push(() => target.stop());
  // One process: the figures asserted (its buffer limit) are one process's (a --workers fleet adds them up).
  const server = await proxy(["server", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${target.port}`, "--workers", "1"], "server");
  const client = await proxy(["client", "--listen", "127.0.0.1:0", "--peer", `127.0.0.1:${server.port}`, "--stripes", "4"], "client");

  // 16 MiB echoed, the session still open.
  const conv = await converse(client.port);
  const first = randomData(16 * MiB, 11);
  conv.send(first);
  await conv.received(first.byteLength);
  for (const ops of [client.ops, server.ops]) {
    const text = await scrapeUntil(ops, (t) => sample(t, "striper_stripes_open") === 4, "4 stripes open");
    expect((await promtool(text)).output).toBe("");
    expect(sample(text, "striper_sessions_open")).toBe(1);
    near(sample(text, 'striper_bytes_total{direction="up"}'), 16 * MiB);
    near(sample(text, 'striper_bytes_total{direction="down"}'), 16 * MiB);
    const api = (await (await fetch(`${ops}api/sessions`)).json()) as ApiSessions;
    expect(api.sessions.length).toBe(1);
    const s = api.sessions[0]!;
    expect(s.stripes.map((x) => x.index).sort()).toEqual([0, 1, 2, 3]);
    near(s.bytesUp, 16 * MiB);
    // The stripes carried the data (frames add headers and ACKs): what left the client is at least it.
    const sent = s.stripes.reduce((t, x) => t + x.sentBytes, 0);
    expect(sent).toBeGreaterThanOrEqual(16 * MiB);
    expect(s.remote).toMatch(/^127\.0\.0\.1:\d+$/);
  }

  // 8 MiB more, then the end: the totals count the ended session.
  const second = randomData(8 * MiB, 12);
  conv.send(second);
  const all = await conv.received(24 * MiB);
  const r = await conv.end();
  expect(r.cleanEnd).toBe(true);
  expect(sha256(all)).toBe(sha256(Buffer.concat([first, second])));
  for (const ops of [client.ops, server.ops]) {
    const text = await scrapeUntil(ops, (t) => sample(t, "striper_sessions_open") === 0, "the session ended");
    expect((await promtool(text)).output).toBe("");
    near(sample(text, 'striper_bytes_total{direction="up"}'), 24 * MiB);
    near(sample(text, 'striper_bytes_total{direction="down"}'), 24 * MiB);
    expect(sample(text, "striper_sessions_total")).toBe(1);
    expect(sample(text, "striper_session_duration_seconds_count")).toBe(1);
    // Each of the 4 stripes is sampled at least once (at the session's end) into the RTT histogram.
    expect(sample(text, "striper_stripe_rtt_seconds_count")).toBeGreaterThanOrEqual(4);
    expect(sample(text, "striper_ack_bytes_total")).toBeGreaterThan(0);
    expect(sample(text, "striper_buffer_limit_bytes")).toBe(32 * MiB);
  }
  for (const x of [server, client]) x.p.kill("SIGTERM");
  expect(await Promise.all([server.p.exited, client.p.exited])).toEqual([0, 0]);
});

test("handshake rejections and refused sessions are counted by reason, on both proxies", async () => {
  const target = startTarget({ mode: "echo" });
  cleanup.push(() => target.stop());
  // One process: --max-sessions is per worker process.
  const server = await proxy(["server", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${target.port}`, "--max-sessions", "1", "--workers", "1"], "server");
  const peer = ["--peer", `127.0.0.1:${server.port}`, "--handshake-timeout", "1s"];
  const good = await proxy(["client", "--listen", "127.0.0.1:0", ...peer], "client");
  // No standby pool for the client with the wrong key: its pool's dials would be bad-auth handshakes too.
  const wrong = await proxy(["client", "--listen", "127.0.0.1:0", "--pool", "0", ...peer], "client", generateKey());

  // One session takes the only slot; a second one through the same client is refused: "limit".
  const held = await converse(good.port);
  held.send(randomData(1000, 1));
  await held.received(1000);
  const second = await appExchange(good.port, randomData(1000, 2), { timeoutMs: 30_000 });
  expect(second.cleanEnd).toBe(false);
  // A client with another key: silence, "bad-auth"; it cannot open its session: "auth".
  const third = await appExchange(wrong.port, randomData(1000, 3), { timeoutMs: 30_000 });
  expect(third.cleanEnd).toBe(false);
  // A connection that closes before its first message is whole: "truncated".
  const raw = await Bun.connect({ hostname: "127.0.0.1", port: server.port, socket: { data() {} } });
  raw.end();

  const s = await scrapeUntil(
    server.ops,
    (t) => sample(t, 'striper_handshake_rejections_total{reason="truncated"}') === 1 && sample(t, 'striper_handshake_rejections_total{reason="bad-auth"}') === 1,
    "one truncated and one bad-auth rejection",
  );
  expect((await promtool(s)).output).toBe("");
  expect(sample(s, 'striper_sessions_refused_total{reason="limit"}')).toBe(1);
  expect(sample(s, "striper_sessions_total")).toBe(1);
  expect(sample(s, 'striper_handshake_rejections_total{reason="replay"}')).toBe(0);
  const g = await scrape(good.ops);
  expect(sample(g, 'striper_sessions_refused_total{reason="refused"}')).toBe(1);
  const w = await scrape(wrong.ops);
  expect(sample(w, 'striper_sessions_refused_total{reason="auth"}')).toBe(1);
  expect(sample(w, "striper_sessions_total")).toBe(1);

  expect((await held.end()).cleanEnd).toBe(true);
  for (const x of [server, good, wrong]) x.p.kill("SIGTERM");
  expect(await Promise.all([server.p.exited, good.p.exited, wrong.p.exited])).toEqual([0, 0, 0]);
});
