/**
 * SealedPipe: the pipe contract over sealed records. Memory pipes (test/helpers/mempipe.ts) let the
 * tests choose where carrier chunks split, tamper with bytes in flight and hold deliveries; real
 * loopback sockets (port 0) carry a full v2 handshake with 0-RTT, large transfers checked by hash, and
 * a forwarder that flips one bit in flight. TEST_SEED=<seed> replays a seeded test.
 */

import type { ErrorCode } from "../src/errors.ts";
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { randomBytes } from "node:crypto";
import { BrokenError, StriperError } from "../src/errors.ts";
import { SealedPipe, type PrefaceStep } from "../src/pipe/sealed.ts";
import type { Pipe, PipeHandler } from "../src/pipe/pipe.ts";
import { connectTcp, listenTcp } from "../src/pipe/tcp.ts";
import { FIRST_FRAME_COUNTER, KIND_OPEN, MAX_SEALS, RECORD_OVERHEAD, STATUS_OK } from "../src/secure/constants.ts";
import { RecordError } from "../src/secure/errors.ts";
import { encodeClientHello, encodeServerReply, readClientHello, readServerReply, type HandshakeAuth } from "../src/secure/messages.ts";
import { RecordOpener, RecordSealer, recordSize } from "../src/secure/record.ts";
import { memPipePair } from "./helpers/mempipe.ts";
import { randomData, sha256 } from "./helpers/net.ts";
import { cleanups, prng, randInt, until } from "./helpers/util.ts";

const cleanup = cleanups();
const HOST = "127.0.0.1";
const SEED = process.env.TEST_SEED !== undefined ? Number(process.env.TEST_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const KAB = new Uint8Array(randomBytes(32)); // a → b
const KBA = new Uint8Array(randomBytes(32)); // b → a

/** Records every event a pipe delivers. */
class Recorder implements PipeHandler {
  chunks: Uint8Array[] = [];
  ended = false;
  closed = false;
  closeErr: StriperError | undefined;
  drains = 0;
  readies = 0;
  onData?: (chunk: Uint8Array) => void;
  ready(): void {
    this.readies++;
  }
  data(chunk: Uint8Array): void {
    expect(this.closed).toBe(false);
    this.chunks.push(chunk);
    this.onData?.(chunk);
  }
  drain(): void {
    this.drains++;
  }
  end(): void {
    expect(this.ended).toBe(false);
    this.ended = true;
  }
  close(err?: StriperError): void {
    expect(this.closed).toBe(false);
    this.closed = true;
    this.closeErr = err;
  }
  get bytes(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.chunks));
  }
}

/** Two SealedPipes over a memory pair, each with its own key per direction. */
function sealedPair(opts: { copyOnSend?: boolean; highWaterMark?: number; maxRecord?: number } = {}) {
  const mem = memPipePair({ copyOnSend: opts.copyOnSend, highWaterMark: opts.highWaterMark });
  const a = new SealedPipe(mem.a, { sealer: new RecordSealer(KAB), opener: new RecordOpener(KBA), maxRecord: opts.maxRecord });
  const b = new SealedPipe(mem.b, { sealer: new RecordSealer(KBA), opener: new RecordOpener(KAB), maxRecord: opts.maxRecord });
  const ra = new Recorder();
  const rb = new Recorder();
  a.setHandler(ra);
  b.setHandler(rb);
  return { mem, a, b, ra, rb };
}

function expectRecordError(err: StriperError | undefined, code: ErrorCode): void {
  expect(err).toBeInstanceOf(RecordError);
  expect(err?.code).toBe(code);
}

