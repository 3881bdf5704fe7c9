/**
 * The stripe handshake: the parsers, the parser-driven reader (split anywhere, trickled, cut by its
 * absolute deadline, EOF, reset, oversize, garbage), admission on the server (every status and check, with
 * sessions held in a real registry), the client's verdict on a WELCOME, and the server and client glue
 * over real loopback sockets (port 0).
 *
 * Randomised splits use a seeded PRNG; the seed is in the test name.
 */

import { describe, expect, jest, test } from "bun:test";
import type { Socket } from "bun";
import { BrokenError, ConnectError, ProtocolError, type StriperError } from "../src/errors.ts";
import { listenTcp } from "../src/pipe/tcp.ts";
import { plainFront, type Front } from "../src/proxy/front.ts";
import {
  MAX_HANDSHAKE_BYTES,
  admit,
  judgeWelcome,
  readHandshake,
  type AdmissionPolicy,
  type HandshakeRead,
} from "../src/proxy/handshake.ts";
import { SessionRegistry, sessionKey } from "../src/proxy/registry.ts";
import { startClient } from "../src/proxy/client.ts";
import { startServer } from "../src/proxy/server.ts";
import {
  HELLO_JOIN,
  HELLO_OPEN,
  HELLO_SIZE,
  STATUS_BAD_VERSION,
  STATUS_OK,
  STATUS_REFUSED,
  STATUS_UNKNOWN_SESSION,
  VERSION,
  WELCOME_SIZE,
} from "../src/wire/constants.ts";
import {
  decodeWelcome,
  encodeHello,
  encodeWelcome,
  helloParser,
  welcomeParser,
  type HandshakeParser,
  type Hello,
} from "../src/wire/handshake.ts";
import { memPipePair, type MemPipePair } from "./helpers/mempipe.ts";
import { appExchange, randomData, sha256, startTarget } from "./helpers/net.ts";
import { cleanups, prng, randInt, until } from "./helpers/util.ts";

const LOOP = "127.0.0.1";
const cleanup = cleanups();

const hello = (over: Partial<Hello> = {}): Hello => ({
  version: VERSION,
  kind: HELLO_OPEN,
  stripeIndex: 0,
  stripeCount: 4,
  generation: 1,
  sessionId: new Uint8Array(16).fill(0xab),
  window: 1 << 20,
  ...over,
});

const cat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));

// --- parsers ---------------------------------------------------------------------------------------

describe("handshake parsers", () => {
  test("a HELLO parser asks for 32 bytes, then for what is missing, and ends the message at byte 32", () => {
    const bytes = cat(encodeHello(hello({ stripeIndex: 3, generation: 9 })), new Uint8Array([1, 2, 3]));
    expect(helloParser(new Uint8Array(0))).toEqual({ kind: "more", bytes: HELLO_SIZE });
    expect(helloParser(bytes.subarray(0, 31))).toEqual({ kind: "more", bytes: 1 });
    const step = helloParser(bytes);
    expect(step.kind).toBe("done");
    if (step.kind !== "done") return;
    expect(step.size).toBe(HELLO_SIZE);
    expect(step.value.stripeIndex).toBe(3);
    expect(step.value.generation).toBe(9);
  });

  test("bytes that are not a HELLO or WELCOME are invalid with E_BAD_MAGIC", () => {
    const junk = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: example\r\n\r\n");
    for (const parse of [helloParser, welcomeParser] as HandshakeParser<unknown>[]) {
      const step = parse(junk);
      expect(step.kind).toBe("invalid");
      if (step.kind !== "invalid") return;
      expect(step.error).toBeInstanceOf(ProtocolError);
      expect(step.error.code).toBe("E_BAD_MAGIC");
    }
  });

  test("a WELCOME parser ends the message at byte 16", () => {
    const bytes = cat(encodeWelcome({ version: VERSION, status: STATUS_OK, window: 12345 }), new Uint8Array(7));
    expect(welcomeParser(bytes.subarray(0, 10))).toEqual({ kind: "more", bytes: 6 });
    const step = welcomeParser(bytes);
    expect(step).toEqual({ kind: "done", size: WELCOME_SIZE, value: { version: VERSION, status: STATUS_OK, window: 12345 } });
  });
});

// --- the reader ------------------------------------------------------------------------------------

/**
 * A variable-length message like the next version's header: a u16 length, then that many bytes (≥ 1).
 * Records the length of every buffer it is called with.
 */
