/**
 * Relay mode and the Bridge over real loopback sockets (port 0): integrity by sha256 for large transfers
 * both ways at once, FIN passed in both directions, a refused target surfacing as an error, and the
 * bridge's counters and backpressure with a slow reader. Every wait has a watchdog naming what did not
 * happen.
 */

import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { Bridge, type BridgeResult } from "../src/pipe/bridge.ts";
import { connectTcp, listenTcp, type TcpPipe } from "../src/pipe/tcp.ts";
import { startRelay, type Relay } from "../src/proxy/relay.ts";
import { appExchange, randomData, sha256, startTarget } from "./helpers/net.ts";
import { cleanups, until } from "./helpers/util.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const HOST = "127.0.0.1";
/** A Bun read delivers at most 512 KiB, so a pipe's queue may exceed its bound by less than this. */
const MAX_READ = 512 * KiB;
/** Every wait's watchdog: only a hang should reach it (the waits take milliseconds, seconds on a loaded machine). */
const WATCHDOG_MS = 60_000;
/** Per-test limit for tests with several waits in a row (bun's default is 5 s without --timeout). */
const TEST_TIMEOUT_MS = 180_000;

const cleanup = cleanups();

function relay(targetPort: number): Relay {
  const r = startRelay({ listen: { host: HOST, port: 0 }, target: { host: HOST, port: targetPort }, log: () => {} });
  cleanup.push(() => r.stop());
  return r;
}

/** One end of a raw Bun connection: sends a buffer with backpressure, hashes what it reads. */
class Peer {
  sock!: Socket<Peer>;
  bytes = 0;
  readonly hasher = new Bun.CryptoHasher("sha256");
  sawEnd = false;
  closed = false;
  err: Error | undefined;
  /** Pause this long after each read (a slow reader). */
  readDelayMs = 0;
  onEnd?: () => void;
  private out: Uint8Array = new Uint8Array(0);
  private sent = 0;
  private shutdownAfter = false;
  private shut = false;
  private digest: string | undefined;

  /** Sends `buf` (in 256 KiB writes, resuming on drain), then FIN when `fin`. */
  send(buf: Uint8Array, fin: boolean): void {
    this.out = buf;
    this.sent = 0;
    this.shutdownAfter = fin;
    this.pump();
  }

  pump(): void {
    if (this.closed) return;
    while (this.sent < this.out.byteLength) {
      const n = this.sock.write(this.out.subarray(this.sent, Math.min(this.out.byteLength, this.sent + 256 * KiB)));
      if (n <= 0) return;
      this.sent += n;
    }
    if (this.shutdownAfter && !this.shut) {
      this.shut = true;
      this.sock.shutdown();
    }
  }

  get allSent(): boolean {
    return this.sent === this.out.byteLength && (!this.shutdownAfter || this.shut);
  }

  sha(): string {
    return (this.digest ??= this.hasher.digest("hex") as string);
  }

  static handlers = {
    open(s: Socket<Peer>) {
      s.data.sock = s;
    },
    data(s: Socket<Peer>, chunk: Uint8Array) {
      const p = s.data;
      p.bytes += chunk.byteLength;
      p.hasher.update(chunk);
      if (p.readDelayMs > 0) {
        s.pause();
        setTimeout(() => {
          if (!p.closed) s.resume();
        }, p.readDelayMs);
      }
    },
    drain(s: Socket<Peer>) {
      s.data.pump();
    },
    end(s: Socket<Peer>) {
      s.data.sawEnd = true;
      s.data.onEnd?.();
    },
    close(s: Socket<Peer>, err?: Error) {
      const p = s.data;
      if (!p) return;
      p.closed = true;
      p.err = err ?? undefined;
      // After our own shutdown() Bun reports the peer's FIN as a plain close with no `end` event.
      if (!err && p.shut && !p.sawEnd) {
        p.sawEnd = true;
        p.onEnd?.();
      }
    },
    error(s: Socket<Peer>, err: Error) {
      if (s.data) s.data.err = err;
    },
  };
}