describe("SealedPipe over memory pipes", () => {
  test("carries data both ways at any split; each send is one carrier buffer of exactly one record", () => {
    const rand = prng(SEED);
    const { mem, a, b, ra, rb } = sealedPair();
    const sentAB: Uint8Array[] = [];
    for (let i = 0; i < 40; i++) {
      const chunk = randomData(randInt(rand, 1, 70_000), SEED + i);
      sentAB.push(chunk);
      a.send(chunk);
      expect(mem.a.queue.length).toBe(1);
      expect((mem.a.queue[0] as Uint8Array).byteLength).toBe(recordSize(chunk.byteLength));
      mem.deliverAll("ab", randInt(rand, 1, 100_000));
      b.send(chunk.subarray(0, 100));
    }
    mem.deliverAll("ba", 7);
    expect(sha256(rb.bytes)).toBe(sha256(Buffer.concat(sentAB)));
    expect(sha256(ra.bytes)).toBe(sha256(Buffer.concat(sentAB.map((c) => c.subarray(0, 100)))));
    // Stats count plaintext, as the session's per-stripe byte counts do.
    const total = sentAB.reduce((n, c) => n + c.byteLength, 0);
    expect(a.stats.bytesOut).toBe(total);
    expect(b.stats.bytesIn).toBe(total);
    expect(mem.a.stats.bytesOut).toBe(total + 40 * RECORD_OVERHEAD);
  }, 20_000);

  test("copiesOnSend: the caller may reuse its buffer as soon as send() returns, even over a by-reference carrier", () => {
    const { mem, a, rb } = sealedPair({ copyOnSend: false });
    expect(a.copiesOnSend).toBe(true);
    expect(mem.a.copiesOnSend).toBeUndefined();
    const buf = new Uint8Array(5000).fill(1);
    a.send(buf);
    buf.fill(2);
    a.send(buf);
    mem.deliverAll("ab");
    expect(rb.bytes.subarray(0, 5000).every((x) => x === 1)).toBe(true);
    expect(rb.bytes.subarray(5000).every((x) => x === 2)).toBe(true);
  });

  test("sendv cuts records where asked; over a copying carrier small records share one buffer, large ones go alone", () => {
    const { mem, a, rb } = sealedPair({ copyOnSend: true });
    const data = randomData(200_000, 5);
    const pieces = [data.subarray(0, 16), data.subarray(16, 150_000), data.subarray(150_000)];
    a.sendv(pieces, data.byteLength, [70_000, 140_000]);
    expect(mem.a.queue.map((c) => (c as Uint8Array).byteLength)).toEqual([200_000 + 3 * RECORD_OVERHEAD]);
    // The first record is released as soon as it is whole, before the rest of the buffer arrives.
    mem.deliver("ab", recordSize(70_000));
    expect(rb.bytes.byteLength).toBe(70_000);
    mem.deliverAll("ab", 4096);
    expect(sha256(rb.bytes)).toBe(sha256(data));
    // A large record between small ones: order kept, the large one alone.
    const big = randomData(300_000, 6);
    a.sendv([big.subarray(0, 5), big.subarray(5)], big.byteLength, [10_000, 270_000]);
    expect(mem.a.queue.map((c) => (c as Uint8Array).byteLength)).toEqual([recordSize(10_000), recordSize(260_000), recordSize(30_000)]);
    // A few small records: one exact-size buffer (not a pooled one a congested carrier would pin).
    a.sendv([big.subarray(0, 30_000)], 30_000, [10_000]);
    expect(mem.a.queue.slice(3).map((c) => (c as Uint8Array).byteLength)).toEqual([recordSize(10_000) + recordSize(20_000)]);
    mem.deliverAll("ab", 7000);
    expect(sha256(rb.bytes)).toBe(sha256(Buffer.concat([data, big, big.subarray(0, 30_000)])));
    // Over a by-reference carrier: one carrier buffer per record, as before.
    const ref = sealedPair();
    ref.a.sendv(pieces, data.byteLength, [70_000, 140_000]);
    expect(ref.mem.a.queue.map((c) => (c as Uint8Array).byteLength)).toEqual([70_036, 70_036, 60_036]);
    ref.mem.deliverAll("ab", 5000);
    expect(sha256(ref.rb.bytes)).toBe(sha256(data));
  });

  test("a chunk above the record maximum goes out as several records, one carrier buffer each", () => {
    const { mem, a, rb } = sealedPair({ maxRecord: 1000 });
    const data = randomData(3500, 3);
    a.send(data);
    expect(mem.a.queue.map((c) => (c as Uint8Array).byteLength)).toEqual([1036, 1036, 1036, 536]);
    mem.deliverAll("ab", 333);
    expect(sha256(rb.bytes)).toBe(sha256(data));
  });

  test("a flipped bit in flight: E_RECORD_AUTH, nothing of the damaged record delivered, the peer sees a reset", () => {
    const { mem, a, rb, ra } = sealedPair();
    a.send(randomData(1000, 1));
    a.send(randomData(1000, 2));
    a.send(randomData(1000, 3));
    const second = mem.a.queue[1] as Uint8Array;
    second[500]! ^= 0x04;
    mem.deliverAll("ab", 300);
    expect(sha256(rb.bytes)).toBe(sha256(randomData(1000, 1)));
    expect(rb.closed).toBe(true);
    expectRecordError(rb.closeErr, "E_RECORD_AUTH");
    expect(ra.closed).toBe(true);
    expect(ra.closeErr?.code).toBe("ECONNRESET");
  });

  test("damage anywhere in any record, delivered at seeded random splits: only whole earlier records arrive", () => {
    const rand = prng(SEED ^ 0x5eed);
    for (let round = 0; round < 200; round++) {
      const { mem, a, rb } = sealedPair();
      const sizes = Array.from({ length: randInt(rand, 1, 5) }, () => randInt(rand, 1, 3000));
      const sent = sizes.map((n, i) => randomData(n, round * 10 + i + 1));
      for (const c of sent) a.send(c);
      const j = randInt(rand, 0, sizes.length - 1);
      const rec = mem.a.queue[j] as Uint8Array;
      const bit = randInt(rand, 0, rec.byteLength * 8 - 1);
      rec[bit >>> 3]! ^= 1 << (bit & 7);
      while (mem.deliver("ab", randInt(rand, 1, 4000)) >= 0);
      const ok = Buffer.concat(sent.slice(0, j));
      if (Buffer.compare(Buffer.from(rb.bytes), ok) !== 0 || rb.closeErr?.code !== "E_RECORD_AUTH") {
        throw new Error(`seed ${SEED} round ${round}: delivered ${rb.bytes.byteLength} bytes, expected ${ok.byteLength}; close ${rb.closeErr?.code}`);
      }
    }
  });

  test("backpressure passes through: send() false while the carrier is congested, drain when it empties", () => {
    const { mem, a, ra } = sealedPair({ highWaterMark: 0 });
    expect(a.send(new Uint8Array(10))).toBe(false);
    expect(a.send(new Uint8Array(0))).toBe(false); // still congested
    expect(a.stats.congestions).toBe(1);
    mem.deliverAll("ab");
    expect(ra.drains).toBe(1);
    expect(a.send(new Uint8Array(0))).toBe(true);
  });

  test("pause holds verified records, even in the middle of a carrier chunk; resume delivers them in order", async () => {
    const { mem, a, b, rb } = sealedPair({ copyOnSend: true });
    const parts = [1, 2, 3, 4].map((i) => randomData(500, i));
    // Four records in ONE carrier chunk: the receiver pauses after the first.
    for (const p of parts) a.send(p);
    const one = Buffer.concat(mem.a.queue.splice(0) as Uint8Array[]);
    mem.a.queue.push(one);
    rb.onData = () => b.pause();
    mem.deliver("ab");
    expect(rb.chunks.length).toBe(1);
    rb.onData = undefined;
    b.resume();
    expect(rb.chunks.length).toBe(1); // delivered from a fresh stack, not inside resume()
    await until(() => rb.chunks.length === 4, "the held records were delivered after resume");
    expect(sha256(rb.bytes)).toBe(sha256(Buffer.concat(parts)));
  });

  test("a failure behind paused records: the peer is reset at once; the verified records come first, then the close", async () => {
    const { mem, a, b, ra, rb } = sealedPair();
    for (let i = 1; i <= 3; i++) a.send(randomData(400, i));
    const [r1, r2, r3] = mem.a.queue.splice(0) as Uint8Array[];
    r3![100]! ^= 1;
    mem.a.queue.push(Buffer.concat([r1!, r2!, r3!]));
    rb.onData = () => b.pause();
    mem.deliver("ab");
    expect(rb.chunks.length).toBe(1);
    expect(ra.closeErr?.code).toBe("ECONNRESET"); // reset right away, not after the receiver resumes
    expect(rb.closed).toBe(false);
    rb.onData = undefined;
    b.resume();
    await until(() => rb.closed, "the pipe closed after delivering the verified records");
    expect(sha256(rb.bytes)).toBe(sha256(Buffer.concat([randomData(400, 1), randomData(400, 2)])));
    expectRecordError(rb.closeErr, "E_RECORD_AUTH");
  });

  test("a throwing data handler closes the pipe with E_HANDLER instead of losing the rest", () => {
    const { mem, a, b, rb } = sealedPair();
    a.send(randomData(10, 1));
    a.send(randomData(10, 2));
    mem.a.queue.push(Buffer.concat(mem.a.queue.splice(0) as Uint8Array[]));
    rb.onData = () => {
      throw new Error("app bug");
    };
    mem.deliver("ab");
    expect(b.state).toBe("closed");
    expect(rb.closeErr?.code).toBe("E_HANDLER");
    expect(rb.chunks.length).toBe(1);
  });

  test("half-close: the peer's end() after all its data; both shut down: both close cleanly", () => {
    const { mem, a, b, ra, rb } = sealedPair();
    a.send(randomData(3000, 1));
    a.shutdown();
    expect(a.writable).toBe(false);
    expect(() => a.send(new Uint8Array(1))).toThrow(BrokenError);
    mem.deliverAll("ab", 100);
    expect(rb.ended).toBe(true);
    expect(rb.bytes.byteLength).toBe(3000);
    expect(b.readable).toBe(false);
    b.send(randomData(10, 2)); // the other direction still flows
    b.shutdown();
    mem.deliverAll("ba");
    expect(ra.bytes.byteLength).toBe(10);
    expect(ra.ended).toBe(true);
    expect(ra.closed && rb.closed).toBe(true);
    expect(ra.closeErr).toBeUndefined();
    expect(rb.closeErr).toBeUndefined();
  });

  test("a FIN in the middle of a record is E_RECORD_TRUNCATED, and the partial record is never delivered", () => {
    const mem = memPipePair();
    const b = new SealedPipe(mem.b, { sealer: new RecordSealer(KBA), opener: new RecordOpener(KAB) });
    const rb = new Recorder();
    b.setHandler(rb);
    const s = new RecordSealer(KAB);
    mem.a.send(s.seal(randomData(100, 1)));
    mem.a.send(s.seal(randomData(100, 2)).subarray(0, 90));
    mem.a.shutdown();
    mem.deliverAll("ab");
    expect(rb.bytes.byteLength).toBe(100);
    expect(rb.ended).toBe(false);
    expectRecordError(rb.closeErr, "E_RECORD_TRUNCATED");
  });

  test("a used-up key closes the pipe with E_RECORD_COUNTER instead of reusing a nonce", () => {
    const mem = memPipePair({ highWaterMark: 1 << 20 });
    const a = new SealedPipe(mem.a, { sealer: new RecordSealer(KAB, MAX_SEALS - 2), opener: new RecordOpener(KBA) });
    const ra = new Recorder();
    a.setHandler(ra);
    expect(a.send(new Uint8Array(5))).toBe(true);
    expect(a.send(new Uint8Array(5))).toBe(false);
    expectRecordError(ra.closeErr, "E_RECORD_COUNTER");
    expect(mem.a.queue.length).toBe(0); // reset: nothing more goes out
  });

  test("leftover bytes given at construction are opened first, after the handler is installed", async () => {
    const s = new RecordSealer(KAB);
    const early = Buffer.concat([s.seal(Uint8Array.of(1, 2)), s.seal(Uint8Array.of(3)).subarray(0, 10)]);
    const mem = memPipePair();
    const b = new SealedPipe(mem.b, { sealer: new RecordSealer(KBA), opener: new RecordOpener(KAB), leftover: early });
    const rb = new Recorder();
    b.setHandler(rb);
    mem.a.send(new RecordSealer(KAB, 2).seal(Uint8Array.of(3)).subarray(10)); // rest of record 2
    mem.a.send(s.seal(Uint8Array.of(4)));
    mem.deliverAll("ab");
    await until(() => rb.bytes.byteLength === 4, "leftover and later records were delivered");
    expect([...rb.bytes]).toEqual([1, 2, 3, 4]);
  });

  test("constructor refuses a closed carrier and needs exactly one of opener and preface", () => {
    const mem = memPipePair();
    expect(() => new SealedPipe(mem.a, { sealer: new RecordSealer(KAB) })).toThrow("exactly one");
    const preface = (): PrefaceStep => ({ status: "need", total: 1 });
    expect(() => new SealedPipe(mem.a, { sealer: new RecordSealer(KAB), opener: new RecordOpener(KBA), preface })).toThrow("exactly one");
    mem.kill();
    expect(() => new SealedPipe(mem.a, { sealer: new RecordSealer(KAB), opener: new RecordOpener(KBA) })).toThrow(BrokenError);
  });
});