function lengthParser(calls: number[] = []): HandshakeParser<Uint8Array> {
  return (rx) => {
    calls.push(rx.byteLength);
    if (rx.byteLength < 2) return { kind: "more", bytes: 2 - rx.byteLength };
    const len = (rx[0]! << 8) | rx[1]!;
    if (len === 0) return { kind: "invalid", error: new ProtocolError("E_TEST_EMPTY", "empty message") };
    if (rx.byteLength < 2 + len) return { kind: "more", bytes: 2 + len - rx.byteLength };
    return { kind: "done", size: 2 + len, value: rx.slice(2, 2 + len) };
  };
}

function framed(body: Uint8Array): Uint8Array {
  return cat(new Uint8Array([body.byteLength >> 8, body.byteLength & 0xff]), body);
}

interface Reading<T> {
  pair: MemPipePair;
  results: (HandshakeRead<T> | StriperError)[];
}

/** Starts a reader on the b end of a memory pair; the test sends on a and delivers. */
function reading<T>(parse: HandshakeParser<T>, opts: { deadlineMs?: number; maxBytes?: number; open?: boolean; onReady?: () => void } = {}): Reading<T> {
  const pair = memPipePair({ open: opts.open ?? true });
  const results: (HandshakeRead<T> | StriperError)[] = [];
  readHandshake(pair.b, parse, { deadlineMs: opts.deadlineMs ?? 10_000, maxBytes: opts.maxBytes, onReady: opts.onReady }, (r) => results.push(r));
  cleanup.push(() => pair.kill("test over")); // also ends a reader still waiting, which clears its timer
  return { pair, results };
}

function success<T>(r: Reading<T>): HandshakeRead<T> {
  expect(r.results.length).toBe(1);
  const got = r.results[0]!;
  if (got instanceof Error) throw new Error(`expected a message, got ${got.code} ${got.message}`);
  return got;
}

function failure<T>(r: Reading<T>): StriperError {
  expect(r.results.length).toBe(1);
  const got = r.results[0]!;
  if (!(got instanceof Error)) throw new Error("expected an error, got a message");
  return got;
}

