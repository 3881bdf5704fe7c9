/**
 * The proxy pair end to end over real loopback sockets: integrity in both directions at once,
 * half-close, backpressure bounds, and every failure path the app can see.
 */

import { describe, expect, test } from "bun:test";
import { startClient, type StriperClient } from "../src/proxy/client.ts";
import { startServer, type StriperServer } from "../src/proxy/server.ts";
import { startCappedLink, type CappedLink } from "../src/link/capped.ts";
import { startFaultProxy, type FaultProxy } from "../src/link/fault.ts";
import { DEFAULT_SESSION_OPTIONS, type SessionOptions } from "../src/pipe/striped.ts";
import { MIN_WINDOW, ReceiveWindows } from "../src/stripe/budget.ts";
import { appExchange, randomData, sha256, startTarget, type Target } from "./helpers/net.ts";
import { KEYED } from "./helpers/keys.ts";
import { cleanups, until } from "./helpers/util.ts";

const LOOP = "127.0.0.1";
const quiet = () => {};
/**
 * Watchdog of a transfer: only a hang should reach it. The 64 MiB tests took 4-26 s in the issue 7 soak
 * (2 cores, kept busy), so 300 s; a test with such a transfer runs under a 600 s limit instead of the
 * suite's 120 s.
 */
const TRANSFER_WATCHDOG_MS = 300_000;
const TRANSFER_TEST_MS = 600_000;

// Everything a test starts, stopped after it whatever happened.
const cleanup = cleanups();

interface Pair {
  target: Target;
  server: StriperServer;
  client: StriperClient;
  logs: string[];
}

/** target ← server ← [optional middle] ← client, all on loopback port 0. */
async function pair(opts: {
  stripes: number;
  target?: Target;
  session?: Partial<Omit<SessionOptions, "role">>;
  middle?: (serverPort: number) => Promise<number>;
  peerPort?: number;
  /** The server's handshake deadline (silence lasts this long from the accept). */
  handshakeTimeoutMs?: number;
}): Promise<Pair> {
  const logs: string[] = [];
  const log = (l: string) => logs.push(l);
  const target = opts.target ?? startTarget({ mode: "echo" });
  const server = startServer({
    auth: KEYED,
    listen: { host: LOOP, port: 0 },
    target: { host: LOOP, port: target.port },
    session: opts.session,
    handshakeTimeoutMs: opts.handshakeTimeoutMs,
    log,
  });
  const peerPort = opts.peerPort ?? (opts.middle ? await opts.middle(server.port) : server.port);
  const client = startClient({ auth: KEYED, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port: peerPort }, stripes: opts.stripes, session: opts.session, log });
  cleanup.push(() => {
    client.stop();
    server.stop();
    target.stop();
  });
  return { target, server, client, logs };
}

async function echoIntegrity(port: number, size: number, seed: number): Promise<void> {
  const data = randomData(size, seed);
  const r = await appExchange(port, data, { timeoutMs: TRANSFER_WATCHDOG_MS });
  expect(r.error).toBeUndefined();
  expect(r.cleanEnd).toBe(true);
  expect(r.received.byteLength).toBe(size);
  expect(sha256(r.received)).toBe(sha256(data));
}