// --- v2 handshake on top: the client reads the reply as the preface, sending 0-RTT before it ------------

const PSK = new Uint8Array(randomBytes(32));
const KEYED: HandshakeAuth = { mode: "keyed", keys: [PSK] };

function clientHeader() {
  return { kind: KIND_OPEN, flags: 0, stripeIndex: 0, generation: 1, stripeCount: 1, timestampMs: Date.now(), window: 1 << 20, secret: new Uint8Array(randomBytes(32)), options: [] };
}

/** Client side: sends the hello on `carrier`, returns a SealedPipe that reads the reply as its preface. */
function clientSide(carrier: Pipe, auth = KEYED): { pipe: SealedPipe; reply: { status?: number } } {
  const sid = new Uint8Array(randomBytes(16));
  const hello = encodeClientHello(auth, sid, clientHeader());
  const reply: { status?: number } = {};
  const pipe = new SealedPipe(carrier, {
    sealer: hello.sealer!,
    preface(received) {
      const step = readServerReply(received, auth, { sid, cs: hello.cs });
      switch (step.status) {
        case "need":
          return step;
        case "fail":
          return { status: "fail", error: new StriperError("E_AUTH", `server reply did not authenticate (${step.reason})`) };
        case "done":
          reply.status = step.value.reply.status;
          return { status: "done", consumed: step.consumed, opener: new RecordOpener(step.value.key!, FIRST_FRAME_COUNTER) };
      }
    },
  });
  carrier.send(hello.bytes);
  return { pipe, reply };
}