describe("readHandshake", () => {
  const body = randomData(300, 5);
  const message = framed(body);
  const tail = randomData(50, 6);
  const wire = cat(message, tail);

  /** Checks a successful read: the message, its value, and the leftover as the start of the tail. */
  function checkRead(r: Reading<Uint8Array>): void {
    const got = success(r);
    expect(sha256(got.value)).toBe(sha256(body));
    expect(sha256(got.message)).toBe(sha256(message));
    expect(got.leftover.byteLength + r.pair.queued("ab")).toBe(tail.byteLength);
    expect(sha256(got.leftover)).toBe(sha256(tail.subarray(0, got.leftover.byteLength)));
    expect(r.pair.b.paused).toBe(true); // held for the next owner
  }

  test("a variable-length message split in two at every byte arrives whole, with the bytes after it as leftover", () => {
    for (let cut = 1; cut < wire.byteLength; cut++) {
      const r = reading(lengthParser());
      r.pair.a.send(wire);
      r.pair.deliver("ab", cut);
      expect(r.results.length).toBe(cut >= message.byteLength ? 1 : 0);
      r.pair.deliver("ab");
      checkRead(r);
    }
  });

  for (const seed of [1, 2, 3, 4]) {
    test(`a message cut at random points arrives whole (seed ${seed})`, () => {
      const rand = prng(seed);
      for (let round = 0; round < 50; round++) {
        const r = reading(lengthParser());
        r.pair.a.send(wire);
        while (r.results.length === 0) expect(r.pair.deliver("ab", randInt(rand, 1, 40))).toBeGreaterThan(0);
        checkRead(r);
      }
    });
  }

  test("a trickle of single bytes arrives whole, and the parser runs only when the bytes it asked for are there", () => {
    const calls: number[] = [];
    const r = reading(lengthParser(calls));
    r.pair.a.send(wire);
    let deliveries = 0;
    while (r.results.length === 0) {
      expect(r.pair.deliver("ab", 1)).toBe(1);
      deliveries++;
    }
    expect(deliveries).toBe(message.byteLength);
    checkRead(r);
    expect(success(r).leftover.byteLength).toBe(0);
    // Nothing, then the 2 length bytes, then the whole message: three calls for 302 deliveries.
    expect(calls).toEqual([0, 2, message.byteLength]);
  });

  test("EOF before the message is complete is E_HANDSHAKE_EOF", () => {
    const r = reading(lengthParser());
    r.pair.a.send(message.subarray(0, 100));
    r.pair.a.shutdown();
    r.pair.deliverAll("ab");
    expect(failure(r).code).toBe("E_HANDSHAKE_EOF");
  });

  test("a reset during the handshake reports the pipe's error", () => {
    const r = reading(lengthParser());
    r.pair.a.send(message.subarray(0, 10));
    r.pair.deliver("ab");
    r.pair.a.close(new BrokenError("E_TEST", "peer gave up"));
    expect(failure(r).code).toBe("ECONNRESET");
  });

  test("a message announcing more than the limit is E_HANDSHAKE_TOO_LARGE as soon as its length is known", () => {
    const r = reading(lengthParser(), { maxBytes: 1024 });
    r.pair.a.send(framed(new Uint8Array(1023))); // 2 + 1023 bytes: one over
    r.pair.deliver("ab", 2);
    const err = failure(r);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.code).toBe("E_HANDSHAKE_TOO_LARGE");
    expect(r.pair.queued("ab")).toBe(1023); // decided before the body was read
  });

  test("the default limit is MAX_HANDSHAKE_BYTES, also for a message that arrives in one piece; one of exactly the limit is read", () => {
    const over = reading(lengthParser());
    over.pair.a.send(framed(new Uint8Array(MAX_HANDSHAKE_BYTES - 1)));
    over.pair.deliverAll("ab"); // one chunk: the parser never has to ask for more
    expect(failure(over).code).toBe("E_HANDSHAKE_TOO_LARGE");
    const exact = reading(lengthParser());
    const max = framed(randomData(MAX_HANDSHAKE_BYTES - 2, 9));
    exact.pair.a.send(max);
    exact.pair.deliverAll("ab");
    expect(success(exact).message.byteLength).toBe(MAX_HANDSHAKE_BYTES);
  });

  test("bytes the parser rejects end the read with the parser's error", () => {
    const r = reading(lengthParser());
    r.pair.a.send(new Uint8Array([0, 0, 9, 9, 9]));
    r.pair.deliverAll("ab");
    expect(failure(r).code).toBe("E_TEST_EMPTY");
  });

  test("a parser that breaks its contract is E_INTERNAL, not a hang or a throw", () => {
    const askNothing = reading<number>(() => ({ kind: "more", bytes: 0 }));
    expect(failure(askNothing).code).toBe("E_INTERNAL");
    const claimTooMuch = reading<number>((rx) => (rx.byteLength < 4 ? { kind: "more", bytes: 4 - rx.byteLength } : { kind: "done", size: 5, value: 1 }));
    claimTooMuch.pair.a.send(new Uint8Array(4));
    claimTooMuch.pair.deliverAll("ab");
    expect(failure(claimTooMuch).code).toBe("E_INTERNAL");
  });

  test("the deadline is absolute: a steady trickle does not extend it, and done is called once", () => {
    // Fake timers: one byte every 20 ms of timer time, exactly. With real timers a stalled process could
    // see its deadline fire after fewer drips than the test expects (issue 7).
    jest.useFakeTimers();
    cleanup.push(() => jest.useRealTimers());
    const r = reading(lengthParser(), { deadlineMs: 200 });
    r.pair.a.send(wire);
    let trickled = 0;
    for (let ms = 20; ms < 200; ms += 20) {
      jest.advanceTimersByTime(20);
      if (r.pair.deliver("ab", 1) > 0) trickled++;
    }
    expect(trickled).toBe(9); // bytes kept arriving, never 200 ms apart ...
    expect(r.results.length).toBe(0);
    jest.advanceTimersByTime(20); // ... and still the deadline, 200 ms after the start, held
    const err = failure(r);
    expect(err.code).toBe("E_HANDSHAKE_TIMEOUT");
    expect(trickled).toBeLessThan(message.byteLength);
    r.pair.deliver("ab", 1); // more bytes after the deadline change nothing
    jest.advanceTimersByTime(1000);
    expect(r.results.length).toBe(1);
  });

  test("onReady fires when the pipe opens, or at once when it is open already", () => {
    let readyCalls = 0;
    const later = reading(lengthParser(), { open: false, onReady: () => readyCalls++ });
    expect(readyCalls).toBe(0);
    later.pair.open();
    expect(readyCalls).toBe(1);
    reading(lengthParser(), { onReady: () => readyCalls++ });
    expect(readyCalls).toBe(2);
  });
});

// --- admission -------------------------------------------------------------------------------------

/** A stand-in for a session: admission and the registry only look at `closed`. */
class FakeSession {
  constructor(
    readonly name: string,
    public closed = false,
  ) {}
}

