/**
 * DatagramPipe and its pure codec. The decoder alone is fed input split at every byte and at seeded
 * random points; the pipe runs over real loopback TCP (port 0), once through an in-test forwarder that
 * re-slices the byte stream into random small writes. Seeds are printed when a seeded test fails.
 */

import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { MessageTooLargeError, ProtocolError, StriperError } from "../src/errors.ts";
import {
  COALESCE_BELOW,
  DEFAULT_MAX_MESSAGE,
  DatagramPipe,
  LENGTH_PREFIX_SIZE,
  MessageDecoder,
  encodeLength,
  encodeMessage,
  type DatagramOptions,
} from "../src/pipe/datagram.ts";
import { newStats, type Pipe, type PipeHandler, type PipeState } from "../src/pipe/pipe.ts";
import { connectTcp, listenTcp } from "../src/pipe/tcp.ts";
import { cleanups, prng, until } from "./helpers/util.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const HOST = "127.0.0.1";
/** Every wait's watchdog: only a hang should reach it (the waits take milliseconds, seconds on a loaded machine). */
const WATCHDOG_MS = 60_000;
/** Per-test limit for tests with several waits in a row (bun's default is 5 s without --timeout). */
const TEST_TIMEOUT_MS = 180_000;

const cleanup = cleanups();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `fn` with a fresh seed (or TEST_SEED) and names the seed if it fails. */
async function withSeed(fn: (rand: () => number, seed: number) => unknown): Promise<void> {
  const seed = Number(process.env.TEST_SEED ?? (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0);
  try {
    await fn(prng(seed), seed);
  } catch (err) {
    console.error(`failed with seed ${seed} (rerun with TEST_SEED=${seed})`);
    throw err;
  }
}

function randomBytes(n: number, rand: () => number): Uint8Array {
  const b = new Uint8Array(n);
  const words = new Uint32Array(b.buffer, 0, n >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = (rand() * 0x1_0000_0000) >>> 0;
  for (let i = words.length * 4; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
const concat = (parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));

/** Sizes for "random sizes up to the maximum": log-uniform, plus 0, 1, max and max − 1 now and then. */
function randomSize(max: number, rand: () => number): number {
  const r = rand();
  if (r < 0.04) return 0;
  if (r < 0.08) return max;
  if (r < 0.1) return max - 1;
  if (r < 0.12) return 1;
  return Math.min(max, Math.floor(Math.exp(rand() * Math.log(max + 1))));
}

// --- pure codec ---------------------------------------------------------------------------------------

describe("encodeMessage / MessageDecoder", () => {
  test("pins the wire format: u32 big-endian length, then the bytes", () => {
    expect(LENGTH_PREFIX_SIZE).toBe(4);
    expect(DEFAULT_MAX_MESSAGE).toBe(1 * MiB);
    expect([...encodeMessage(new Uint8Array([7, 8, 9]))]).toEqual([0, 0, 0, 3, 7, 8, 9]);
    expect([...encodeMessage(new Uint8Array(0))]).toEqual([0, 0, 0, 0]);
    expect([...encodeMessage(new Uint8Array(300)).subarray(0, 4)]).toEqual([0, 0, 1, 44]);
    expect([...encodeLength(0x81020304)]).toEqual([0x81, 2, 3, 4]);
  });

  test("keeps a large payload's copy at its source's offset modulo 64 (the fast memcpy case)", () => {
    const source = new Uint8Array(64 * KiB).map((_, i) => i & 0xff);
    for (const offset of [0, 1, 4, 60, 63, 4092]) {
      const msg = source.subarray(offset, offset + 8 * KiB);
      const wire = encodeMessage(msg);
      expect((wire.byteOffset + LENGTH_PREFIX_SIZE) % 64).toBe(offset % 64);
      expect(wire.byteLength).toBe(LENGTH_PREFIX_SIZE + msg.byteLength);
      expect(same(wire.subarray(LENGTH_PREFIX_SIZE), msg)).toBe(true);
    }
  });

  test("decodes input split at every byte and at every single split point", () => {
    const sizes = [3, 123, 4, 0, 1, 0, 5, 300, 2];
    const msgs = sizes.map((n, i) => new Uint8Array(n).map((_, j) => (i * 31 + j) & 0xff));
    const stream = concat(msgs.map(encodeMessage));
    const check = (chunks: Uint8Array[], what: string) => {
      const got: Uint8Array[] = [];
      const d = new MessageDecoder((m) => void got.push(m));
      for (const c of chunks) expect(d.push(c)).toBe(c.byteLength);
      expect(got.map((m) => m.byteLength), what).toEqual(sizes);
      for (let i = 0; i < msgs.length; i++) expect(same(got[i]!, msgs[i]!), `${what}: message ${i}`).toBe(true);
      expect(d.atBoundary, what).toBe(true);
    };
    check([stream], "one chunk");
    check([...stream].map((b) => new Uint8Array([b])), "one byte per chunk");
    for (let i = 0; i <= stream.byteLength; i++) check([stream.slice(0, i), stream.slice(i)], `split at ${i}`);
  });

  test("delivers messages identical across seeded random splits, zero-copy inside a chunk, one copy across", () =>
    withSeed((rand) => {
      for (let round = 0; round < 100; round++) {
        const max = 1 + Math.floor(rand() * 70 * KiB);
        const msgs = Array.from({ length: 1 + Math.floor(rand() * 40) }, () => randomBytes(randomSize(max, rand), rand));
        const stream = concat(msgs.map(encodeMessage));
        // Each chunk is its own buffer (slice copies), so zero-copy shows as msg.buffer === chunk.buffer.
        const chunks: Uint8Array[] = [];
        const starts: number[] = [];
        for (let pos = 0; pos < stream.byteLength; ) {
          const n = Math.min(stream.byteLength - pos, 1 + Math.floor(rand() * (rand() < 0.5 ? 16 : 100 * KiB)));
          starts.push(pos);
          chunks.push(stream.slice(pos, pos + n));
          pos += n;
        }
        const got: Uint8Array[] = [];
        const d = new MessageDecoder((m) => void got.push(m), max);
        for (const c of chunks) d.push(c);
        expect(got.length).toBe(msgs.length);
        let at = 0;
        for (let i = 0; i < msgs.length; i++) {
          const m = got[i]!;
          expect(same(m, msgs[i]!)).toBe(true);
          const bodyStart = at + LENGTH_PREFIX_SIZE;
          const bodyEnd = bodyStart + msgs[i]!.byteLength;
          at = bodyEnd;
          if (m.byteLength === 0) continue;
          let c = starts.length - 1;
          while (starts[c]! > bodyStart) c--;
          const inOne = bodyEnd <= starts[c]! + chunks[c]!.byteLength;
          if (inOne) {
            expect(m.buffer).toBe(chunks[c]!.buffer);
            expect(m.byteOffset).toBe(bodyStart - starts[c]!);
          } else {
            // Assembled: one buffer of its own (plus under 64 bytes of alignment), shared with no chunk.
            expect(m.buffer.byteLength - m.byteLength).toBeLessThan(64);
            expect(chunks.some((ch) => ch.buffer === m.buffer)).toBe(false);
          }
        }
        expect(d.atBoundary).toBe(true);
      }
    }));

  test("throws MessageTooLargeError on the 4th prefix byte of an oversize length, before any body", () => {
    for (const announced of [1001, 0xffffffff, 0x80000000]) {
      const d = new MessageDecoder(() => {
        throw new Error("no message may be delivered");
      }, 1000);
      const prefix = encodeLength(announced);
      d.push(prefix.slice(0, 3));
      let err: unknown;
      try {
        d.push(prefix.slice(3));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MessageTooLargeError);
      expect((err as StriperError).code).toBe("E_MSG_TOO_LARGE");
      expect((err as Error).message).toContain(String(announced));
    }
    const got: Uint8Array[] = [];
    new MessageDecoder((m) => void got.push(m), 1000).push(encodeMessage(new Uint8Array(1000)));
    expect(got.map((m) => m.byteLength)).toEqual([1000]);
  });

  test("stops after a message when the sink returns false and resumes with the rest of the chunk", () => {
    const stream = concat([1, 2, 3].map((n) => encodeMessage(new Uint8Array(n).fill(n))));
    const got: number[] = [];
    const d = new MessageDecoder((m) => {
      got.push(m.byteLength);
      return false;
    });
    let pos = 0;
    const used: number[] = [];
    while (pos < stream.byteLength) {
      const n = d.push(stream.subarray(pos));
      used.push(n);
      pos += n;
    }
    expect(got).toEqual([1, 2, 3]);
    expect(used).toEqual([5, 6, 7]);
  });

  test("reports a partial message: not at a boundary inside a prefix or a body", () => {
    const d = new MessageDecoder(() => {});
    const m = encodeMessage(new Uint8Array(10));
    d.push(m.subarray(0, 2));
    expect(d.atBoundary).toBe(false);
    d.push(m.subarray(2, 9));
    expect(d.atBoundary).toBe(false);
    expect(d.partialBytes).toBe(9);
    d.push(m.subarray(9));
    expect(d.atBoundary).toBe(true);
  });
});

// --- pipe helpers -----------------------------------------------------------------------------------------

/** Records what a DatagramPipe delivers; `until` waits with a watchdog naming what did not happen. */
class Inbox implements PipeHandler {
  messages: Uint8Array[] = [];
  bytes = 0;
  ended = false;
  closed = false;
  closeErr: StriperError | undefined;
  drains = 0;
  /** Events in order, for checking that end and close come after all data. */
  events: string[] = [];
  onMessage?: (m: Uint8Array) => void;
  private waiters = new Set<() => void>();

  data(m: Uint8Array): void {
    this.messages.push(m);
    this.bytes += m.byteLength;
    this.events.push("data");
    this.onMessage?.(m);
    this.notify();
  }
  drain(): void {
    this.drains++;
    this.notify();
  }
  end(): void {
    this.ended = true;
    this.events.push("end");
    this.notify();
  }
  close(err?: StriperError): void {
    this.closed = true;
    this.closeErr = err;
    this.events.push(err ? `close ${err.code}` : "close");
    this.notify();
  }

  until(cond: () => boolean, what: string, ms: number): Promise<void> {
    return until(cond, () => `${what} (${this.messages.length} messages, events ${this.events.slice(-3)})`, ms, this.waiters);
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }
}

interface Server {
  port: number;
  pipes: DatagramPipe[];
  inboxes: Inbox[];
}

/** A listener whose accepted connections become DatagramPipes, each with its own Inbox. */
function datagramServer(opts: DatagramOptions = {}): Server {
  const server: Server = { port: 0, pipes: [], inboxes: [] };
  const listener = listenTcp({ host: HOST, port: 0 }, (tcp) => {
    const pipe = new DatagramPipe(tcp, opts);
    const inbox = new Inbox();
    pipe.setHandler(inbox);
    server.pipes.push(pipe);
    server.inboxes.push(inbox);
  });
  server.port = listener.port;
  cleanup.push(() => {
    listener.stop();
    for (const p of server.pipes) p.close();
  });
  return server;
}

/** Connects a DatagramPipe to `port`; resolves once it is open. */
async function datagramClient(port: number, opts: DatagramOptions = {}): Promise<{ pipe: DatagramPipe; inbox: Inbox }> {
  const inbox = new Inbox();
  const pipe = new DatagramPipe(connectTcp({ host: HOST, port }), opts);
  let opened = false;
  pipe.setHandler(
    Object.assign(inbox, {
      ready: () => {
        opened = true;
      },
    }),
  );
  cleanup.push(() => pipe.close());
  await inbox.until(() => opened || inbox.closed, "the client connected", WATCHDOG_MS);
  expect(pipe.state).toBe("open");
  return { pipe, inbox };
}

/** Sends every message, waiting for drain when the pipe is congested. */
async function sendAll(pipe: DatagramPipe, inbox: Inbox, msgs: Uint8Array[], ms = WATCHDOG_MS): Promise<void> {
  for (let i = 0; i < msgs.length; i++) {
    const drainsBefore = inbox.drains;
    if (!pipe.send(msgs[i]!)) await inbox.until(() => inbox.drains > drainsBefore || inbox.closed, `drain after message ${i}`, ms);
  }
}

/** A raw Bun client, for writing bytes a DatagramPipe would never send. */
async function rawClient(port: number) {
  const st = { closed: false, err: undefined as Error | undefined, sawEnd: false };
  const sock: Socket<typeof st> = await Bun.connect({
    hostname: HOST,
    port,
    allowHalfOpen: true,
    data: st,
    socket: {
      data() {},
      end() {
        st.sawEnd = true;
      },
      close(_s, err) {
        st.closed = true;
        st.err = err;
      },
      error(_s, err) {
        st.err = err;
      },
    },
  });
  cleanup.push(() => {
    if (!st.closed) sock.terminate();
  });
  return { sock, st };
}

/**
 * A TCP forwarder that re-slices the client → server byte stream into random writes of 1..maxSlice
 * bytes, yielding to the event loop between many of them so the receiver reads at random boundaries.
 * The other direction, FIN and RST are passed through.
 */
function startSlicer(targetPort: number, rand: () => number, maxSlice: number) {
  const stats = { writes: 0, bytes: 0 };
  const links = new Set<Link>();
  const HIGH = 256 * KiB;

  class Link {
    down!: Socket<Link>;
    up: Socket<Link> | undefined;
    toUp: Uint8Array[] = [];
    toUpBytes = 0;
    toDown: Uint8Array[] = [];
    downPaused = false;
    downEnded = false;
    upShut = false;
    upEnded = false;
    pumping = false;
    waitingDrain = false;
    dead = false;

    async pumpUp(): Promise<void> {
      if (this.pumping || this.waitingDrain || !this.up) return;
      this.pumping = true;
      while (this.toUp.length > 0 && !this.dead) {
        const head = this.toUp[0]!;
        const n = Math.min(head.byteLength, 1 + Math.floor(rand() * maxSlice));
        const w = this.up.write(head.subarray(0, n));
        if (w < 0) {
          this.kill();
          break;
        }
        if (w > 0) stats.writes++;
        stats.bytes += w;
        this.toUpBytes -= w;
        if (w === head.byteLength) this.toUp.shift();
        else this.toUp[0] = head.subarray(w);
        if (this.downPaused && this.toUpBytes < HIGH / 2) {
          this.downPaused = false;
          this.down.resume();
        }
        if (w < n) {
          this.waitingDrain = true; // the up socket's drain calls pumpUp again
          break;
        }
        if (rand() < 0.7) await new Promise((r) => setImmediate(r));
      }
      this.pumping = false;
      if (this.toUp.length === 0 && this.downEnded && !this.upShut && this.up && !this.dead) {
        this.upShut = true;
        this.up.shutdown();
      }
    }

    flushDown(): void {
      while (this.toDown.length > 0 && !this.dead) {
        const head = this.toDown[0]!;
        const w = this.down.write(head);
        if (w < 0) return this.kill();
        if (w < head.byteLength) {
          this.toDown[0] = head.subarray(w);
          return;
        }
        this.toDown.shift();
      }
      if (this.upEnded && this.toDown.length === 0) this.down.shutdown();
    }

    kill(): void {
      if (this.dead) return;
      this.dead = true;
      this.down.terminate();
      this.up?.terminate();
    }
  }

  const listener = Bun.listen<Link>({
    hostname: HOST,
    port: 0,
    allowHalfOpen: true,
    socket: {
      open(s) {
        const link = new Link();
        link.down = s;
        s.data = link;
        links.add(link);
        Bun.connect<Link>({
          hostname: HOST,
          port: targetPort,
          allowHalfOpen: true,
          data: link,
          socket: {
            open(u) {
              link.up = u;
              void link.pumpUp();
            },
            data(_u, chunk) {
              link.toDown.push(chunk);
              link.flushDown();
            },
            drain() {
              link.waitingDrain = false;
              void link.pumpUp();
            },
            end() {
              link.upEnded = true;
              link.flushDown();
            },
            close(_u, err) {
              if (err) return link.kill();
              // After our own shutdown() Bun reports the peer's FIN as a plain close with no `end`.
              if (!link.upEnded) {
                link.upEnded = true;
                link.flushDown();
              }
            },
            error() {},
          },
        }).catch(() => link.kill());
      },
      data(s, chunk) {
        const link = s.data;
        link.toUp.push(chunk);
        link.toUpBytes += chunk.byteLength;
        if (link.toUpBytes > HIGH && !link.downPaused) {
          link.downPaused = true;
          s.pause();
        }
        void link.pumpUp();
      },
      drain(s) {
        s.data.flushDown();
      },
      end(s) {
        s.data.downEnded = true;
        void s.data.pumpUp();
      },
      close(s, err) {
        if (err) return s.data.kill();
        if (!s.data.downEnded) {
          s.data.downEnded = true;
          void s.data.pumpUp();
        }
      },
      error() {},
    },
  });
  cleanup.push(() => {
    listener.stop(true);
    for (const l of links) l.kill();
  });
  return { port: listener.port, stats };
}

// --- over a scripted carrier ----------------------------------------------------------------------------

/**
 * An in-memory carrier the test drives by hand. It records what is sent and, unlike TcpPipe, does not
 * stop at pause(): it models a carrier that delivers one more chunk (or its FIN) after being paused.
 */
class ScriptedCarrier implements Pipe {
  state: PipeState = "open";
  readable = true;
  writable = true;
  error: StriperError | undefined;
  readonly stats = newStats();
  sent: Uint8Array[] = [];
  congested = false;
  paused = false;
  closedWith: StriperError | undefined | "not closed" = "not closed";
  handler!: PipeHandler;
  setHandler(h: PipeHandler): void {
    this.handler = h;
  }
  send(chunk: Uint8Array): boolean {
    this.sent.push(chunk);
    return !this.congested;
  }
  shutdown(): void {
    this.writable = false;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  close(err?: StriperError): void {
    this.closedWith = err;
    this.state = "closed";
  }
}

function scripted(opts: DatagramOptions = {}) {
  const carrier = new ScriptedCarrier();
  const pipe = new DatagramPipe(carrier, opts);
  const inbox = new Inbox();
  pipe.setHandler(inbox);
  return { carrier, pipe, inbox };
}

describe("DatagramPipe over a scripted carrier", () => {
  test("coalesces small messages into one carrier send and sends large ones as prefix + the caller's buffer", () => {
    const { carrier, pipe } = scripted();
    const small = new Uint8Array(COALESCE_BELOW - 1).fill(1);
    const large = new Uint8Array(COALESCE_BELOW).fill(2);
    expect(pipe.send(small)).toBe(true);
    expect(pipe.send(large)).toBe(true);
    expect(carrier.sent.length).toBe(3);
    expect(same(carrier.sent[0]!, encodeMessage(small))).toBe(true);
    expect([...carrier.sent[1]!]).toEqual([...encodeLength(COALESCE_BELOW)]);
    expect(carrier.sent[2]).toBe(large); // not copied
    carrier.congested = true;
    expect(pipe.send(new Uint8Array(1))).toBe(false);
    expect(pipe.send(large)).toBe(false);
    expect(pipe.stats).toEqual({ bytesIn: 0, bytesOut: 2 * COALESCE_BELOW - 1 + 1 + COALESCE_BELOW, congestions: 2 });
  });

  test("holds chunks and the FIN that a carrier delivers after pause, then delivers them in order on resume", async () => {
    const { carrier, pipe, inbox } = scripted();
    inbox.onMessage = (m) => {
      if (m[0] === 1) pipe.pause();
    };
    const msgs = [1, 2, 3, 4].map((v) => encodeMessage(new Uint8Array([v])));
    carrier.handler.data(concat([msgs[0]!, msgs[1]!]));
    expect(carrier.paused).toBe(true);
    carrier.handler.data(msgs[2]!); // the carrier ignores pause
    carrier.handler.data(msgs[3]!);
    carrier.handler.end();
    carrier.handler.close(undefined); // both directions done on the carrier, cleanly
    expect(inbox.events).toEqual(["data"]);
    expect(pipe.readable).toBe(true);
    expect(pipe.state).toBe("open");
    pipe.resume();
    await inbox.until(() => inbox.closed, "held messages, FIN and close were delivered after resume", WATCHDOG_MS);
    expect(inbox.messages.map((m) => m[0])).toEqual([1, 2, 3, 4]);
    expect(inbox.events).toEqual(["data", "data", "data", "data", "end", "close"]);
    expect(inbox.closeErr).toBeUndefined();
  });

  test("closes itself and its carrier with E_HANDLER when the message handler throws", () => {
    const { carrier, pipe, inbox } = scripted();
    inbox.onMessage = () => {
      throw new Error("handler bug");
    };
    carrier.handler.data(concat([encodeMessage(new Uint8Array(1)), encodeMessage(new Uint8Array(2))]));
    expect(inbox.messages.length).toBe(1);
    expect(inbox.closeErr?.code).toBe("E_HANDLER");
    expect(pipe.state).toBe("closed");
    expect((carrier.closedWith as StriperError).code).toBe("E_HANDLER");
  });

  test("reports E_TRUNCATED when the carrier's FIN lands inside a message", () => {
    const { carrier, inbox } = scripted();
    carrier.handler.data(encodeMessage(new Uint8Array(10)).subarray(0, 7));
    carrier.handler.end();
    expect(inbox.ended).toBe(false);
    expect(inbox.closeErr).toBeInstanceOf(ProtocolError);
    expect(inbox.closeErr?.code).toBe("E_TRUNCATED");
    expect((carrier.closedWith as StriperError).code).toBe("E_TRUNCATED");
  });
});

// --- over TCP ---------------------------------------------------------------------------------------

describe("DatagramPipe over TCP", () => {
  test("delivers 3, 123 and 4 bytes as exactly three messages, then a clean FIN", async () => {
    const server = datagramServer();
    const { pipe: client, inbox: clientInbox } = await datagramClient(server.port);
    const msgs = [3, 123, 4].map((n, i) => new Uint8Array(n).fill(0x41 + i));
    // Sent in one tick: the receiver typically reads all 142 wire bytes as one chunk.
    for (const m of msgs) client.send(m);
    expect(client.stats.bytesOut).toBe(130);
    const inbox = await waitFor(() => server.inboxes[0], "the server accepted");
    await inbox.until(() => inbox.messages.length >= 3, "three messages arrived", WATCHDOG_MS);
    client.shutdown();
    expect(client.writable).toBe(false);
    expect(() => client.send(new Uint8Array(1))).toThrow(StriperError);
    await inbox.until(() => inbox.ended, "the server saw the client's FIN", WATCHDOG_MS);
    expect(inbox.messages.map((m) => m.byteLength)).toEqual([3, 123, 4]);
    for (let i = 0; i < 3; i++) expect(same(inbox.messages[i]!, msgs[i]!)).toBe(true);
    expect(server.pipes[0]!.stats.bytesIn).toBe(130);
    expect(server.pipes[0]!.readable).toBe(false);
    // The other direction still works after the half-close; then both close cleanly.
    server.pipes[0]!.send(new Uint8Array([1, 2]));
    server.pipes[0]!.shutdown();
    await clientInbox.until(() => clientInbox.closed, "the client closed after the server's FIN", WATCHDOG_MS);
    await inbox.until(() => inbox.closed, "the server closed", WATCHDOG_MS);
    expect(clientInbox.events).toEqual(["data", "end", "close"]);
    expect(inbox.events).toEqual(["data", "data", "data", "end", "close"]);
    expect(inbox.closeErr).toBeUndefined();
    expect(clientInbox.closeErr).toBeUndefined();
  });

  test("delivers and accepts empty messages", async () => {
    const server = datagramServer();
    const { pipe: client } = await datagramClient(server.port);
    const sizes = [0, 5, 0, 0, 1, 0];
    for (const n of sizes) client.send(new Uint8Array(n).fill(9));
    client.shutdown();
    const inbox = await waitFor(() => server.inboxes[0], "the server accepted");
    await inbox.until(() => inbox.ended, "the server saw the FIN", WATCHDOG_MS);
    expect(inbox.messages.map((m) => m.byteLength)).toEqual(sizes);
  });

  test("delivers 500 messages of random sizes up to the maximum intact through a stream re-sliced at random points", () =>
    withSeed(async (rand) => {
      const max = 256 * KiB;
      const server = datagramServer({ maxMessage: max });
      const slicer = startSlicer(server.port, rand, 3000);
      const { pipe: client, inbox: clientInbox } = await datagramClient(slicer.port, { maxMessage: max });
      const pool = randomBytes(2 * max, rand);
      const msgs: Uint8Array[] = [];
      for (let i = 0; i < 500; i++) {
        const size = randomSize(max, rand);
        const off = Math.floor(rand() * (pool.byteLength - size));
        const m = pool.slice(off, off + size);
        if (size >= 4) new DataView(m.buffer).setUint32(0, i); // a reorder or duplicate cannot go unseen
        msgs.push(m);
      }
      const total = msgs.reduce((a, m) => a + m.byteLength, 0);
      expect(msgs.some((m) => m.byteLength === max)).toBe(true);
      await sendAll(client, clientInbox, msgs);
      client.shutdown();
      const inbox = await waitFor(() => server.inboxes[0], "the server accepted");
      await inbox.until(() => inbox.ended || inbox.closed, `500 messages (${total} B) arrived through the slicer`, WATCHDOG_MS);
      expect(inbox.closeErr).toBeUndefined();
      expect(inbox.messages.length).toBe(500);
      for (let i = 0; i < 500; i++) {
        if (!same(inbox.messages[i]!, msgs[i]!)) throw new Error(`message ${i} (${msgs[i]!.byteLength} B) differs`);
      }
      expect(server.pipes[0]!.stats.bytesIn).toBe(total);
      // The stream really was re-sliced: far more writes than messages, all bytes forwarded.
      expect(slicer.stats.bytes).toBe(total + 500 * LENGTH_PREFIX_SIZE);
      expect(slicer.stats.writes).toBeGreaterThan(2000);
      server.pipes[0]!.shutdown();
      await clientInbox.until(() => clientInbox.closed, "the client closed cleanly", WATCHDOG_MS);
      expect(clientInbox.closeErr).toBeUndefined();
    }), TEST_TIMEOUT_MS);

  test("refuses to send a message above the maximum with MessageTooLargeError, and stays usable", async () => {
    const server = datagramServer({ maxMessage: 1000 });
    const { pipe: small } = await datagramClient(server.port, { maxMessage: 1000 });
    expect(() => small.send(new Uint8Array(1001))).toThrow(MessageTooLargeError);
    try {
      small.send(new Uint8Array(1001));
    } catch (err) {
      expect((err as StriperError).code).toBe("E_MSG_TOO_LARGE");
    }
    expect(small.stats.bytesOut).toBe(0);
    small.send(new Uint8Array(1000).fill(3));
    const inbox = await waitFor(() => server.inboxes[0], "the server accepted");
    await inbox.until(() => inbox.messages.length === 1, "the 1000-byte message arrived", WATCHDOG_MS);

    // Default maximum (1 MiB): exactly 1 MiB goes (the uncopied two-send path), one byte more does not.
    const big = datagramServer();
    const { pipe: client } = await datagramClient(big.port);
    expect(() => client.send(new Uint8Array(DEFAULT_MAX_MESSAGE + 1))).toThrow(MessageTooLargeError);
    const m = randomBytes(DEFAULT_MAX_MESSAGE, prng(7));
    client.send(m);
    client.shutdown();
    const bigInbox = await waitFor(() => big.inboxes[0], "the server accepted");
    await bigInbox.until(() => bigInbox.ended, "the 1 MiB message and FIN arrived", WATCHDOG_MS);
    expect(bigInbox.messages.length).toBe(1);
    expect(same(bigInbox.messages[0]!, m)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("closes with E_MSG_TOO_LARGE when a peer announces an oversize length, resets the peer, and keeps serving", async () => {
    const server = datagramServer({ maxMessage: 64 * KiB });
    for (const announced of [64 * KiB + 1, 0xffffffff]) {
      const before = server.inboxes.length;
      const { sock, st } = await rawClient(server.port);
      // A valid message first, then the hostile prefix and a few body bytes.
      sock.write(concat([encodeMessage(new Uint8Array([1, 2, 3])), encodeLength(announced), new Uint8Array(100)]));
      const inbox = await waitFor(() => server.inboxes[before], "the server accepted");
      await inbox.until(() => inbox.closed, `the pipe closed after announcing ${announced}`, WATCHDOG_MS);
      expect(inbox.closeErr).toBeInstanceOf(MessageTooLargeError);
      expect(inbox.closeErr?.code).toBe("E_MSG_TOO_LARGE");
      expect(inbox.messages.map((m) => m.byteLength)).toEqual([3]);
      expect(inbox.ended).toBe(false);
      // The peer sees an abnormal end, not a clean EOF.
      await waitFor(() => st.closed || undefined, `the raw client saw its connection end (announced ${announced})`);
      expect(st.sawEnd).toBe(false);
      expect((st.err as { code?: string } | undefined)?.code).toBe("ECONNRESET");
    }
    // Same listener, same process: a normal client still gets through.
    const { pipe } = await datagramClient(server.port, { maxMessage: 64 * KiB });
    pipe.send(new Uint8Array([42]));
    const inbox = await waitFor(() => server.inboxes[2], "the server accepted a third connection");
    await inbox.until(() => inbox.messages.length === 1, "a message arrived after the hostile peers", WATCHDOG_MS);
    expect(inbox.messages[0]![0]).toBe(42);
  }, TEST_TIMEOUT_MS);

  test("closes with E_TRUNCATED when the FIN comes inside a message or its prefix", async () => {
    const server = datagramServer();
    const cases = [
      concat([encodeMessage(new Uint8Array([5])), encodeLength(10), new Uint8Array(5)]), // inside the body
      concat([encodeMessage(new Uint8Array([5])), encodeLength(10).subarray(0, 2)]), // inside the prefix
    ];
    for (let i = 0; i < cases.length; i++) {
      const { sock, st } = await rawClient(server.port);
      sock.write(cases[i]!);
      sock.shutdown();
      const inbox = await waitFor(() => server.inboxes[i], "the server accepted");
      await inbox.until(() => inbox.closed, `the pipe closed after a truncated message (case ${i})`, WATCHDOG_MS);
      expect(inbox.closeErr).toBeInstanceOf(ProtocolError);
      expect(inbox.closeErr?.code).toBe("E_TRUNCATED");
      expect(inbox.ended).toBe(false);
      expect(inbox.messages.map((m) => m.byteLength)).toEqual([1]);
      await waitFor(() => st.closed || undefined, "the raw client saw its connection end");
      expect(st.err).toBeDefined();
    }
  }, TEST_TIMEOUT_MS);

  test("pause stops messages in the middle of a received chunk and holds the FIN until resume", async () => {
    const server = datagramServer();
    const { sock } = await rawClient(server.port);
    const count = 50;
    // One write: all 50 messages typically arrive as one carrier chunk.
    sock.write(concat(Array.from({ length: count }, (_, i) => encodeMessage(new Uint8Array(10).fill(i)))));
    sock.shutdown();
    const inbox = await waitFor(() => server.inboxes[0], "the server accepted");
    const pipe = server.pipes[0]!;
    inbox.onMessage = () => {
      if (inbox.messages.length === 1) pipe.pause();
    };
    await inbox.until(() => inbox.messages.length >= 1, "the first message arrived", WATCHDOG_MS);
    await sleep(100);
    expect(inbox.messages.length).toBe(1);
    expect(inbox.ended).toBe(false);
    pipe.resume();
    await inbox.until(() => inbox.ended, "the other 49 messages and the FIN arrived after resume", WATCHDOG_MS);
    expect(inbox.messages.map((m) => m[0])).toEqual(Array.from({ length: count }, (_, i) => i));
    expect(inbox.events.at(-1)).toBe("end");
  }, TEST_TIMEOUT_MS);

  test("send returns false when the receiver stops reading, and everything arrives after resume", async () => {
    const server = datagramServer();
    const { pipe: client, inbox: clientInbox } = await datagramClient(server.port);
    client.send(new Uint8Array(1));
    const inbox = await waitFor(() => server.inboxes[0], "the server accepted");
    await inbox.until(() => inbox.messages.length === 1, "the first message arrived", WATCHDOG_MS);
    server.pipes[0]!.pause();
    const rand = prng(11);
    const sent: Uint8Array[] = [];
    let congested = false;
    // Loopback socket buffers hold a few MiB: 64 KiB messages fill them long before 1000 (64 MiB).
    for (let i = 0; i < 1000 && !congested; i++) {
      const m = randomBytes(64 * KiB, rand);
      sent.push(m);
      congested = !client.send(m);
    }
    expect(congested).toBe(true);
    expect(client.stats.congestions).toBe(1);
    await sleep(50);
    expect(inbox.messages.length).toBe(1);
    server.pipes[0]!.resume();
    await clientInbox.until(() => clientInbox.drains > 0, "the client drained after the server resumed", WATCHDOG_MS);
    await inbox.until(() => inbox.messages.length === 1 + sent.length, `${sent.length} messages arrived`, WATCHDOG_MS);
    for (let i = 0; i < sent.length; i++) expect(same(inbox.messages[i + 1]!, sent[i]!)).toBe(true);
  }, TEST_TIMEOUT_MS);
});

/** Resolves with `get()` once it is defined (polled every 2 ms), or rejects after `ms` naming `what`. */
async function waitFor<T>(get: () => T | undefined, what: string, ms = WATCHDOG_MS): Promise<T> {
  const deadline = performance.now() + ms;
  for (;;) {
    const v = get();
    if (v !== undefined && v !== false) return v;
    if (performance.now() > deadline) throw new Error(`within ${ms} ms, did not happen: ${what}`);
    await sleep(2);
  }
}