/**
 * Server side: reads the hello from `carrier` (whose handler this takes), answers, and hands a SealedPipe
 * with the 0-RTT leftover to `onPipe`. A hello that fails is dropped silently (collected in `failures`).
 */
function serverSide(carrier: Pipe, onPipe: (p: SealedPipe) => void, failures: string[] = [], keys = KEYED): void {
  let buf = new Uint8Array(0);
  let silent = false;
  carrier.setHandler({
    data(chunk) {
      if (silent) return; // read and discard
      buf = new Uint8Array(Buffer.concat([buf, chunk]));
      const step = readClientHello(buf, keys);
      if (step.status === "need") return;
      if (step.status === "fail") {
        failures.push(step.reason);
        silent = true; // silence: keep reading, send nothing
        return;
      }
      const hello = step.value;
      const out = encodeServerReply(keys.mode === "keyed" ? keys.keys[hello.keyIndex] : undefined, hello, { status: STATUS_OK, flags: 0, window: 1 << 20, options: [] });
      carrier.send(out.bytes);
      const pipe = new SealedPipe(carrier, {
        sealer: out.sealer!,
        opener: new RecordOpener(hello.key!, FIRST_FRAME_COUNTER),
        leftover: buf.subarray(step.consumed),
      });
      onPipe(pipe);
    },
    drain() {},
    end() {},
    close() {},
  });
}

