/**
 * Issue 10's attacks against a server proxy, over real sockets on loopback, each bounded in count and in
 * time: paused downloads beside a live one, a fragment flood, PING and ACK floods, a forged log line in a
 * RESET reason, a slot flood, receive memory, a descriptor flood. Each test asserts outcomes (who is cut
 * off, with which code; the live session's bytes exact; what the log says); how long things take is the
 * attacks benchmark's business (bench/scenarios/attacks.ts). Timeouts here are watchdogs only.
 *
 * The hostile peer is a key holder driving one stripe by hand (RawPeer, bench/lib/rawpeer.ts).
 */

import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { RawPeer, dataFrame, fragmentFrames, repeatFrame } from "../bench/lib/rawpeer.ts";
import { startClient } from "../src/proxy/client.ts";
import { handshakeAuth } from "../src/proxy/handshake.ts";
import { startServer, type ServerOptions } from "../src/proxy/server.ts";
import { STATUS_OK, STATUS_REFUSED, STATUS_UNKNOWN_SESSION } from "../src/secure/constants.ts";
import { generateKey, parseKeys } from "../src/secure/keys.ts";
import { MIN_WINDOW, windowCost } from "../src/stripe/budget.ts";
import { encodeAckEntries } from "../src/wire/codec.ts";
import { FrameType, RESET_PROTOCOL } from "../src/wire/constants.ts";
import { KEYED } from "./helpers/keys.ts";
import { appExchange, randomData, sha256, startTarget } from "./helpers/net.ts";
import { Proc } from "./helpers/proc.ts";
import { cleanups, until } from "./helpers/util.ts";

const LOOP = "127.0.0.1";
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const MiB = 1024 * 1024;
const cleanup = cleanups();
const AUTH = handshakeAuth(KEYED);
/** Watchdog for tests that move tens of MiB on a loaded 2-core machine. */
const TRANSFER_TEST_MS = 120_000;

/** A server proxy before an echo target, its log kept; stopped after the test. */
function echoServer(extra: Partial<ServerOptions> = {}) {
  const logs: string[] = [];
  const target = startTarget({ mode: "echo" });
  const server = startServer({ auth: KEYED, listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: target.port }, log: (l) => logs.push(l), ...extra });
  cleanup.push(() => {
    server.stop();
    target.stop();
  });
  return { server, target, logs };
}

/** A client proxy in front of `serverPort`; stopped after the test. */
function clientFor(serverPort: number, stripes = 2) {
  const logs: string[] = [];
  const client = startClient({ auth: KEYED, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port: serverPort }, stripes, log: (l) => logs.push(l) });
  cleanup.push(() => client.stop());
  return { client, logs };
}

/** A raw stripe opened by hand; closed after the test. */
async function raw(port: number, o: Partial<Parameters<typeof RawPeer.connect>[0]> = {}): Promise<RawPeer> {
  const peer = await RawPeer.connect({ port, auth: AUTH, ...o });
  cleanup.push(() => {
    if (!peer.closed) peer.terminate();
  });
  return peer;
}

/** No log line carries a control character (a forged line would need a newline or an escape). */
function expectClean(lines: string[]): void {
  for (const l of lines) expect(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(l)).toBe(false);
}

