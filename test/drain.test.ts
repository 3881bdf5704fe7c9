/**
 * Graceful drain, as an operator triggers it: real processes, real signals, a 64 MiB striped echo through
 * a rate-capped fault proxy (so the transfer is still going when the signal lands: the signal is sent
 * once the app has received 8 MiB, a condition, not a sleep).
 *
 *   server SIGTERM: the transfer completes exact, /healthz says 503, a new session is refused (an
 *   authenticated REFUSED: the app is reset, the server counts it as refused "draining"), a stripe reset
 *   during the drain re-dials and is admitted (JOIN), and the process exits 0 once the session ends;
 *   client SIGTERM: the same for the client's app connections (its listener closes);
 *   a short --drain-timeout: the transfer is reset, not cut short into a clean EOF, and the log says why.
 */

import { expect, test } from "bun:test";
import { startFaultProxy, type FaultProxy } from "../src/link/fault.ts";
import { generateKey } from "../src/secure/keys.ts";
import { appExchange, randomData, sha256, startTarget } from "./helpers/net.ts";
import { Proc } from "./helpers/proc.ts";
import { cleanups } from "./helpers/util.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const cleanup = cleanups();
const ENV: Record<string, string> = { ...(process.env as Record<string, string>), STRIPER_KEY: generateKey() };
const MiB = 1024 * 1024;

function spawn(args: string[]): Proc {
  return Proc.spawn([process.execPath, MAIN, ...args], cleanup, { env: ENV });
}