describe("v2 handshake with 0-RTT over memory pipes", () => {
  test("the client's first bytes ride with the hello; the reply arrives split at every byte", async () => {
    for (const split of [1, 2, 7, 31, 53, 64, 1000]) {
      const mem = memPipePair();
      let server: SealedPipe | undefined;
      const rs = new Recorder();
      serverSide(mem.b, (p) => {
        server = p;
        p.setHandler(rs);
      });
      const { pipe: client, reply } = clientSide(mem.a);
      const rc = new Recorder();
      client.setHandler(rc);
      client.send(new TextEncoder().encode("early data, before any reply"));
      mem.deliverAll("ab"); // hello + 0-RTT record
      await until(() => rs.chunks.length === 1, "the server delivered the 0-RTT record");
      expect(new TextDecoder().decode(rs.bytes)).toBe("early data, before any reply");
      server!.send(new TextEncoder().encode("answer"));
      mem.deliverAll("ba", split);
      expect(reply.status).toBe(STATUS_OK);
      expect(new TextDecoder().decode(rc.bytes)).toBe("answer");
    }
  });

  test("a client with another key gets no byte back: the server cannot open its hello", () => {
    const mem = memPipePair();
    const failures: string[] = [];
    serverSide(mem.b, (p) => p.setHandler(new Recorder()), failures);
    const { pipe: client } = clientSide(mem.a, { mode: "keyed", keys: [new Uint8Array(randomBytes(32))] });
    client.setHandler(new Recorder());
    client.send(Uint8Array.of(1, 2, 3));
    mem.deliverAll("ab");
    expect(failures).toEqual(["bad-auth"]);
    expect(mem.queued("ba")).toBe(0);
  });

  test("a reply from an impostor (another key) or changed in flight closes the client with the preface's error", () => {
    for (const tamper of ["impostor", "bit"] as const) {
      const mem = memPipePair();
      const { pipe: client } = clientSide(mem.a);
      const rc = new Recorder();
      client.setHandler(rc);
      const hello = mem.a.queue[0] as Uint8Array;
      const who = { sid: hello.subarray(0, 16), cs: hello.subarray(16, 48) };
      const psk = tamper === "impostor" ? new Uint8Array(randomBytes(32)) : PSK;
      const reply = encodeServerReply(psk, who, { status: STATUS_OK, flags: 0, window: 1 << 20, options: [] });
      const bytes = Buffer.concat([reply.bytes, reply.sealer!.seal(Uint8Array.of(9))]);
      if (tamper === "bit") bytes[40]! ^= 1;
      mem.b.send(bytes);
      mem.deliverAll("ba");
      expect(rc.closeErr?.code).toBe("E_AUTH");
      expect(rc.chunks.length).toBe(0);
    }
  });

  test("EOF before the whole reply is E_RECORD_TRUNCATED", () => {
    const mem = memPipePair();
    const { pipe: client } = clientSide(mem.a);
    const rc = new Recorder();
    client.setHandler(rc);
    mem.b.send(new Uint8Array(40));
    mem.b.shutdown();
    mem.deliverAll("ba");
    expectRecordError(rc.closeErr, "E_RECORD_TRUNCATED");
  });
});