describe("isolation", () => {
  test(
    "paused downloads: a 64 MiB download completes intact beside 4 sessions whose apps stopped reading, which keep their data",
    async () => {
      // The target sends DOWNLOAD bytes of a per-connection pattern to every connection, with backpressure.
      const DOWNLOAD = 32 * MiB;
      const FRESH = 64 * MiB;
      const sizes = [DOWNLOAD, DOWNLOAD, DOWNLOAD, DOWNLOAD, FRESH];
      const payloads = sizes.map((n, k) => randomData(n, 900 + k));
      let accepted = 0;
      const source = Bun.listen<{ data: Uint8Array; sent: number }>({
        hostname: LOOP,
        port: 0,
        socket: {
          open(s) {
            s.data = { data: payloads[Math.min(accepted++, payloads.length - 1)]!, sent: 0 };
            pumpOut(s);
          },
          drain: (s) => pumpOut(s),
          data() {},
          close() {},
          error() {},
        },
      });
      const server = startServer({ auth: KEYED, listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: source.port }, log: () => {} });
      const { client } = clientFor(server.port, 2);
      cleanup.push(() => {
        server.stop();
        source.stop(true);
      });
      // Four apps open a download each and never read (a paused browser download). One at a time, so
      // the target hands out the payloads in order.
      const paused: Socket<{ got: Uint8Array[]; bytes: number; ended: boolean }>[] = [];
      for (let k = 0; k < 4; k++) {
        const s = await Bun.connect<{ got: Uint8Array[]; bytes: number; ended: boolean }>({
          hostname: LOOP,
          port: client.port,
          data: { got: [], bytes: 0, ended: false },
          socket: {
            open: (s) => s.pause(),
            data(s, chunk) {
              s.data.got.push(new Uint8Array(chunk));
              s.data.bytes += chunk.byteLength;
            },
            end: (s) => {
              s.data.ended = true;
              s.end();
            },
            close() {},
            error() {},
          },
        });
        paused.push(s);
        await until(() => accepted === k + 1, `download ${k} reached the target`, 30_000);
      }
      // Their sessions read from the target until the server's send budget stops them: together they
      // hold at least half of it (before issue 10 they held all of it and the next download got 128 KB
      // in 15 s).
      await until(() => server.budget.used >= server.budget.limit / 2, () => `stalled sessions hold ${server.budget.used} of ${server.budget.limit}`, 60_000);
      // A fresh download by someone else: complete and exact, while the four are still stalled.
      const fresh = await download(client.port, FRESH, 90_000);
      expect(fresh.error).toBeUndefined();
      expect(fresh.received.byteLength).toBe(FRESH);
      expect(sha256(fresh.received)).toBe(sha256(payloads[4]!));
      expect(server.sessions.size).toBeGreaterThanOrEqual(4);
      for (const s of server.sessions.values()) expect(s.closed).toBe(false);
      // A paused session kept its data: its app reads again and gets every byte, exact.
      const first = paused[0]!;
      first.resume();
      await until(() => first.data.ended, () => `resumed download: ${first.data.bytes} of ${DOWNLOAD}`, 90_000);
      expect(sha256(Buffer.concat(first.data.got))).toBe(sha256(payloads[0]!));
      for (const s of paused) s.terminate();
    },
    TRANSFER_TEST_MS,
  );
});

/**
 * An app that reads a download of `bytes` without sending anything (no FIN either: a target may close
 * at an app's FIN, which would cut the download short); resolves once it has them all, or the
 * connection closes, or `ms` pass (watchdog).
 */
function download(port: number, bytes: number, ms: number): Promise<{ received: Uint8Array; error?: string }> {
  return new Promise((resolve) => {
    const got: Uint8Array[] = [];
    let n = 0;
    let done = false;
    const finish = (s: Socket<undefined> | undefined, error?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s?.end();
      resolve({ received: Buffer.concat(got), error });
    };
    const timer = setTimeout(() => finish(undefined, `watchdog: ${n} of ${bytes} bytes after ${ms} ms`), ms);
    Bun.connect({
      hostname: LOOP,
      port,
      socket: {
        data(s, chunk) {
          got.push(new Uint8Array(chunk));
          n += chunk.byteLength;
          if (n >= bytes) finish(s);
        },
        close: (s, err) => finish(undefined, n >= bytes ? undefined : `closed after ${n} bytes${err ? `: ${err.message}` : ""}`),
        error() {},
      },
    }).catch((err: Error) => finish(undefined, err.message));
  });
}

/** Writes what is left of the connection's payload; shuts down its write side when all is sent. */
function pumpOut(s: Socket<{ data: Uint8Array; sent: number }>): void {
  const c = s.data;
  while (c.sent < c.data.byteLength) {
    const n = s.write(c.data.subarray(c.sent, Math.min(c.data.byteLength, c.sent + 256 * 1024)));
    if (n <= 0) return;
    c.sent += n;
  }
  s.shutdown();
}