/** The value of an unlabelled or labelled sample in a /metrics text (0 when absent). */
function sample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/** target ← server ← fault proxy (capped per stripe) ← client, every proxy with --metrics. */
async function chain(opts: { serverArgs?: string[]; clientArgs?: string[]; rate: number }) {
  const target = startTarget({ mode: "echo" });
  cleanup.push(() => target.stop());
  // One process: with several workers the reply would send JOINs to a worker's join port, past the fault proxy.
  const server = spawn(["server", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${target.port}`, "--metrics", "127.0.0.1:0", "--workers", "1", ...(opts.serverArgs ?? [])]);
  const serverOps = (await server.waitFor(/metrics on (http:\/\/[^ ]+\/)/))[1]!;
  const serverPort = await server.listeningPort("server");
  const fault: FaultProxy = await startFaultProxy({ targetHost: "127.0.0.1", targetPort: serverPort, rate: opts.rate });
  cleanup.push(() => fault.stop());
  const client = spawn(["client", "--listen", "127.0.0.1:0", "--peer", `127.0.0.1:${fault.port}`, "--stripes", "4", "--metrics", "127.0.0.1:0", ...(opts.clientArgs ?? [])]);
  const clientOps = (await client.waitFor(/metrics on (http:\/\/[^ ]+\/)/))[1]!;
  const clientPort = await client.listeningPort("client");
  return { target, server, serverOps, fault, client, clientOps, clientPort };
}

/** Starts a 64 MiB echo through `port`; resolves the exchange and, separately, once 8 MiB came back. */
function bigTransfer(port: number, seed: number) {
  const data = randomData(64 * MiB, seed);
  let progressed!: () => void;
  const midway = new Promise<void>((r) => (progressed = r));
  const result = appExchange(port, data, { timeoutMs: 110_000, onData: (n) => n >= 8 * MiB && progressed() });
  return { data, result, midway };
}

const health = async (ops: string): Promise<number> => (await fetch(`${ops}healthz`)).status;
const metrics = async (ops: string): Promise<string> => (await fetch(`${ops}metrics`)).text();

test("server SIGTERM during a 64 MiB striped transfer: it completes exact, new sessions are refused, re-dialled stripes join, exit 0", async () => {
  // 4 stripes × 8 MB/s each way: the echo takes about 2 s, so the drain has work to wait for.
  const c = await chain({ rate: 8e6 });
  const t = bigTransfer(c.clientPort, 61);
  await t.midway;
  expect(await health(c.serverOps)).toBe(200);
  c.server.kill("SIGTERM");
  await c.server.waitFor(/SIGTERM: draining 1 session\(s\), new ones refused/);
  expect(await health(c.serverOps)).toBe(503);
  expect(sample(await metrics(c.serverOps), "striper_draining")).toBe(1);

  // A new app connection: the client's OPEN gets an authenticated REFUSED, the app a reset.
  const refused = await appExchange(c.clientPort, randomData(1000, 62), { timeoutMs: 30_000 });
  expect(refused.cleanEnd).toBe(false);
  expect(refused.error).toBeDefined();
  await c.server.waitFor(/refused: E_DRAINING draining/);
  await c.client.waitFor(/session \w+ end .* reason E_REFUSED server proxy refused the stripe/);

  // A stripe of the live session dies during the drain: the client re-dials it and the server admits
  // the JOIN (the session keeps its stripes; a drain that refused it would leave 3).
  const before = sample(await metrics(c.serverOps), "striper_redials_total");
  c.fault.live()[1]!.reset();
  const deadline = performance.now() + 60_000;
  while (sample(await metrics(c.serverOps), "striper_redials_total") === before) {
    if (performance.now() > deadline) throw new Error(`no re-dialled stripe joined during the drain:\n${c.server.text}`);
    await Bun.sleep(20);
  }

  const r = await t.result;
  expect(r.error).toBeUndefined();
  expect(r.cleanEnd).toBe(true);
  expect(r.received.byteLength).toBe(t.data.byteLength);
  expect(sha256(r.received)).toBe(sha256(t.data));
  expect(await c.server.exited).toBe(0);
  expect(c.server.text).toMatch(/session \w+ end up 64\.0 MiB down 64\.0 MiB .* reason ok/);
  expect(c.server.text).toMatch(/stopped: every session ended/);
  // The client counted the refused session; it goes on serving.
  expect(sample(await metrics(c.clientOps), 'striper_sessions_refused_total{reason="refused"}')).toBe(1);
  c.client.kill("SIGTERM");
  expect(await c.client.exited).toBe(0);
});

test("client SIGTERM during a 64 MiB striped transfer: it completes exact, new app connections are refused, exit 0", async () => {
  const c = await chain({ rate: 8e6 });
  const t = bigTransfer(c.clientPort, 71);
  await t.midway;
  c.client.kill("SIGTERM");
  await c.client.waitFor(/SIGTERM: draining 1 session\(s\)/);
  expect(await health(c.clientOps)).toBe(503);
  // The listener is closed: the system refuses the connection.
  const refused = await appExchange(c.clientPort, randomData(10, 72)).then(
    () => "connected",
    (err: { code?: string }) => err.code,
  );
  expect(refused).toBe("ECONNREFUSED");
  const r = await t.result;
  expect(r.error).toBeUndefined();
  expect(r.cleanEnd).toBe(true);
  expect(sha256(r.received)).toBe(sha256(t.data));
  expect(await c.client.exited).toBe(0);
  expect(c.client.text).toMatch(/stopped: every session ended/);
  // The server was not involved in the drain: it serves on.
  expect(await health(c.serverOps)).toBe(200);
  c.server.kill("SIGTERM");
  expect(await c.server.exited).toBe(0);
});

test("a short --drain-timeout resets the transfer (never a clean EOF) and logs why; exit 0", async () => {
  // 4 × 2 MB/s: the rest of the 64 MiB needs seconds, the drain allows 300 ms.
  const c = await chain({ rate: 2e6, serverArgs: ["--drain-timeout", "300ms"] });
  const data = randomData(64 * MiB, 81);
  let progressed!: () => void;
  const midway = new Promise<void>((r) => (progressed = r));
  const result = appExchange(c.clientPort, data, { timeoutMs: 110_000, onData: (n) => n >= MiB && progressed() });
  await midway;
  c.server.kill("SIGTERM");
  const r = await result;
  expect(r.cleanEnd).toBe(false);
  expect(r.error).toBeDefined();
  expect(r.received.byteLength).toBeLessThan(data.byteLength);
  expect(await c.server.exited).toBe(0);
  expect(c.server.text).toMatch(/stopped: drain deadline of 300 ms passed, 1 session\(s\) reset \(E_DRAIN_TIMEOUT\)/);
  expect(c.server.text).toMatch(/session \w+ end .* reason E_DRAIN_TIMEOUT drain deadline of 300 ms passed/);
  // The client learnt why from the RESET the server sent.
  await c.client.waitFor(/session \w+ end .* reason E_PEER_RESET .*drain deadline of 300 ms passed/);
  c.client.kill("SIGTERM");
  expect(await c.client.exited).toBe(0);
});

test("SIGINT drains like SIGTERM; a second signal during the drain ends it at once: the transfer is reset, exit 0", async () => {
  // 4 × 2 MB/s and the default 30 s drain: only the second signal can end this drain within the test.
  const c = await chain({ rate: 2e6 });
  const data = randomData(64 * MiB, 91);
  let progressed!: () => void;
  const midway = new Promise<void>((r) => (progressed = r));
  const result = appExchange(c.clientPort, data, { timeoutMs: 110_000, onData: (n) => n >= MiB && progressed() });
  await midway;
  c.server.kill("SIGINT");
  await c.server.waitFor(/SIGINT: draining 1 session\(s\), new ones refused; up to 30000 ms/);
  expect(await health(c.serverOps)).toBe(503);
  c.server.kill("SIGTERM");
  const r = await result;
  expect(r.cleanEnd).toBe(false);
  expect(r.error).toBeDefined();
  expect(r.received.byteLength).toBeLessThan(data.byteLength);
  expect(await c.server.exited).toBe(0);
  expect(c.server.text).toMatch(/stopped: second signal, 1 session\(s\) reset \(E_SHUTDOWN\)/);
  await c.client.waitFor(/session \w+ end .* reason E_PEER_RESET .*stopped by a second signal/);
  c.client.kill("SIGTERM");
  expect(await c.client.exited).toBe(0);
});