describe("striped integrity", () => {
  for (const stripes of [4, 8]) {
    test(`64 MiB each way at once over ${stripes} stripes, 3 sessions concurrently, hashes equal`, async () => {
      const p = await pair({ stripes });
      await Promise.all([1, 2, 3].map((seed) => echoIntegrity(p.client.port, 64 * 1024 * 1024, seed + stripes)));
      // Both proxies ended every session cleanly. A proxy logs the end once its session has closed, which
      // may be after the app saw EOF: wait for the six lines (watchdog far above a loaded machine's need).
      const ends = () => p.logs.filter((l) => l.includes(" end "));
      await until(() => ends().length >= 6, () => `both proxies logged the end of 3 sessions (${ends().length} lines)`, 60_000);
      expect(ends().filter((l) => l.endsWith("reason ok")).length).toBe(6);
    }, TRANSFER_TEST_MS);
  }

  test("64 MiB each way over 8 stripes through a capped link with uneven caps, 2 sessions", async () => {
    let link: CappedLink | undefined;
    const p = await pair({
      stripes: 8,
      middle: async (serverPort) => {
        link = await startCappedLink({ targetHost: LOOP, targetPort: serverPort, rates: [60e6, 60e6, 60e6, 6e6], delayMs: 2 });
        cleanup.push(() => link!.stop());
        return link.port;
      },
    });
    await Promise.all([echoIntegrity(p.client.port, 64 * 1024 * 1024, 7), echoIntegrity(p.client.port, 64 * 1024 * 1024, 8)]);
    // The link really carried the stripes: 16 connections, bytes on all of them.
    const conns = link!.connections();
    expect(conns.length).toBe(16);
    for (const c of conns) expect(c.bytesUp).toBeGreaterThan(0);
  }, TRANSFER_TEST_MS);

  test("framing overhead on the wire stays under 3% with the rate scheduler on uneven capped stripes", async () => {
    // Regression: a fractional in-flight budget once filled batches with thousands of empty DATA frames.
    let link: CappedLink | undefined;
    const target = startTarget({ mode: "reply", reply: (d) => new TextEncoder().encode(sha256(d)) });
    const p = await pair({
      stripes: 4,
      target,
      middle: async (serverPort) => {
        link = await startCappedLink({ targetHost: LOOP, targetPort: serverPort, rates: [8e6, 8e6, 8e6, 0.8e6], delayMs: 5 });
        cleanup.push(() => link!.stop());
        return link.port;
      },
    });
    const data = randomData(12 * 1024 * 1024, 12);
    const r = await appExchange(p.client.port, data, { timeoutMs: TRANSFER_WATCHDOG_MS });
    expect(r.error).toBeUndefined();
    expect(new TextDecoder().decode(r.received)).toBe(sha256(data));
    const onWire = link!.connections().reduce((n, c) => n + c.bytesUp, 0);
    expect(onWire).toBeGreaterThanOrEqual(data.byteLength);
    expect(onWire / data.byteLength).toBeLessThan(1.03);
  }, TRANSFER_TEST_MS);

  test("1 stripe carries small and empty transfers", async () => {
    const p = await pair({ stripes: 1 });
    await echoIntegrity(p.client.port, 1, 1);
    await echoIntegrity(p.client.port, 0, 1);
    await echoIntegrity(p.client.port, 100_000, 2);
  });

  test("IPv6 loopback works end to end", async () => {
    const target = startTarget({ mode: "echo", host: "::1" });
    const server = startServer({ auth: KEYED, listen: { host: "::1", port: 0 }, target: { host: "::1", port: target.port }, log: quiet });
    const client = startClient({ auth: KEYED, listen: { host: "::1", port: 0 }, peer: { host: "::1", port: server.port }, stripes: 3, log: quiet });
    cleanup.push(() => {
      client.stop();
      server.stop();
      target.stop();
    });
    const data = randomData(1 << 20, 3);
    const r = await appExchange(client.port, data, { host: "::1" });
    expect(r.error).toBeUndefined();
    expect(sha256(r.received)).toBe(sha256(data));
  });
});

describe("half-close", () => {
  test("the app shuts its write side and still reads the target's reply, then EOF", async () => {
    const target = startTarget({ mode: "reply", reply: (d) => new TextEncoder().encode(`got ${d.byteLength} bytes ${sha256(d)}`) });
    const p = await pair({ stripes: 4, target });
    const data = randomData(3 * 1024 * 1024 + 17, 11);
    const r = await appExchange(p.client.port, data);
    expect(r.error).toBeUndefined();
    expect(r.cleanEnd).toBe(true);
    expect(new TextDecoder().decode(r.received)).toBe(`got ${data.byteLength} bytes ${sha256(data)}`);
    // The target saw EOF only after every byte.
    expect(target.conns[0]!.gotEnd).toBe(true);
    expect(target.conns[0]!.receivedBytes).toBe(data.byteLength);
  });
});