const target = { host: "192.0.2.7", port: 22 };
const policy: AdmissionPolicy = { maxStripes: 64, target };
const idA = new Uint8Array(16).fill(0xa1);
const idB = new Uint8Array(16).fill(0xb2);

describe("admission", () => {
  test("an OPEN for an unknown session opens one to the server's target", () => {
    const reg = new SessionRegistry<FakeSession>(8);
    expect(admit(hello({ sessionId: idA }), reg, policy)).toEqual({ kind: "open", key: sessionKey(idA), target });
    expect(reg.size).toBe(0); // admission decides; the server registers
  });

  test("OPEN and JOIN for a live session attach to it (parallel first dials, re-dials)", () => {
    const reg = new SessionRegistry<FakeSession>(8);
    const a = new FakeSession("a");
    reg.add(sessionKey(idA), a);
    for (const kind of [HELLO_OPEN, HELLO_JOIN]) {
      expect(admit(hello({ kind, sessionId: idA, stripeIndex: 3 }), reg, policy)).toEqual({ kind: "attach", key: sessionKey(idA), session: a });
    }
  });

  test("a JOIN for an unknown or ended session is STATUS_UNKNOWN_SESSION", () => {
    const reg = new SessionRegistry<FakeSession>(8);
    reg.add(sessionKey(idB), new FakeSession("b", true));
    for (const sessionId of [idA, idB]) {
      const a = admit(hello({ kind: HELLO_JOIN, sessionId }), reg, policy);
      expect(a).toEqual({ kind: "refuse", status: STATUS_UNKNOWN_SESSION, code: "E_UNKNOWN_SESSION", reason: `unknown session ${sessionKey(sessionId).slice(0, 12)}` });
    }
  });

  test("a version other than ours is STATUS_BAD_VERSION, checked before anything else", () => {
    const reg = new SessionRegistry<FakeSession>(8);
    for (const version of [0, 2, 255]) {
      const a = admit(hello({ version, stripeIndex: 999, kind: 7 }), reg, policy);
      expect(a).toEqual({ kind: "refuse", status: STATUS_BAD_VERSION, code: "E_BAD_VERSION", reason: `version ${version}` });
    }
  });

  test("a stripe index at or past maxStripes is refused; the last one allowed is admitted", () => {
    const reg = new SessionRegistry<FakeSession>(8);
    const small: AdmissionPolicy = { maxStripes: 8, target };
    expect(admit(hello({ stripeIndex: 7, stripeCount: 8 }), reg, small).kind).toBe("open");
    for (const stripeIndex of [8, 9, 65535]) {
      const a = admit(hello({ stripeIndex, stripeCount: 65535 }), reg, small);
      expect(a).toEqual({ kind: "refuse", status: STATUS_REFUSED, code: "E_STRIPE_INDEX", reason: `index ${stripeIndex} kind 1` });
    }
  });

  test("a kind that is neither OPEN nor JOIN is refused", () => {
    const reg = new SessionRegistry<FakeSession>(8);
    for (const kind of [0, 3, 255]) {
      const a = admit(hello({ kind }), reg, policy);
      expect(a).toEqual({ kind: "refuse", status: STATUS_REFUSED, code: "E_BAD_KIND", reason: `index 0 kind ${kind}` });
    }
  });

  test("a stripe count of 0, or an index at or past the count, is refused", () => {
    const reg = new SessionRegistry<FakeSession>(8);
    const cases: [number, number][] = [
      [0, 0],
      [4, 4],
      [5, 4],
      [1, 1],
    ];
    for (const [stripeIndex, stripeCount] of cases) {
      const a = admit(hello({ stripeIndex, stripeCount }), reg, policy);
      expect(a).toEqual({ kind: "refuse", status: STATUS_REFUSED, code: "E_STRIPE_COUNT", reason: `index ${stripeIndex} of stripe count ${stripeCount}` });
    }
  });

  test("every HELLO a client sends (1–64 stripes, any index, OPEN or JOIN) is admitted", () => {
    const reg = new SessionRegistry<FakeSession>(8);
    const live = new FakeSession("live");
    reg.add(sessionKey(idA), live);
    for (let count = 1; count <= 64; count++) {
      for (let index = 0; index < count; index++) {
        const fresh = admit(hello({ kind: HELLO_OPEN, sessionId: idB, stripeIndex: index, stripeCount: count }), reg, policy);
        expect(fresh.kind).toBe("open");
        for (const kind of [HELLO_OPEN, HELLO_JOIN]) {
          const joined = admit(hello({ kind, sessionId: idA, stripeIndex: index, stripeCount: count }), reg, policy);
          expect(joined.kind).toBe("attach");
        }
      }
    }
  });

  test("a stripe count above maxStripes is not refused: the indices the server allows are admitted", () => {
    const reg = new SessionRegistry<FakeSession>(8);
    const small: AdmissionPolicy = { maxStripes: 4, target };
    expect(admit(hello({ stripeIndex: 3, stripeCount: 16 }), reg, small).kind).toBe("open");
    expect(admit(hello({ stripeIndex: 4, stripeCount: 16 }), reg, small)).toMatchObject({ kind: "refuse", code: "E_STRIPE_INDEX" });
  });

  test("at the session limit a new OPEN is refused, while stripes of live sessions still attach", () => {
    const reg = new SessionRegistry<FakeSession>(2);
    const a = new FakeSession("a");
    reg.add(sessionKey(idA), a);
    reg.add(sessionKey(idB), new FakeSession("b", true)); // ended, not yet removed: still holds its slot
    const idC = new Uint8Array(16).fill(0xc3);
    expect(admit(hello({ sessionId: idC }), reg, policy)).toEqual({ kind: "refuse", status: STATUS_REFUSED, code: "E_SESSION_LIMIT", reason: "session limit 2" });
    expect(admit(hello({ sessionId: idB }), reg, policy)).toMatchObject({ kind: "refuse", code: "E_SESSION_LIMIT" });
    expect(admit(hello({ kind: HELLO_JOIN, sessionId: idA }), reg, policy)).toEqual({ kind: "attach", key: sessionKey(idA), session: a });
  });

  test("while shutting down a new OPEN is refused; an ended session's JOIN is unknown", () => {
    const reg = new SessionRegistry<FakeSession>(8);
    const a = new FakeSession("a");
    reg.add(sessionKey(idA), a);
    reg.stopOpening();
    expect(admit(hello({ sessionId: idB }), reg, policy)).toEqual({ kind: "refuse", status: STATUS_REFUSED, code: "E_SHUTDOWN", reason: "shutting down" });
    a.closed = true;
    expect(admit(hello({ kind: HELLO_JOIN, sessionId: idA }), reg, policy)).toMatchObject({ kind: "refuse", status: STATUS_UNKNOWN_SESSION });
  });
});

