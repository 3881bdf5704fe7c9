/**
 * The security properties of the proxy pair end to end (issue 9, docs/protocol.md §3 and §14), over
 * real loopback sockets: the right key works; a wrong key, an impostor server, a skewed clock, garbage,
 * truncated first messages, stale timestamps, replays and joins without the key or the session secret
 * all fail without the target ever being contacted, and every failure on the server is the same silence
 * (no byte back, closed at the deadline measured from the accept, not before); bits flipped in flight
 * cost a stripe, never the data; 0-RTT data leaves before the reply; the limits at accept hold.
 *
 * Deadlines are short here (hundreds of ms) so the suite stays fast; "closed at the deadline" is checked
 * as a lower bound (never before it) and a generous upper bound (it does end).
 */

import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { startFaultProxy, type FaultProxy, type FaultProxyOptions } from "../src/link/fault.ts";
import { startClient, type StriperClient } from "../src/proxy/client.ts";
import type { StripeAuth } from "../src/proxy/handshake.ts";
import { startServer, type ServerOptions, type StriperServer } from "../src/proxy/server.ts";
import { CLIENT_PREFIX_SIZE, FIRST_FRAME_COUNTER, KIND_JOIN, KIND_OPEN, SID_SIZE } from "../src/secure/constants.ts";
import { joinProof } from "../src/secure/kdf.ts";
import { encodeClientHello, readServerReply, type ClientHeader, type HandshakeAuth, type SilentReason } from "../src/secure/messages.ts";
import { RecordOpener } from "../src/secure/record.ts";
import { FrameDecoder } from "../src/wire/codec.ts";
import { FRAME_HEADER_SIZE, FrameType, RESET_PROTOCOL } from "../src/wire/constants.ts";
import { KEYED, PLAIN, otherKey } from "./helpers/keys.ts";
import { appExchange, randomData, sha256, startTarget, type Target } from "./helpers/net.ts";
import { probe, type ProbeResult } from "./helpers/probe.ts";
import { cleanups, until } from "./helpers/util.ts";

const LOOP = "127.0.0.1";
const cleanup = cleanups();
/** The server's handshake deadline in these tests, ms. */
const DEADLINE = 600;
/** Timers may fire up to a millisecond or so early against performance.now(): the lower bound's slack. */
const EARLY_MS = 5;

const codecAuth = (a: StripeAuth): HandshakeAuth => (a.mode === "keyed" ? { mode: "keyed", keys: a.keys.map((k) => k.bytes) } : { mode: "plain" });

interface Setup {
  target: Target;
  server: StriperServer;
  client?: StriperClient;
  fault?: FaultProxy;
  serverLogs: string[];
  clientLogs: string[];
}

/** target ← server ← [fault proxy] ← client, each on port 0; the client only when `client` is given. */
async function setup(opts: {
  server?: Partial<ServerOptions>;
  serverAuth?: StripeAuth;
  client?: { auth?: StripeAuth; stripes?: number; handshakeTimeoutMs?: number; wallClock?: () => number };
  fault?: Omit<FaultProxyOptions, "targetHost" | "targetPort">;
  peerPort?: number;
}): Promise<Setup> {
  const serverLogs: string[] = [];
  const clientLogs: string[] = [];
  const target = startTarget({ mode: "echo" });
  const server = startServer({
    auth: opts.serverAuth ?? KEYED,
    listen: { host: LOOP, port: 0 },
    target: { host: LOOP, port: target.port },
    handshakeTimeoutMs: DEADLINE,
    log: (l) => serverLogs.push(l),
    ...opts.server,
  });
  let fault: FaultProxy | undefined;
  if (opts.fault !== undefined) fault = await startFaultProxy({ ...opts.fault, targetHost: LOOP, targetPort: server.port });
  let client: StriperClient | undefined;
  if (opts.client !== undefined) {
    client = startClient({
      auth: opts.client.auth ?? KEYED,
      listen: { host: LOOP, port: 0 },
      peer: { host: LOOP, port: opts.peerPort ?? fault?.port ?? server.port },
      stripes: opts.client.stripes ?? 4,
      handshakeTimeoutMs: opts.client.handshakeTimeoutMs,
      wallClock: opts.client.wallClock,
      log: (l) => clientLogs.push(l),
    });
  }
  cleanup.push(async () => {
    client?.stop();
    server.stop();
    await fault?.stop();
    target.stop();
  });
  return { target, server, client, fault, serverLogs, clientLogs };
}