// --- real sockets ---------------------------------------------------------------------------------------

/** A listener whose accepted connections run serverSide; resolves pipes as they come. */
function sealedServer(onPipe: (p: SealedPipe) => void) {
  const l = listenTcp({ host: HOST, port: 0 }, (tcp) => serverSide(tcp, onPipe));
  cleanup.push(() => l.stop());
  return l;
}

/**
 * Sends `data` on `pipe` in chunks of random size with backpressure, then shuts down. `vector`: each
 * chunk goes through sendv as up to 4 pieces with up to 12 random record cuts, as the session sends.
 */
function pumpOut(pipe: Pipe, data: Uint8Array, rand: () => number, maxChunk: number, onDrain: Set<() => void>, vector = false): void {
  let at = 0;
  const go = () => {
    while (at < data.byteLength && pipe.writable) {
      const n = Math.min(data.byteLength - at, randInt(rand, 1, maxChunk));
      const chunk = data.subarray(at, at + n);
      let ok: boolean;
      if (vector) {
        const points = [...new Set(Array.from({ length: randInt(rand, 0, 12) }, () => randInt(rand, 1, n)))].sort((x, y) => x - y);
        const pieceEnds = [...new Set(Array.from({ length: randInt(rand, 0, 3) }, () => randInt(rand, 1, n)))].sort((x, y) => x - y);
        const pieces: Uint8Array[] = [];
        let from = 0;
        for (const end of [...pieceEnds, n]) {
          pieces.push(chunk.subarray(from, end));
          from = end;
        }
        ok = pipe.sendv!(pieces, n, points);
      } else {
        ok = pipe.send(chunk);
      }
      at += n;
      if (!ok) return;
    }
    if (at >= data.byteLength && pipe.writable) pipe.shutdown();
  };
  onDrain.add(go);
  go();
}