// --- the client's verdict on a WELCOME -------------------------------------------------------------

describe("judgeWelcome", () => {
  test("OK attaches with the server's window", () => {
    expect(judgeWelcome({ version: VERSION, status: STATUS_OK, window: 4 << 20 })).toEqual({ kind: "attach", window: 4 << 20 });
  });

  test("another version, or STATUS_BAD_VERSION, ends the session with E_BAD_VERSION", () => {
    for (const w of [
      { version: 2, status: STATUS_OK, window: 1 },
      { version: VERSION, status: STATUS_BAD_VERSION, window: 0 },
    ]) {
      const v = judgeWelcome(w);
      expect(v.kind).toBe("end");
      if (v.kind !== "end") return;
      expect(v.error).toBeInstanceOf(ConnectError);
      expect(v.error.code).toBe("E_BAD_VERSION");
    }
  });

  test("STATUS_UNKNOWN_SESSION ends the session with E_SESSION_LOST", () => {
    const v = judgeWelcome({ version: VERSION, status: STATUS_UNKNOWN_SESSION, window: 0 });
    expect(v.kind).toBe("end");
    if (v.kind === "end") expect(v.error.code).toBe("E_SESSION_LOST");
  });

  test("STATUS_REFUSED, or a status we do not know, fails only the stripe: E_REFUSED", () => {
    for (const status of [STATUS_REFUSED, 9, 255]) {
      const v = judgeWelcome({ version: VERSION, status, window: 0 });
      expect(v.kind).toBe("retry");
      if (v.kind === "retry") expect(v.error.code).toBe("E_REFUSED");
    }
  });
});

// --- the glue, over real sockets -------------------------------------------------------------------