async function exact(port: number, size: number, seed: number): Promise<void> {
  const data = randomData(size, seed);
  const r = await appExchange(port, data, { timeoutMs: 60_000 });
  expect(r.error).toBeUndefined();
  expect(r.cleanEnd).toBe(true);
  expect(r.received.byteLength).toBe(size);
  expect(sha256(r.received)).toBe(sha256(data));
}

/** Silence as the prober sees it: no byte back, closed (by a reset) at the deadline and not before. */
function expectSilence(r: ProbeResult, deadline = DEADLINE): void {
  expect(r.received.byteLength).toBe(0);
  expect(r.how).toBe("reset");
  expect(r.closedAfterMs).toBeGreaterThanOrEqual(deadline - EARLY_MS);
  expect(r.closedAfterMs).toBeLessThan(deadline + 5000);
}

/** Counts of every reason other than those given are zero. */
function onlyReasons(server: StriperServer, expected: Partial<Record<SilentReason, number>>): void {
  for (const [reason, n] of Object.entries(server.rejections)) expect([reason, n]).toEqual([reason, expected[reason as SilentReason] ?? 0]);
}

const header = (over: Partial<ClientHeader> = {}): ClientHeader => ({
  kind: KIND_OPEN,
  flags: 0,
  stripeIndex: 0,
  stripeCount: 4,
  generation: 1,
  timestampMs: Date.now(),
  window: 1 << 20,
  secret: new Uint8Array(randomBytes(32)),
  options: [],
  ...over,
});

describe("the right key", () => {
  for (const [name, auth] of [
    ["keyed", KEYED],
    ["plain (--no-auth)", PLAIN],
  ] as const) {
    test(`${name}: 16 MiB each way over 4 stripes arrive exact, nothing refused`, async () => {
      const s = await setup({ serverAuth: auth, client: { auth } });
      await exact(s.client!.port, 16 << 20, 1);
      expect(s.server.rejections).toEqual(Object.fromEntries(Object.keys(s.server.rejections).map((k) => [k, 0])) as Record<SilentReason, number>);
      expect(s.target.conns.length).toBe(1);
    });
  }

  test("a server with several keys accepts a client of each; the client uses the first of its own", async () => {
    const k1 = otherKey();
    const k2 = otherKey();
    if (k1.mode !== "keyed" || k2.mode !== "keyed") throw new Error("keyed");
    const s = await setup({ serverAuth: { mode: "keyed", keys: [k1.keys[0]!, k2.keys[0]!] } });
    for (const [auth, seed] of [
      [{ mode: "keyed", keys: [k2.keys[0]!, k1.keys[0]!] }, 2],
      [k1, 3],
    ] as const) {
      const c = startClient({ auth, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port: s.server.port }, stripes: 2, log: () => {} });
      cleanup.push(() => c.stop());
      await exact(c.port, 1 << 20, seed);
    }
    expect(s.target.conns.length).toBe(2);
  });
});