/** A raw server; `onPeer` sets up each accepted connection. */
function rawServer(onPeer: (p: Peer) => void): { port: number; peers: Peer[] } {
  const peers: Peer[] = [];
  const listener = Bun.listen<Peer>({
    hostname: HOST,
    port: 0,
    allowHalfOpen: true,
    socket: {
      ...Peer.handlers,
      open(s) {
        const p = new Peer();
        p.sock = s;
        s.data = p;
        peers.push(p);
        onPeer(p);
      },
    },
  });
  cleanup.push(() => {
    listener.stop(true);
    for (const p of peers) if (!p.closed) p.sock.terminate();
  });
  return { port: listener.port, peers };
}

async function rawConnect(port: number): Promise<Peer> {
  const p = new Peer();
  await Bun.connect<Peer>({ hostname: HOST, port, allowHalfOpen: true, data: p, socket: Peer.handlers });
  cleanup.push(() => {
    if (!p.closed) p.sock.terminate();
  });
  return p;
}

describe("relay", () => {
  test("carries 32 MiB of independent random data each way at once, sha256 equal, then clean EOF both ways", async () => {
    const size = 32 * MiB;
    const up = randomData(size, 101);
    const down = randomData(size, 202);
    const target = rawServer((p) => p.send(down, true));
    const r = relay(target.port);
    const app = await rawConnect(r.port);
    app.send(up, true);
    const what = () =>
      `both ends read 32 MiB and EOF (app read ${app.bytes} B end=${app.sawEnd}, ` +
      `target read ${target.peers[0]?.bytes ?? 0} B end=${target.peers[0]?.sawEnd})`;
    await until(() => app.sawEnd && target.peers[0]?.sawEnd === true, what, WATCHDOG_MS);
    const t = target.peers[0]!;
    expect(app.bytes).toBe(size);
    expect(t.bytes).toBe(size);
    expect(t.sha()).toBe(sha256(up));
    expect(app.sha()).toBe(sha256(down));
    await until(() => app.closed && t.closed, "both ends closed after EOF", WATCHDOG_MS);
    expect(app.err).toBeUndefined();
    expect(t.err).toBeUndefined();
    await until(() => r.active.size === 0, "the relay forgot the finished connection", WATCHDOG_MS);
  }, TEST_TIMEOUT_MS);

  test("echoes 32 MiB through the relay to a startTarget echo server, sha256 equal", async () => {
    const target = startTarget({ mode: "echo" });
    cleanup.push(() => target.stop());
    const r = relay(target.port);
    const data = randomData(32 * MiB, 7);
    const res = await appExchange(r.port, data, { timeoutMs: WATCHDOG_MS });
    expect(res.error).toBeUndefined();
    expect(res.cleanEnd).toBe(true);
    expect(res.received.byteLength).toBe(data.byteLength);
    expect(sha256(res.received)).toBe(sha256(data));
    expect(target.conns[0]!.receivedBytes).toBe(data.byteLength);
  }, TEST_TIMEOUT_MS);

  test("passes FIN both ways: target reads all then EOF, its reply still reaches the app, then the app sees EOF", async () => {
    const tail = randomData(2 * MiB, 99);
    // The reply names what the target had when it saw EOF: proof that EOF came after every byte.
    const target = startTarget({
      mode: "reply",
      reply: (got) => new Uint8Array(Buffer.concat([Buffer.from(`${got.byteLength} ${sha256(got)}\n`), tail])),
    });
    cleanup.push(() => target.stop());
    const r = relay(target.port);
    // Caught as the relay registers it (a 1 ms sampler could miss a bridge that lives between two ticks).
    let bridge: Bridge | undefined;
    const add = r.active.add.bind(r.active);
    r.active.add = (b: Bridge) => {
      bridge ??= b;
      return add(b);
    };
    const data = randomData(4 * MiB + 3, 5);
    const res = await appExchange(r.port, data, { timeoutMs: WATCHDOG_MS });
    expect(res.error).toBeUndefined();
    expect(res.cleanEnd).toBe(true);
    const expected = Buffer.concat([Buffer.from(`${data.byteLength} ${sha256(data)}\n`), tail]);
    expect(res.received.byteLength).toBe(expected.byteLength);
    expect(sha256(res.received)).toBe(sha256(expected));
    const conn = target.conns[0]!;
    expect(conn.gotEnd).toBe(true);
    expect(conn.receivedBytes).toBe(data.byteLength);
    await until(() => conn.closed, "the target's connection closed", WATCHDOG_MS);
    expect(conn.error).toBeUndefined();
    expect(bridge).toBeDefined();
    await until(() => r.active.size === 0, "the bridge finished", WATCHDOG_MS);
    expect(bridge!.aToB).toEqual({ bytes: data.byteLength, congestions: bridge!.aToB.congestions, finished: true });
    expect(bridge!.bToA).toEqual({ bytes: expected.byteLength, congestions: bridge!.bToA.congestions, finished: true });
    expect(bridge!.error).toBeUndefined();
  }, TEST_TIMEOUT_MS);

  test("closes the app connection promptly with an error, not a clean EOF, when the target refuses", async () => {
    // A port that was just listening and no longer is: connecting to it is refused.
    const gone = Bun.listen({ hostname: HOST, port: 0, socket: { data() {} } });
    const closedPort = gone.port;
    gone.stop(true);
    const r = relay(closedPort);
    // The app sends nothing and no FIN: a clean EOF from the relay would leave it waiting until the
    // timeout, so only an abnormal end (a reset) finishes it early. (Unread data would make even a
    // plain close() look like a reset, hence no data.)
    // "Promptly" is the cause, not a figure: a reset from the relay, not this test's watchdog (60 s, far
    // above what a loaded machine needs).
    const res = await appExchange(r.port, new Uint8Array(0), { shutdown: false, timeoutMs: WATCHDOG_MS });
    expect(res.error).toBeDefined();
    expect(res.error).not.toMatch(/^timeout/);
    expect(res.error).toBe("ECONNRESET");
    expect(res.cleanEnd).toBe(false);
    await until(() => r.active.size === 0, "the relay dropped the failed connection", WATCHDOG_MS);
  }, TEST_TIMEOUT_MS);

  test("stop() resets open connections: a half-closed app waiting for a reply sees a reset, not EOF", async () => {
    // A target that never answers: the app half-closes and waits.
    const seen = { bytes: 0, ended: false };
    const silent = Bun.listen({
      hostname: HOST,
      port: 0,
      allowHalfOpen: true,
      socket: { data: (_s: unknown, d: Uint8Array) => void (seen.bytes += d.byteLength), end: () => void (seen.ended = true), error() {}, close() {} },
    } as any);
    cleanup.push(() => silent.stop(true));
    const r = relay(silent.port);
    const pending = appExchange(r.port, randomData(1000, 3), { timeoutMs: WATCHDOG_MS });
    // The app's bytes and FIN crossed the relay: the app is now half-closed, waiting for a reply.
    await until(() => seen.bytes === 1000 && seen.ended, "the target got the app's 1000 bytes and FIN", WATCHDOG_MS);
    r.stop();
    const res = await pending;
    expect(res.cleanEnd).toBe(false);
    expect(res.error).toBe("ECONNRESET");
  }, TEST_TIMEOUT_MS);
});