class SocketRecorder extends Recorder {
  wake = new Set<() => void>();
  drainers = new Set<() => void>();
  hasher = new Bun.CryptoHasher("sha256");
  count = 0;
  override data(chunk: Uint8Array): void {
    this.hasher.update(chunk);
    this.count += chunk.byteLength;
    for (const w of this.wake) w();
  }
  override drain(): void {
    super.drain();
    for (const d of this.drainers) d();
  }
  override end(): void {
    super.end();
    for (const w of this.wake) w();
  }
  override close(err?: StriperError): void {
    super.close(err);
    for (const w of this.wake) w();
  }
}

/**
 * `up` and `down` sent at once over one sealed loopback connection, in chunks of up to `maxChunk` bytes
 * (`cuts`: sendv with record cuts); both arrive exact by hash, both ends close clean, and the sender was
 * congested at least once (the pooled-buffer lending path ran).
 */
async function duplexExact(rand: () => number, up: Uint8Array, down: Uint8Array, maxChunk: number, cuts: boolean): Promise<void> {
  const rs = new SocketRecorder();
  const l = sealedServer((p) => {
    p.setHandler(rs);
    pumpOut(p, down, rand, maxChunk, rs.drainers, cuts);
  });
  const tcp = connectTcp({ host: HOST, port: l.port });
  cleanup.push(() => tcp.close());
  const rc = new SocketRecorder();
  let client!: SealedPipe;
  tcp.setHandler({
    ready() {
      client = clientSide(tcp).pipe;
      client.setHandler(rc);
      pumpOut(client, up, rand, maxChunk, rc.drainers, cuts);
    },
    data() {},
    drain() {},
    end() {},
    close() {},
  });
  await until(() => rc.closed && rs.closed, () => `both sides closed (client ${rc.count} bytes, closed ${rc.closed}; server ${rs.count}, closed ${rs.closed})`, 60_000, rc.wake);
  expect(rc.closeErr).toBeUndefined();
  expect(rs.closeErr).toBeUndefined();
  expect(rs.count).toBe(up.byteLength);
  expect(rc.count).toBe(down.byteLength);
  expect(rs.hasher.digest("hex")).toBe(sha256(up));
  expect(rc.hasher.digest("hex")).toBe(sha256(down));
  expect(client.stats.congestions).toBeGreaterThan(0); // the pooled-buffer lending path ran
}