describe("a client without the server's key", () => {
  test("wrong key: the target is never contacted, the app connection is reset, and the client's log says why", async () => {
    const s = await setup({ client: { auth: otherKey(), handshakeTimeoutMs: 400 } });
    const r = await appExchange(s.client!.port, randomData(10_000, 4), { timeoutMs: 10_000 });
    expect(r.received.byteLength).toBe(0);
    expect(r.cleanEnd).toBe(false);
    expect(r.error).toBeDefined();
    await until(() => s.clientLogs.some((l) => / end .*reason E_AUTH /.test(l)), "the client logged the session's end");
    const line = s.clientLogs.find((l) => / end /.test(l))!;
    expect(line).toContain("reason E_AUTH no authenticated reply within 0.4 s: wrong key, clock off by more than 30 s, or not a tcp-striper server");
    await until(() => s.server.rejections["bad-auth"] === 1, "the server counted the hello under bad-auth");
    expect(s.target.conns.length).toBe(0);
    expect(s.server.sessions.size).toBe(0);
    expect(s.serverLogs.filter((l) => l.includes("refused silently: bad-auth")).length).toBe(1);
  });

  test("a plain client at a keyed server, and a keyed client at a plain server, get no session", async () => {
    for (const [serverAuth, clientAuth] of [
      [KEYED, PLAIN],
      [PLAIN, KEYED],
    ] as const) {
      const s = await setup({ serverAuth, client: { auth: clientAuth, handshakeTimeoutMs: 400 } });
      const r = await appExchange(s.client!.port, randomData(1000, 5), { timeoutMs: 10_000 });
      expect(r.received.byteLength).toBe(0);
      expect(r.error).toBeDefined();
      await until(() => s.clientLogs.some((l) => / end .*reason E_AUTH /.test(l)), "the client ended the session with E_AUTH");
      expect(s.target.conns.length).toBe(0);
    }
  });
});

describe("an impostor server", () => {
  test("a tcp-striper server with another key stays silent: the client refuses with E_AUTH, nothing reaches the app", async () => {
    const s = await setup({ serverAuth: otherKey(), client: { auth: KEYED, handshakeTimeoutMs: 400 } });
    const r = await appExchange(s.client!.port, randomData(1000, 6), { timeoutMs: 10_000 });
    expect(r.received.byteLength).toBe(0);
    expect(r.error).toBeDefined();
    await until(() => s.clientLogs.some((l) => / end .*reason E_AUTH no authenticated reply/.test(l)), "E_AUTH logged");
    expect(s.target.conns.length).toBe(0);
  });

  for (const kind of ["answers with random bytes", "echoes (reflects the client's own bytes)"] as const) {
    test(`a server that ${kind}: the reply does not authenticate, E_AUTH, the app gets nothing`, async () => {
      const fake = kind.startsWith("echoes")
        ? startTarget({ mode: "echo" })
        : (() => {
            const l = Bun.listen<undefined>({
              hostname: LOOP,
              port: 0,
              socket: {
                data(sock) {
                  sock.write(randomBytes(200));
                },
                error() {},
              },
            });
            return { port: l.port, conns: [], stop: () => l.stop(true) } as unknown as Target;
          })();
      cleanup.push(() => fake.stop());
      const logs: string[] = [];
      const c = startClient({ auth: KEYED, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port: fake.port }, stripes: 4, log: (l) => logs.push(l) });
      cleanup.push(() => c.stop());
      const r = await appExchange(c.port, randomData(1000, 7), { timeoutMs: 10_000 });
      expect(r.received.byteLength).toBe(0);
      expect(r.cleanEnd).toBe(false);
      expect(r.error).toBeDefined();
      await until(() => logs.some((l) => / end /.test(l)), "the session ended");
      expect(logs.find((l) => / end /.test(l))).toContain("reason E_AUTH server reply did not authenticate with our key: wrong key, or not a tcp-striper server");
    });
  }
});