describe("backpressure", () => {
  test("a slow target keeps the proxies' queues under their limits", async () => {
    const window = 1024 * 1024;
    const target = startTarget({ mode: "echo", readDelayMs: 5 });
    const p = await pair({ stripes: 4, target, session: { window } });
    const data = randomData(24 * 1024 * 1024, 21);
    let maxReorder = 0;
    let maxSend = 0;
    let samples = 0;
    const sampler = setInterval(() => {
      for (const s of [...p.server.sessions.values(), ...p.client.sessions]) {
        const m = s.metrics();
        maxReorder = Math.max(maxReorder, m.reorderBytes, m.peakReorderBytes);
        maxSend = Math.max(maxSend, m.sendBufferBytes, m.peakSendBufferBytes);
        samples++;
      }
    }, 5);
    const r = await appExchange(p.client.port, data, { timeoutMs: TRANSFER_WATCHDOG_MS });
    clearInterval(sampler);
    expect(r.error).toBeUndefined();
    expect(sha256(r.received)).toBe(sha256(data));
    expect(samples).toBeGreaterThan(10);
    // Reorder buffer: never more than the window. Send store: the window plus at most one read chunk.
    expect(maxReorder).toBeLessThanOrEqual(window);
    expect(maxSend).toBeLessThanOrEqual(window + 512 * 1024);
    // And the limit was really reached: the test exercises backpressure, not an idle path.
    expect(maxSend).toBeGreaterThan(window / 2);
  }, TRANSFER_TEST_MS);
});

describe("memory budget", () => {
  test("the shared buffer budget bounds all sessions' stores together", async () => {
    const logs: string[] = [];
    const target = startTarget({ mode: "echo", readDelayMs: 2 });
    const server = startServer({ auth: KEYED, listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: target.port }, log: (l) => logs.push(l) });
    const maxBuffer = 4 * 1024 * 1024;
    const client = startClient({ auth: KEYED, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port: server.port }, stripes: 2, maxBuffer, log: (l) => logs.push(l) });
    cleanup.push(() => {
      client.stop();
      server.stop();
      target.stop();
    });
    const sessions = 10;
    await Promise.all(Array.from({ length: sessions }, (_, k) => echoIntegrity(client.port, 4 * 1024 * 1024, 200 + k)));
    // Without the budget the stores could hold all 40 MiB; with it, the SendBudget's bound (budget.ts):
    // the pool and the parked account (at most the limit each), plus each session's minimum and one read chunk.
    expect(client.budget.peak).toBeGreaterThan(maxBuffer / 2);
    expect(client.budget.peak).toBeLessThanOrEqual(2 * maxBuffer + sessions * (client.budget.minShare + 512 * 1024));
    expect(client.budget.used).toBe(0);
  }, TRANSFER_TEST_MS);
});

describe("memory budget: windows", () => {
  test("sessions opened under load get smaller receive windows, and still deliver intact", async () => {
    // The window rule is unit-tested in sessions.test.ts. Here: the server proxy really applies it with its
    // own count of live sessions. The target holds every session open (it withholds its FIN) until all five
    // have been admitted, so they overlap by construction, not by timing (issue 7: with sleeps between the
    // openings, a busy machine let early sessions finish first and the smaller windows never appeared).
    let releaseTargets!: () => void;
    const allAdmitted = new Promise<void>((r) => (releaseTargets = r));
    const target = startTarget({ mode: "echo", holdEnd: allAdmitted });
    // Receive memory for 16 sessions of 32 MiB in all: windows are granted against it as sessions open.
    const maxReceiveBuffer = 32 * 1024 * 1024;
    const maxSessions = 16;
    const server = startServer({ auth: KEYED, listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: target.port }, maxReceiveBuffer, maxSessions, log: quiet });
    const client = startClient({ auth: KEYED, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port: server.port }, stripes: 2, log: quiet });
    cleanup.push(() => {
      releaseTargets();
      client.stop();
      server.stop();
      target.stop();
    });
    const sessions = 5;
    const runs = Array.from({ length: sessions }, (_, k) => echoIntegrity(client.port, 6 * 1024 * 1024, 300 + k));
    // Watchdog only: admitting five sessions takes milliseconds; this is far above a loaded machine's need.
    await until(() => server.sessions.size === sessions, () => `${sessions} sessions admitted (have ${server.sessions.size})`, 60_000);
    const windows = [...server.sessions.values()].map((x) => x.opts.window).sort((a, b) => b - a);
    releaseTargets();
    await Promise.all(runs);
    // One window per opening against the memory still free, whatever order they came in: the same as an
    // independent ReceiveWindows gives for five opens.
    const configured = DEFAULT_SESSION_OPTIONS.window;
    const oracle = new ReceiveWindows(maxReceiveBuffer, { maxSessions });
    const expected = Array.from({ length: sessions }, () => oracle.open(configured));
    expect(windows).toEqual(expected);
    // The rule gives smaller windows under load, never below the floor.
    expect(windows[0]!).toBeGreaterThan(windows.at(-1)!);
    expect(windows.at(-1)!).toBeGreaterThanOrEqual(MIN_WINDOW);
  }, TRANSFER_TEST_MS);
});