describe("floods from a key holder", () => {
  test(
    "fragment flood: 1-byte DATA at every other offset is cut off at the reorder limit (E_REORDER_MEMORY) while a concurrent session completes intact",
    async () => {
      const { server, logs } = echoServer();
      const { client } = clientFor(server.port);
      const peer = await raw(server.port);
      expect(peer.ok).toBe(true);
      const data = randomData(16 * MiB, 31);
      const live = appExchange(client.port, data, { timeoutMs: 90_000 });
      // 400,000 fragments (7 MB of frames) never filling the first gap: far beyond the segment limit
      // of a 16 MiB window (about 105,000), so the server must cut the session off long before the end.
      const FRAGMENTS = 400_000;
      for (let at = 0; at < FRAGMENTS && !peer.closed; at += 50_000) {
        peer.send(fragmentFrames(1 + 2 * at, 2, 50_000));
        await peer.drained();
      }
      await peer.waitClosed();
      expect(peer.events.resets.map(([code]) => code)).toEqual([RESET_PROTOCOL]);
      expect(peer.events.resets[0]![1]).toContain("fragments too small or too scattered");
      const r = await live;
      expect(r.error).toBeUndefined();
      expect(sha256(r.received)).toBe(sha256(data));
      // The concurrent session was not reset: it ended cleanly, and no line says otherwise.
      await until(() => server.sessions.size === 0, "sessions ended", 30_000);
      const ends = logs.filter((l) => / end up /.test(l));
      expect(ends.filter((l) => l.includes("E_REORDER_MEMORY"))).toHaveLength(1);
      expect(ends.filter((l) => / reason ok$/.test(l))).toHaveLength(1);
    },
    TRANSFER_TEST_MS,
  );

  test("PING flood: the stripe is closed with E_CONTROL_FLOOD after one burst, answered at most that often", async () => {
    const { server, logs } = echoServer();
    const peer = await raw(server.port);
    const PINGS = 100_000;
    peer.send(repeatFrame(FrameType.Ping, 7, PINGS));
    await peer.waitClosed();
    // Cut off within the burst (50): not one PONG per PING.
    expect(peer.events.pongs).toBeLessThan(100);
    await until(() => logs.some((l) => l.includes("E_CONTROL_FLOOD")), "the flood logged", 10_000);
    const line = logs.find((l) => l.includes("E_CONTROL_FLOOD"))!;
    expect(line).toContain("dropped: E_CONTROL_FLOOD PING");
    expect(line).toContain(`remote ${LOOP}:`);
    // What /metrics shows: a stripe death for the flood. Its only stripe gone before anything was
    // delivered, the session's slot is released at once (a session with data would wait for a re-dial).
    expect(server.stats.counters().stripeDeaths["control-flood"]).toBe(1);
    await until(() => logs.some((l) => / end up .* reason E_ABANDONED /.test(l)), "the session released", 10_000);
  });

  test("ACK flood: small ACKs beyond the rate close the stripe (E_CONTROL_FLOOD); an ACK of 8,191 entries ends its session (E_BAD_ACK)", async () => {
    const { server, logs } = echoServer();
    const small = await raw(server.port);
    const entry = encodeAckEntries([{ index: 0, generation: 1, received: 0 }]);
    small.send(repeatFrame(FrameType.Ack, 0, 50_000, entry));
    await small.waitClosed();
    expect(small.events.resets).toEqual([]); // the stripe, not the session
    await until(() => logs.some((l) => /dropped: E_CONTROL_FLOOD ACK/.test(l)), "the ACK flood logged", 10_000);

    const big = await raw(server.port);
    const entries = encodeAckEntries(Array.from({ length: 8191 }, (_, i) => ({ index: i & 63, generation: 1, received: 0 })));
    big.send(repeatFrame(FrameType.Ack, 0, 100, entries));
    await big.waitClosed();
    expect(big.events.resets.map(([code]) => code)).toEqual([RESET_PROTOCOL]);
    expect(big.events.resets[0]![1]).toContain("ACK with 8191 entries");
    await until(() => logs.some((l) => / end up .* reason E_BAD_ACK /.test(l)), "the session end logged", 10_000);
  });

  test("a forged log line in a RESET reason is escaped: every line stays one line, and none is the forgery", async () => {
    const { server, logs } = echoServer();
    const peer = await raw(server.port);
    const forged = "bye\nsession 0123456789ab end up 1.0 MiB down 1.0 MiB 1.00 s reason ok\r\u001b[2K\u001b[1A\u202e";
    peer.send(repeatFrame(FrameType.Reset, RESET_PROTOCOL, 1, new TextEncoder().encode(forged)));
    await peer.waitClosed();
    await until(() => logs.some((l) => / end up /.test(l)), "the session end logged", 10_000);
    expectClean(logs);
    const end = logs.find((l) => / end up /.test(l))!;
    expect(end).toContain(`remote ${LOOP}:`);
    expect(end).toContain("bye\\nsession 0123456789ab end");
    expect(logs.some((l) => l.startsWith("session 0123456789ab"))).toBe(false);
  });
});