describe("silence: every bad first message gets no byte back and is closed at the deadline", () => {
  const auth = codecAuth(KEYED);
  const sid = () => new Uint8Array(randomBytes(SID_SIZE));
  const cases: [string, () => Uint8Array, SilentReason, { fin?: boolean; keepWritingMs?: number }?][] = [
    ["garbage", () => new Uint8Array(randomBytes(500)), "bad-auth"],
    ["garbage, and the prober keeps writing", () => new Uint8Array(randomBytes(500)), "bad-auth", { keepWritingMs: 25 }],
    ["an HTTP request", () => new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n".padEnd(300, "x")), "bad-auth"],
    ["a first message under another key", () => encodeClientHello(codecAuth(otherKey()), sid(), header()).bytes, "bad-auth"],
    ["a plain first message", () => encodeClientHello({ mode: "plain" }, sid(), header()).bytes, "bad-auth"],
    ["a truncated first message, left open", () => encodeClientHello(auth, sid(), header()).bytes.subarray(0, 100), "timeout"],
    ["a truncated first message, then FIN", () => encodeClientHello(auth, sid(), header()).bytes.subarray(0, 100), "truncated", { fin: true }],
    ["only the clear prefix", () => encodeClientHello(auth, sid(), header()).bytes.subarray(0, CLIENT_PREFIX_SIZE), "timeout"],
    ["a timestamp 31 s old", () => encodeClientHello(auth, sid(), header({ timestampMs: Date.now() - 31_000 })).bytes, "stale-time"],
    ["a timestamp 31 s ahead", () => encodeClientHello(auth, sid(), header({ timestampMs: Date.now() + 31_000 })).bytes, "stale-time"],
    ["a timestamp from before the server started", () => encodeClientHello(auth, sid(), header({ timestampMs: Date.now() - 5_000 })).bytes, "stale-time"],
  ];
  for (const [name, bytes, reason, opts] of cases) {
    test(`${name}: silence, counted as ${reason}, the target never contacted`, async () => {
      const s = await setup({});
      const r = await probe(s.server.port, bytes(), cleanup, opts);
      expectSilence(r);
      onlyReasons(s.server, { [reason]: 1 });
      expect(s.target.conns.length).toBe(0);
      expect(s.server.sessions.size).toBe(0);
      expect(s.server.unauthenticated).toBe(0);
    });
  }

  test("twenty garbage probers at once: all silent until the deadline, and one log line, not twenty", async () => {
    const s = await setup({});
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => probe(s.server.port, randomData(200 + i, i), cleanup)));
    for (const r of results) expectSilence(r);
    expect(s.server.rejections["bad-auth"]).toBe(20);
    expect(s.serverLogs.filter((l) => l.includes("bad-auth")).length).toBe(1);
    s.server.stop(); // pending summaries are logged at stop: one line with the count and the source
    const lines = s.serverLogs.filter((l) => l.includes("bad-auth"));
    expect(lines.length).toBe(2);
    expect(lines[1]).toMatch(/^20 stripe handshakes refused silently \(bad-auth\) in the last \d+ s from 127\.0\.0\.1 ×20$/);
  });
});

describe("replays", () => {
  /** Records the first bytes each connection sent towards the server (its first message and 0-RTT records). */
  function recorder(): { first: Map<number, Uint8Array>; tap: (index: number, up: boolean, chunk: Uint8Array) => void } {
    const first = new Map<number, Uint8Array>();
    return {
      first,
      tap(index, up, chunk) {
        if (!up) return;
        const had = first.get(index) ?? new Uint8Array(0);
        if (had.byteLength < 4096) first.set(index, new Uint8Array(Buffer.concat([had, chunk.subarray(0, 4096 - had.byteLength)])));
      },
    };
  }

  test("a recorded stripe's first bytes replayed while its session is live, and after it ended: silence, the live session exact", async () => {
    const rec = recorder();
    const s = await setup({ fault: { tap: rec.tap }, client: { stripes: 2 } });
    const data = randomData(32 << 20, 8);
    const live = appExchange(s.client!.port, data, { timeoutMs: 60_000 });
    await until(() => rec.first.size === 2 && [...s.client!.sessions].some((x) => x.usableStripes === 2), "both stripes attached and recorded");
    // Replayed while the session is live: the OPEN (stripe 0) and the JOIN (stripe 1).
    const during = await Promise.all([0, 1].map((i) => probe(s.server.port, rec.first.get(i)!, cleanup)));
    for (const r of during) expectSilence(r);
    const r = await live;
    expect(r.error).toBeUndefined();
    expect(r.cleanEnd).toBe(true);
    expect(sha256(r.received)).toBe(sha256(data));
    await until(() => s.server.sessions.size === 0, "the session ended");
    // And again once it has ended.
    const after = await Promise.all([0, 1].map((i) => probe(s.server.port, rec.first.get(i)!, cleanup)));
    for (const x of after) expectSilence(x);
    onlyReasons(s.server, { replay: 4 });
    expect(s.target.conns.length).toBe(1);
  });
});