describe("failures reach the app", () => {
  // "Promptly" is asserted by cause, not by a wall-clock figure: the app is reset by the proxy (not by this
  // test's watchdog), and the reason each proxy logs is the refused connect, not a grace period or a
  // dead-stripe timeout running out. The watchdogs are far above what a loaded machine needs.
  test("target refused: the app connection is reset promptly, not ended cleanly", async () => {
    const dead = startTarget({ mode: "echo" });
    const port = dead.port;
    dead.stop();
    const target = { port, conns: [], stop() {} } as Target;
    const p = await pair({ stripes: 4, target });
    const r = await appExchange(p.client.port, randomData(1000, 1), { timeoutMs: 60_000 });
    expect(r.cleanEnd).toBe(false);
    expect(r.error).toBe("ECONNRESET");
    const ends = () => p.logs.filter((l) => l.includes(" end "));
    await until(() => ends().length >= 2, () => `both proxies logged the session's end (${ends().join(" | ")})`, 60_000);
    // Both lines count "up 1000 B": the app's bytes reach the server with the first message (0-RTT). They
    // differ in the reason: the server's own connect failure, and the client's RESET from the server.
    expect(ends().filter((l) => /reason ECONNREFUSED cannot connect to /.test(l)).length).toBe(1);
    expect(ends().filter((l) => /reason E_PEER_RESET .*cannot connect to /.test(l)).length).toBe(1);
  });

  test("server proxy down: the app connection is reset promptly", async () => {
    const dead = startTarget({ mode: "echo" });
    const port = dead.port;
    dead.stop();
    const p = await pair({ stripes: 4, peerPort: port });
    const r = await appExchange(p.client.port, randomData(1000, 1), { timeoutMs: 60_000 });
    expect(r.cleanEnd).toBe(false);
    expect(r.error).toBe("ECONNRESET");
    // The cause: every first dial was refused (not a grace period running out).
    await until(() => p.logs.some((l) => l.includes(" end ")), "the client logged the session's end", 60_000);
    expect(p.logs.find((l) => l.includes(" end "))).toMatch(/reason ECONNREFUSED server proxy .* unreachable/);
  });

  test("garbage on the server port is dropped while a concurrent good session completes", async () => {
    const p = await pair({ stripes: 4, handshakeTimeoutMs: 500 });
    const good = echoIntegrity(p.client.port, 16 * 1024 * 1024, 5);
    const garbage = await Promise.all(
      [0, 1, 2].map(async (k) => {
        const junk = k === 0 ? new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n".padEnd(64, "x")) : randomData(4096, 90 + k);
        return appExchange(p.server.port, junk, { timeoutMs: 60_000, shutdown: k !== 2 });
      }),
    );
    for (const g of garbage) {
      expect(g.received.byteLength).toBe(0); // no reply, no detail
      expect(g.error === undefined && g.cleanEnd).toBe(false);
      expect(g.error ?? "").not.toMatch(/^timeout/); // the server dropped it; not this test's watchdog
    }
    await good;
    expect(p.target.conns.length).toBe(1); // the garbage never reached the target
  }, TRANSFER_TEST_MS);

  test("a handshake that never completes is cut at the deadline", async () => {
    const target = startTarget({ mode: "echo" });
    const logs: string[] = [];
    const server = startServer({
      auth: KEYED,
      listen: { host: LOOP, port: 0 },
      target: { host: LOOP, port: target.port },
      handshakeTimeoutMs: 300,
      log: (l) => logs.push(l),
    });
    cleanup.push(() => {
      server.stop();
      target.stop();
    });
    // The watchdog (60 s) only stops a hang; the server's 300 ms deadline must be what ends it.
    const r = await appExchange(server.port, new Uint8Array([0x54, 0x53]), { shutdown: false, timeoutMs: 60_000 });
    expect(r.error).toBeDefined();
    expect(r.error).not.toMatch(/^timeout/);
    // Not before the deadline (timers never fire early), and because of it.
    expect(r.ms).toBeGreaterThanOrEqual(250);
    expect(logs.some((l) => /refused silently: timeout/.test(l))).toBe(true);
    expect(target.conns.length).toBe(0);
  });
});