describe("slots and memory", () => {
  test(
    "slot flood: single-stripe OPENs that vanish release their slots at once (E_ABANDONED), not after the grace; a legitimate client is then served",
    async () => {
      const { server, logs } = echoServer({ maxSessions: 16, session: { graceMs: 600_000 } });
      const peers: RawPeer[] = [];
      for (let k = 0; k < 16; k++) peers.push(await raw(server.port));
      expect(peers.every((p) => p.ok)).toBe(true);
      expect(server.sessions.size).toBe(16);
      // Full: the next OPEN is refused with a status, not silence.
      const refused = await raw(server.port);
      expect(refused.reply.status).toBe(STATUS_REFUSED);
      for (const p of peers) p.terminate();
      // With a 10-minute grace, only the early release can free them within this test's watchdog.
      await until(() => server.sessions.size === 0, () => `${server.sessions.size} sessions still registered`, 30_000);
      const ends = logs.filter((l) => / end up /.test(l));
      expect(ends).toHaveLength(16);
      for (const l of ends) expect(l).toContain("E_ABANDONED");
      const { client } = clientFor(server.port);
      const data = randomData(MiB, 3);
      const r = await appExchange(client.port, data, { timeoutMs: 60_000 });
      expect(r.error).toBeUndefined();
      expect(sha256(r.received)).toBe(sha256(data));
      // A stripe for an ended session is refused: its id stays ended.
      const late = await raw(server.port, { sid: peers[0]!.sid, secret: peers[0]!.secret, kind: "join" });
      expect(late.reply.status).toBe(STATUS_UNKNOWN_SESSION);
      await until(() => logs.some((l) => l.includes("E_SESSION_ENDED")), "the refusal logged", 10_000);
    },
    TRANSFER_TEST_MS,
  );

  test("per source: beyond --max-sessions-per-source an OPEN is refused (E_SOURCE_LIMIT); the source's own live sessions carry on", async () => {
    const { server, logs } = echoServer({ maxSessions: 64, maxSessionsPerSource: 3 });
    const peers = [await raw(server.port), await raw(server.port), await raw(server.port)];
    expect(peers.map((p) => p.reply.status)).toEqual([STATUS_OK, STATUS_OK, STATUS_OK]);
    const fourth = await raw(server.port);
    expect(fourth.reply.status).toBe(STATUS_REFUSED);
    await until(() => logs.some((l) => l.includes("E_SOURCE_LIMIT")), "the refusal logged", 10_000);
    expect(logs.find((l) => l.includes("E_SOURCE_LIMIT"))).toContain(`stripe from ${LOOP}:`);
    expect(server.stats.counters().sessionsRefused).toEqual({ "source-limit": 1 }); // what /metrics shows
    // The three live sessions still work: one echoes its data.
    peers[0]!.send(dataFrame(0, new Uint8Array([1, 2, 3])));
    await until(() => peers[0]!.events.dataBytes === 3, "echo on a live session", 10_000);
  });

  test("per source: stripe connections beyond --max-stripes-per-source are refused (E_SOURCE_LIMIT), JOINs included; a closed one makes room", async () => {
    const { server, logs } = echoServer({ maxStripesPerSource: 3 });
    const first = await raw(server.port, { stripeCount: 4 });
    const joined = [await first.join({ port: server.port, auth: AUTH, index: 1, stripeCount: 4 }), await first.join({ port: server.port, auth: AUTH, index: 2, stripeCount: 4 })];
    cleanup.push(() => joined.forEach((p) => p.terminate()));
    expect([first, ...joined].map((p) => p.reply.status)).toEqual([STATUS_OK, STATUS_OK, STATUS_OK]);
    const fourth = await first.join({ port: server.port, auth: AUTH, index: 3, stripeCount: 4 });
    cleanup.push(() => fourth.terminate());
    expect(fourth.reply.status).toBe(STATUS_REFUSED);
    const other = await raw(server.port); // a new session from the same source: refused as well
    expect(other.reply.status).toBe(STATUS_REFUSED);
    await until(() => logs.some((l) => l.includes("limit of 3 stripe connections per source address")), "the refusal logged", 10_000);
    joined[1]!.terminate();
    await joined[1]!.waitClosed();
    // Room again once the server has seen that stripe go (a watchdog, not a timing assertion).
    await until(() => server.sessions.values().next().value?.usableStripes === 2, "the server saw the stripe go", 10_000);
    const again = await first.join({ port: server.port, auth: AUTH, index: 2, generation: 2, stripeCount: 4 });
    cleanup.push(() => again.terminate());
    expect(again.reply.status).toBe(STATUS_OK);
  });

  test("receive memory: sessions beyond what --max-receive-buffer holds are refused (E_RECEIVE_MEMORY), and admitted again once others end", async () => {
    // Room for the smallest window's cost 4 times.
    const { server, logs } = echoServer({ maxReceiveBuffer: 4 * windowCost(MIN_WINDOW), maxSessions: 16 });
    expect(logs.some((l) => l.includes("receive memory") && l.includes("only 4 sessions"))).toBe(true);
    const peers: RawPeer[] = [];
    for (let k = 0; k < 4; k++) peers.push(await raw(server.port));
    expect(peers.every((p) => p.ok)).toBe(true);
    for (const s of server.sessions.values()) expect(s.opts.window).toBe(MIN_WINDOW);
    const fifth = await raw(server.port);
    expect(fifth.reply.status).toBe(STATUS_REFUSED);
    expect(server.stats.counters().sessionsRefused).toEqual({ "receive-memory": 1 });
    await until(() => logs.some((l) => l.includes("E_RECEIVE_MEMORY")), "the refusal logged", 10_000);
    peers[0]!.terminate();
    await until(() => server.sessions.size === 3, "the first session released", 10_000);
    const again = await raw(server.port);
    expect(again.ok).toBe(true);
  });
});