describe("joining a live session", () => {
  test("a JOIN that knows the session id but not the key, or the key but not the session secret, cannot attach", async () => {
    const rec = new Map<number, Uint8Array>();
    const s = await setup({
      fault: { tap: (i, up, chunk) => void (up && !rec.has(i) && rec.set(i, new Uint8Array(chunk))) },
      client: { stripes: 2 },
    });
    const data = randomData(16 << 20, 9);
    const live = appExchange(s.client!.port, data, { timeoutMs: 60_000 });
    await until(() => rec.size === 2 && [...s.client!.sessions].some((x) => x.usableStripes === 2), "the session is up");
    const sid = rec.get(0)!.subarray(0, SID_SIZE); // in clear on the wire, as a load balancer reads it
    const session = [...s.server.sessions.values()][0]!;
    const deaths = session.metrics().stripeDeaths;
    const cs = new Uint8Array(randomBytes(32));
    const tries: [string, Uint8Array, SilentReason][] = [
      ["the id, no key", encodeClientHello(codecAuth(otherKey()), sid, header({ kind: KIND_JOIN, stripeIndex: 1, generation: 9, secret: joinProof(new Uint8Array(32), cs) }), cs).bytes, "bad-auth"],
      ["the key, a made-up secret", encodeClientHello(codecAuth(KEYED), sid, header({ kind: KIND_JOIN, stripeIndex: 1, generation: 9, secret: joinProof(new Uint8Array(randomBytes(32)), cs) }), cs).bytes, "bad-member"],
      ["the key, an OPEN with another secret", encodeClientHello(codecAuth(KEYED), sid, header({ kind: KIND_OPEN, stripeIndex: 1, generation: 9 })).bytes, "bad-member"],
    ];
    const results = await Promise.all(tries.map(([, bytes]) => probe(s.server.port, bytes, cleanup)));
    for (const r of results) expectSilence(r);
    onlyReasons(s.server, { "bad-auth": 1, "bad-member": 2 });
    // The live session lost no stripe to them and completes exactly.
    expect(session.metrics().stripeDeaths).toBe(deaths);
    const r = await live;
    expect(r.error).toBeUndefined();
    expect(sha256(r.received)).toBe(sha256(data));
    expect(s.target.conns.length).toBe(1);
  });
});

describe("a peer that authenticates and then breaks the frame protocol", () => {
  test("is a protocol error that ends the session (RESET code 3 to it), not damage to survive", async () => {
    const s = await setup({});
    const auth = codecAuth(KEYED);
    const sid = new Uint8Array(randomBytes(SID_SIZE));
    const hello = encodeClientHello(auth, sid, header());
    // A sealed record holding a frame header of type 9 (there is no such type): it authenticates, so the
    // record layer delivers it, and the frame decoder refuses it.
    const bogus = new Uint8Array(FRAME_HEADER_SIZE);
    bogus[0] = 9;
    const record = hello.sealer!.seal(bogus);
    const got: Uint8Array[] = [];
    let closed = false;
    const sock = await Bun.connect({
      hostname: LOOP,
      port: s.server.port,
      socket: {
        data: (_s, c) => void got.push(new Uint8Array(c)),
        close: () => void (closed = true),
        error() {},
      },
    });
    cleanup.push(() => sock.terminate());
    sock.write(new Uint8Array(Buffer.concat([hello.bytes, record])));
    await until(() => s.serverLogs.some((l) => / end .*reason E_UNKNOWN_FRAME/.test(l)), "the server ended the session as a protocol error");
    await until(() => closed || got.reduce((n, c) => n + c.byteLength, 0) > 76, "the server sent its reply and frames");
    // What came back: the authenticated reply, then records; among their frames a RESET with code 3.
    const bytes = new Uint8Array(Buffer.concat(got));
    const reply = readServerReply(bytes, auth, { sid, cs: hello.cs });
    if (reply.status !== "done") throw new Error("no reply");
    const opener = new RecordOpener(reply.value.key!, FIRST_FRAME_COUNTER);
    const plain: Uint8Array[] = [];
    opener.push(bytes.subarray(reply.consumed), plain);
    const resets: number[] = [];
    new FrameDecoder({ data() {}, control: (type, _f, value) => void (type === FrameType.Reset && resets.push(value)) }).push(new Uint8Array(Buffer.concat(plain)));
    expect(resets).toEqual([RESET_PROTOCOL]);
    expect(s.server.rejections["bad-auth"]).toBe(0); // nothing silent about it: it authenticated
  });
});