/** Connects, writes `pieces` with a pause between them, and resolves with what came back until `want` bytes or close. */
async function rawHandshake(port: number, pieces: Uint8Array[], want: number): Promise<{ reply: Uint8Array; closed: boolean }> {
  const got: Uint8Array[] = [];
  let n = 0;
  let closed = false;
  const sock: Socket<undefined> = await Bun.connect({
    hostname: LOOP,
    port,
    socket: {
      data(_s, chunk) {
        got.push(chunk);
        n += chunk.byteLength;
      },
      close() {
        closed = true;
      },
      error() {},
    },
  });
  cleanup.push(() => sock.terminate());
  for (const p of pieces) {
    sock.write(p);
    await Bun.sleep(5);
  }
  await until(() => n >= want || closed, `the server answered ${want} bytes (got ${n})`, 60_000); // watchdog only
  return { reply: new Uint8Array(Buffer.concat(got)), closed };
}

describe("handshake over real sockets", () => {
  function server(maxStripes?: number) {
    const t = startTarget({ mode: "echo" });
    const s = startServer({ listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: t.port }, maxStripes, log: () => {} });
    cleanup.push(() => {
      s.stop();
      t.stop();
    });
    return { s, t };
  }

  test("a HELLO written in pieces is answered OK with the session's window, and the session is registered", async () => {
    const { s } = server();
    const h = encodeHello(hello({ sessionId: idA }));
    const r = await rawHandshake(s.port, [h.subarray(0, 1), h.subarray(1, 13), h.subarray(13)], WELCOME_SIZE);
    const w = decodeWelcome(r.reply);
    expect(w.status).toBe(STATUS_OK);
    expect(w.version).toBe(VERSION);
    expect(w.window).toBe(s.sessions.get(sessionKey(idA))!.opts.window);
    expect(s.sessions.size).toBe(1);
  });

  test("a stripe index outside its own stripe count is refused: STATUS_REFUSED, window 0, no session, no target", async () => {
    const { s, t } = server();
    for (const [stripeIndex, stripeCount] of [
      [2, 2],
      [0, 0],
    ]) {
      const r = await rawHandshake(s.port, [encodeHello(hello({ stripeIndex: stripeIndex!, stripeCount: stripeCount! }))], WELCOME_SIZE);
      expect(r.reply.byteLength).toBe(WELCOME_SIZE);
      expect(decodeWelcome(r.reply)).toEqual({ version: VERSION, status: STATUS_REFUSED, window: 0 });
    }
    expect(s.sessions.size).toBe(0);
    expect(t.conns.length).toBe(0);
  });

  test("the client takes any front: a custom one's connections are carried like a plain listener's", async () => {
    const t = startTarget({ mode: "echo" });
    const s = startServer({ listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: t.port }, log: () => {} });
    let handed = 0;
    const counting: Front = {
      listen(onApp) {
        return plainFront({ host: LOOP, port: 0 }).listen((app) => {
          handed++;
          onApp(app);
        });
      },
    };
    const logs: string[] = [];
    const c = startClient({ front: counting, peer: { host: LOOP, port: s.port }, stripes: 3, log: (l) => logs.push(l) });
    cleanup.push(() => {
      c.stop();
      s.stop();
      t.stop();
    });
    const data = randomData(2 * 1024 * 1024, 77);
    const res = await appExchange(c.port, data, { timeoutMs: 60_000 });
    expect(res.error).toBeUndefined();
    expect(sha256(res.received)).toBe(sha256(data));
    expect(handed).toBe(1);
    expect(logs[0]).toBe(`client listening on ${LOOP}:${c.port} peer ${LOOP}:${s.port} stripes 3`);
  });

  test("a server reads a HELLO with listenTcp + readHandshake and gets the frames behind it as leftover", async () => {
    const reads: HandshakeRead<Hello>[] = [];
    const l = listenTcp({ host: LOOP, port: 0 }, (pipe) => {
      readHandshake(pipe, helloParser, { deadlineMs: 60_000 }, (r) => {
        if (!(r instanceof Error)) reads.push(r);
        pipe.close();
      });
    });
    cleanup.push(() => l.stop());
    const frames = randomData(1000, 3);
    const wire = cat(encodeHello(hello({ stripeIndex: 5, stripeCount: 6, generation: 40000 })), frames);
    await rawHandshake(l.port, [wire], Infinity).catch(() => undefined);
    await until(() => reads.length === 1, "the HELLO was read", 60_000); // watchdog only
    expect(reads[0]!.value.stripeIndex).toBe(5);
    expect(reads[0]!.value.generation).toBe(40000);
    // The leftover is whatever arrived with the HELLO's last byte: a prefix of the frames (usually all).
    const left = reads[0]!.leftover;
    expect(left.byteLength).toBeGreaterThan(0);
    expect(sha256(left)).toBe(sha256(frames.subarray(0, left.byteLength)));
  });
});