describe("descriptors", () => {
  test(
    "under ulimit -n 1024, 1,500 idle connections: the server stays up, serves a session during the flood and after it",
    async () => {
      // The real command line, as an operator runs it, under a small descriptor limit.
      const target = startTarget({ mode: "echo" });
      cleanup.push(() => target.stop());
      const key = generateKey();
      const cmd = `ulimit -n 1024 && exec "${process.execPath}" "${MAIN}" server --listen ${LOOP}:0 --target ${LOOP}:${target.port}`;
      const server = Proc.spawn(["sh", "-c", cmd], cleanup, { env: { ...process.env, STRIPER_KEY: key } as Record<string, string> });
      const m = await server.waitFor(/server listening on 127\.0\.0\.1:(\d+)/);
      const port = Number(m[1]);
      expect(server.text).toContain("descriptor limit 1024");
      const auth = { mode: "keyed" as const, keys: parseKeys(key, "test") };
      const client = startClient({ auth, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port }, stripes: 2, log: () => {} });
      cleanup.push(() => client.stop());
      const idle: Socket<{ closed: boolean }>[] = [];
      let refusedAtConnect = 0;
      for (let k = 0; k < 1500; k++) {
        try {
          idle.push(
            await Bun.connect<{ closed: boolean }>({
              hostname: LOOP,
              port,
              data: { closed: false },
              socket: {
                data() {},
                close: (s) => void (s.data.closed = true),
                error() {},
              },
            }),
          );
        } catch {
          refusedAtConnect++; // reset by the server before our connect resolved: the limits at work
        }
      }
      cleanup.push(() => {
        for (const s of idle) s.terminate();
      });
      expect(idle.length + refusedAtConnect).toBe(1500);
      // The unauthenticated gate lets a newcomer evict the oldest waiting connection only once that one
      // has waited 1 s (src/secure/ratelimit.ts): before that, a new stripe is turned away like the
      // flood. The pause establishes that documented precondition; nothing here measures time.
      await Bun.sleep(1100);
      const data = randomData(4 * MiB, 5);
      const during = await appExchange(client.port, data, { timeoutMs: 60_000 });
      expect(during.error).toBeUndefined();
      expect(sha256(during.received)).toBe(sha256(data));
      // It was during the flood: hundreds of the idle connections were still held open by the server.
      const held = idle.filter((s) => !s.data.closed).length;
      expect(held).toBeGreaterThan(100);
      for (const s of idle) s.terminate();
      const after = await appExchange(client.port, data, { timeoutMs: 60_000 });
      expect(after.error).toBeUndefined();
      expect(sha256(after.received)).toBe(sha256(data));
      // Alive throughout: no exit, no uncaught error.
      expect(server.p.exitCode).toBeNull();
      expect(server.text).not.toContain("SystemError");
      expect(server.text).not.toMatch(/EMFILE|ENFILE/);
    },
    TRANSFER_TEST_MS,
  );
});