describe("stripe failures", () => {
  test("a stripe reset mid-transfer loses nothing: the session completes intact", async () => {
    let fault: FaultProxy | undefined;
    // The target keeps the session open (withholds its FIN) until the reset stripe has been re-dialled:
    // otherwise the other stripes could finish the transfer before the re-dial's backoff ran out.
    let release!: () => void;
    const redialled = new Promise<void>((r) => (release = r));
    const p = await pair({
      stripes: 4,
      target: startTarget({ mode: "echo", holdEnd: redialled }),
      middle: async (serverPort) => {
        fault = await startFaultProxy({ targetHost: LOOP, targetPort: serverPort });
        cleanup.push(() => fault!.stop());
        return fault.port;
      },
    });
    cleanup.push(() => release());
    const data = randomData(48 * 1024 * 1024, 31);
    const run = appExchange(p.client.port, data, { timeoutMs: TRANSFER_WATCHDOG_MS });
    // Reset the busiest stripe once data is flowing (watchdogs far above what a loaded machine needs).
    const busiest = () => fault!.live().find((c) => c.bytesUp >= 1024 * 1024);
    await until(() => busiest() !== undefined, "1 MiB crossed one stripe", 60_000);
    busiest()!.reset();
    await until(() => fault!.connections().length > 4, "the reset stripe was re-dialled", 60_000);
    release();
    const r = await run;
    expect(r.error).toBeUndefined();
    expect(r.cleanEnd).toBe(true);
    expect(sha256(r.received)).toBe(sha256(data));
  }, TRANSFER_TEST_MS);

  test("all stripes gone for longer than the grace period: both app connections reset, reason logged", async () => {
    let fault: FaultProxy | undefined;
    const p = await pair({
      stripes: 4,
      session: { graceMs: 400 },
      middle: async (serverPort) => {
        fault = await startFaultProxy({ targetHost: LOOP, targetPort: serverPort });
        cleanup.push(() => fault!.stop());
        return fault.port;
      },
    });
    // 256 MiB with no FIN: the session is still busy when the path goes. Watchdogs (60 s) are far above
    // what a loaded machine needs; the 400 ms grace period must be what ends the session.
    const run = appExchange(p.client.port, randomData(256 * 1024 * 1024, 41), { timeoutMs: 60_000, shutdown: false });
    // Open on both sides (bytes through the fault proxy alone may be just the handshakes) and data through.
    const open = () => [...p.client.sessions][0]?.usableStripes === 4 && (p.target.conns[0]?.receivedBytes ?? 0) > 0;
    await until(open, "all 4 stripes open and data reached the target", 60_000);
    await fault!.stop(); // the path is gone: resets now, re-dials refused from here on
    const r = await run;
    expect(r.cleanEnd).toBe(false);
    expect(r.error).toBe("ECONNRESET");
    const ends = () => p.logs.filter((l) => l.includes(" end "));
    await until(() => ends().length >= 2, () => `both proxies logged the session's end (${ends().join(" | ")})`, 60_000);
    for (const l of ends()) expect(l).toContain("reason E_GRACE_EXPIRED");
    // The target side was reset too, not ended as if the stream were complete.
    await until(() => p.target.conns[0]!.closed, "the target's connection closed", 60_000);
    expect(p.target.conns[0]!.gotEnd).toBe(false);
  });
});