describe("damage in flight", () => {
  test("one bit flipped on 4 of 8 stripes (2 each way): both ends get exact data and a clean EOF; the damaged stripes are logged and replaced", async () => {
    // Connection k of the fault proxy: 0 is stripe 0 (the OPEN), 1..7 the JOINs; replacements come after.
    const FLIP_AT = 64 * 1024; // inside the frame records: every stripe carries more than this each way
    const flips: Record<number, boolean> = { 1: true, 5: true, 3: false, 7: false }; // true: client → server
    const seen = new Map<string, number>();
    let flipped = 0;
    const s = await setup({
      client: { stripes: 8 },
      fault: {
        tap(index, up, chunk) {
          if (flips[index] !== up) return;
          const key = `${index}${up}`;
          const at = seen.get(key) ?? 0;
          seen.set(key, at + chunk.byteLength);
          if (at <= FLIP_AT && FLIP_AT < at + chunk.byteLength) {
            chunk[FLIP_AT - at]! ^= 0x04;
            flipped++;
          }
        },
      },
    });
    const size = 64 << 20;
    const data = randomData(size, 10);
    const r = await appExchange(s.client!.port, data, { timeoutMs: 90_000 });
    expect(r.error).toBeUndefined();
    expect(r.cleanEnd).toBe(true);
    expect(r.received.byteLength).toBe(size);
    expect(sha256(r.received)).toBe(sha256(data));
    // The target (the far app) got every byte and a clean EOF.
    expect(s.target.conns.length).toBe(1);
    expect(s.target.conns[0]!.receivedBytes).toBe(size);
    expect(s.target.conns[0]!.gotEnd).toBe(true);
    expect(flipped).toBe(4);
    expect(s.fault!.connections().length).toBeGreaterThanOrEqual(12); // each replaced by a re-dial
    // Each damaged record was caught by its receiver: the server for the flips upward, the client downward.
    // The first is logged at once, the rest summarised (lines aggregated per code: an attacker on the path
    // could otherwise damage every stripe after every re-dial), per source; stopping logs the pending summary.
    for (const logs of [s.serverLogs, s.clientLogs]) {
      expect(logs.filter((l) => / stripe \d dropped: E_RECORD_AUTH /.test(l)).length).toBe(1);
    }
    s.client!.stop();
    s.server.stop();
    for (const logs of [s.serverLogs, s.clientLogs]) {
      expect(logs.some((l) => /^2 stripes from 127\.0\.0\.1 dropped in the last \d+ s: E_RECORD_AUTH \(a record did not authenticate\); their data was re-sent$/.test(l))).toBe(true);
    }
  }, 120_000);
});

describe("0-RTT", () => {
  test("the app's first bytes leave with the first message: the fault proxy reads them before the server's reply exists", async () => {
    const events: string[] = [];
    const upBytes = new Map<number, number>();
    const s = await setup({
      client: { stripes: 2 },
      fault: {
        latencyMs: 100,
        tap(index, up, chunk) {
          if (index !== 0) return;
          const had = upBytes.get(index) ?? 0;
          if (up) upBytes.set(index, had + chunk.byteLength);
          if (up && had + chunk.byteLength > 140 && !events.includes("data up")) events.push("data up");
          if (!up && !events.includes("reply down")) events.push("reply down");
        },
      },
    });
    await exact(s.client!.port, 1000, 11);
    // Stripe 0's first message is 140 bytes; what follows on it is the app's data (in records). It was
    // read by the proxy before anything came back from the server, which is at least 100 ms away.
    expect(events).toEqual(["data up", "reply down"]);
  });
});