describe("Bridge", () => {
  test("counts bytes and congestions, and pauses the source while the destination is congested", async () => {
    const upSize = 8 * MiB;
    const downSize = 1 * MiB;
    const upData = randomData(upSize, 11);
    const downData = randomData(downSize, 12);

    // Pair 2: B (TcpPipe) → slow reader R, which answers with 1 MiB once it has seen EOF.
    const readerServer = rawServer((p) => {
      p.readDelayMs = 10;
      p.onEnd = () => p.send(downData, true);
    });

    // Pair 1: raw writer W → A (TcpPipe, accepted); A and B are bridged as soon as A arrives.
    let a: TcpPipe | undefined;
    let b: TcpPipe | undefined;
    let bridge: Bridge | undefined;
    let result: BridgeResult | undefined;
    const samples = { maxPending: 0, maxChunk: 0, sends: 0, dataWhileCongested: 0, intervalSamples: 0 };
    const listener = listenTcp({ host: HOST, port: 0 }, (pipe) => {
      a = pipe;
      b = connectTcp({ host: HOST, port: readerServer.port });
      bridge = new Bridge(a, b, (res) => (result = res));
      // Sample B's queue right after every send (its peak) and check A never delivers while B is congested.
      const dst = b;
      const send = dst.send.bind(dst);
      dst.send = (chunk) => {
        const ok = send(chunk);
        samples.sends++;
        samples.maxChunk = Math.max(samples.maxChunk, chunk.byteLength);
        samples.maxPending = Math.max(samples.maxPending, dst.pendingBytes);
        return ok;
      };
      const onData = pipe.onData.bind(pipe);
      pipe.onData = (chunk) => {
        if (dst.pendingBytes > 0) samples.dataWhileCongested++;
        onData(chunk);
      };
    });
    cleanup.push(() => listener.stop());
    cleanup.push(() => {
      a?.close();
      b?.close();
    });
    const sampler = setInterval(() => {
      if (b === undefined) return;
      samples.intervalSamples++;
      samples.maxPending = Math.max(samples.maxPending, b.pendingBytes);
    }, 1);
    cleanup.push(() => clearInterval(sampler));

    const w = await rawConnect(listener.port);
    w.send(upData, true);
    await until(
      () => result !== undefined,
      () => `the bridge finished (R read ${readerServer.peers[0]?.bytes ?? 0} B, W read ${w.bytes} B)`,
      WATCHDOG_MS,
    );
    const r = readerServer.peers[0]!;
    await until(() => w.sawEnd && r.closed && w.closed, "both raw ends saw EOF and closed", WATCHDOG_MS);

    // Integrity and FIN both ways.
    expect(r.bytes).toBe(upSize);
    expect(r.sha()).toBe(sha256(upData));
    expect(w.bytes).toBe(downSize);
    expect(w.sha()).toBe(sha256(downData));
    expect(w.err).toBeUndefined();
    expect(r.err).toBeUndefined();

    // Counters: the bridge's and the pipes' agree with what was sent.
    expect(result!.error).toBeUndefined();
    expect(result!.aToB.bytes).toBe(upSize);
    expect(result!.bToA.bytes).toBe(downSize);
    expect(result!.aToB.finished).toBe(true);
    expect(result!.bToA.finished).toBe(true);
    expect(a!.stats.bytesIn).toBe(upSize);
    expect(b!.stats.bytesOut).toBe(upSize);
    expect(b!.stats.bytesIn).toBe(downSize);
    expect(a!.stats.bytesOut).toBe(downSize);
    expect(bridge!.aToB.congestions).toBeGreaterThan(0);
    expect(bridge!.aToB.congestions).toBe(b!.stats.congestions);

    // Backpressure: with the slow reader B congested, A was paused, so B's queue stayed within one chunk.
    expect(samples.sends).toBeGreaterThan(0);
    expect(samples.intervalSamples).toBeGreaterThan(10);
    expect(samples.dataWhileCongested).toBe(0);
    expect(samples.maxPending).toBeGreaterThan(0);
    expect(samples.maxPending).toBeLessThanOrEqual(samples.maxChunk);
    expect(samples.maxPending).toBeLessThanOrEqual(MAX_READ);
  }, TEST_TIMEOUT_MS);
});