describe("SealedPipe over loopback TCP", () => {
  test("24 MiB each way with 0-RTT, chunks up to 1.5 MiB (split into records), exact by hash, clean close", async () => {
    await duplexExact(prng(SEED), randomData(24 << 20, SEED | 1), randomData(24 << 20, (SEED + 7) | 1), 1_500_000, false);
  }, 90_000);

  test("sendv with record cuts (several records in one pooled buffer per call), 16 MiB each way, exact by hash", async () => {
    // Both ends send at once from one process: a pooled buffer the carrier still holds (lent until its
    // drain) would be handed to the other end's next batch if it went back to the pool too early.
    await duplexExact(prng(SEED + 11), randomData(16 << 20, (SEED + 3) | 1), randomData(16 << 20, (SEED + 5) | 1), 600_000, true);
  }, 90_000);

  test("a bit flipped in flight by a forwarder: the receiver closes with E_RECORD_AUTH and never delivers it", async () => {
    const rs = new SocketRecorder();
    const l = sealedServer((p) => p.setHandler(rs));
    // Forwarder client → server that flips one bit at stream position `flipAt` (inside the 3rd record).
    const helloSize = 48 + 36 + 56;
    const flipAt = helloSize + 2 * recordSize(10_000) + 5000;
    let seen = 0;
    type Fw = { peer?: Socket<Fw>; pending: Uint8Array[] };
    const fwd = Bun.listen<Fw>({
      hostname: HOST,
      port: 0,
      socket: {
        open(s) {
          s.data = { pending: [] };
          void Bun.connect<Fw>({
            hostname: HOST,
            port: l.port,
            socket: {
              open(up) {
                up.data = { peer: s, pending: [] };
                s.data.peer = up;
                for (const c of s.data.pending) up.write(c);
              },
              data(up, chunk) {
                up.data.peer?.write(chunk);
              },
              close(up, err) {
                // Pass a reset on as a reset (a plain end() would turn it into a clean FIN).
                if (err) up.data.peer?.terminate();
                else up.data.peer?.end();
              },
              error() {},
            },
          });
        },
        data(s, chunk) {
          const c = new Uint8Array(chunk);
          if (flipAt >= seen && flipAt < seen + c.byteLength) c[flipAt - seen]! ^= 0x20;
          seen += c.byteLength;
          if (s.data.peer) s.data.peer.write(c);
          else s.data.pending.push(c);
        },
        close(s) {
          s.data.peer?.end();
        },
        error() {},
      },
    });
    cleanup.push(() => fwd.stop(true));
    const tcp = connectTcp({ host: HOST, port: fwd.port });
    cleanup.push(() => tcp.close());
    const rc = new SocketRecorder();
    tcp.setHandler({
      ready() {
        const { pipe } = clientSide(tcp);
        pipe.setHandler(rc);
        for (let i = 0; i < 4; i++) pipe.send(randomData(10_000, i + 1));
      },
      data() {},
      drain() {},
      end() {},
      close() {},
    });
    await until(() => rs.closed, "the server pipe closed on the damaged record", 10_000, rs.wake);
    expectRecordError(rs.closeErr, "E_RECORD_AUTH");
    expect(rs.count).toBe(20_000); // records 1 and 2 only
    await until(() => rc.closed, "the client saw the connection reset", 10_000, rc.wake);
    expect(rc.closeErr?.code).toBe("ECONNRESET");
    expect(rc.ended).toBe(false); // never a clean EOF
  }, 30_000);
});