describe("clocks", () => {
  for (const skew of [31_000, -31_000]) {
    test(`a client clock ${skew > 0 ? "ahead" : "behind"} by 31 s is refused (stale-time); the client says E_AUTH`, async () => {
      const s = await setup({ client: { wallClock: () => Date.now() + skew, handshakeTimeoutMs: 400 } });
      const r = await appExchange(s.client!.port, randomData(1000, 12), { timeoutMs: 10_000 });
      expect(r.received.byteLength).toBe(0);
      expect(r.error).toBeDefined();
      await until(() => s.server.rejections["stale-time"] === 1, "the server counted stale-time");
      expect(s.target.conns.length).toBe(0);
    });
  }

  test("a client clock 25 s ahead is within the window and works", async () => {
    const s = await setup({ client: { wallClock: () => Date.now() + 25_000 } });
    await exact(s.client!.port, 1 << 20, 13);
  });
});

describe("limits at accept", () => {
  test("beyond a source's burst of failed hellos, the next is not even tried: silent like the rest (rate-limited)", async () => {
    const s = await setup({ server: { handshakeBurst: 3, handshakeRate: 0.01 } });
    const first = await Promise.all([0, 1, 2].map(() => probe(s.server.port, new Uint8Array(randomBytes(100)), cleanup)));
    for (const r of first) expectSilence(r);
    const over = await probe(s.server.port, new Uint8Array(randomBytes(100)), cleanup);
    expectSilence(over); // the same treatment as every other failure: nothing tells a prober why
    onlyReasons(s.server, { "bad-auth": 3, "rate-limited": 1 });
  });

  test("many sessions opened at once from one source are not limited by a small burst: tokens are taken at the key trial", async () => {
    // Ten app connections at once: ten accepts arrive before any hello is read. Charged at accept,
    // seven of them would have been dropped; charged at the key trial and refunded on success, none is.
    const s = await setup({ server: { handshakeBurst: 3, handshakeRate: 0.01 }, client: { stripes: 2 } });
    await Promise.all(Array.from({ length: 10 }, (_, i) => exact(s.client!.port, 64 * 1024, 40 + i)));
    onlyReasons(s.server, {});
  });

  test("a hello that authenticates gets its token back: a key holder is not limited by its own sessions", async () => {
    const s = await setup({ server: { handshakeBurst: 2, handshakeRate: 0.01 }, client: { stripes: 1 } });
    for (let i = 0; i < 4; i++) await exact(s.client!.port, 1000, 20 + i);
    onlyReasons(s.server, {});
  });

  test("the unauthenticated gate: when full, a newcomer is closed at once; after 1 s the oldest waiting one makes room", async () => {
    const s = await setup({ server: { maxUnauthenticated: 2, handshakeTimeoutMs: 5000 } });
    const holders = [0, 1].map(() => probe(s.server.port, new Uint8Array(10), cleanup, { timeoutMs: 20_000 }));
    await until(() => s.server.unauthenticated === 2, "two connections waiting");
    const refused = await probe(s.server.port, new Uint8Array(10), cleanup);
    expect(refused.received.byteLength).toBe(0);
    expect(refused.closedAfterMs).toBeLessThan(1000);
    expect(s.server.rejections.busy).toBe(1);
    await Bun.sleep(1100);
    const late = probe(s.server.port, new Uint8Array(10), cleanup, { timeoutMs: 20_000 });
    const oldest = await holders[0]!; // evicted to make room, long before its 5 s deadline
    expect(oldest.received.byteLength).toBe(0);
    expect(oldest.closedAfterMs).toBeLessThan(4000);
    expect(s.server.rejections.busy).toBe(2);
    expect(s.server.unauthenticated).toBe(2);
    s.server.stop();
    await Promise.all([holders[1], late]);
  });
});
