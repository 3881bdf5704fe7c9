/**
 * Attacks on a server proxy, and the unlucky users beside them (bench scenario "attacks"), one process.
 *
 *   bun bench/tools/attacker.ts --mode MODE --port P [--key-file F] [options]
 *
 * Modes against the server proxy (--port: the server; a key holder, as bench/lib/rawpeer.ts):
 * - fragments [--frames N]: opens a session and sends DATA frames of 1 byte at every other offset from 1
 *   (never filling the first gap), up to N frames, as fast as the socket takes them.
 * - ping [--seconds S]: opens a session and sends nothing but PINGs for S seconds.
 * - ack [--seconds S] [--entries E]: the same with ACKs of E entries each (default 8191: 64 KiB).
 *   All three report {"event":"done","sent":frames,"closedHow","closedAfterMs","resets":[codes]}.
 * - slots [--count N]: N single-stripe OPENs, {"event":"opened","ok","refused"}; then every one
 *   vanishes (RST) at once: {"event":"vanished"}.
 * - recvmem [--sessions K]: K sessions that each fill their receive window with data that can never be
 *   delivered (everything but the first byte); {"event":"filled","sessions","bytes"} when sent; they
 *   stay until the process is stopped.
 * Modes against the client proxy (--port: the client):
 * - stall [--conns N]: N app connections that never read (a paused download); {"event":"stalled"}.
 * - probe [--seconds S] [--every-ms M]: one app connection to an echo target; one byte every M ms,
 *   each round trip timed; {"event":"done","rtts","maxMs","p99Ms","error"} after S seconds.
 *
 * stdout: {"event":"ready"} at start. Times are the process's own.
 */

import type { Socket } from "bun";
import { readFileSync } from "node:fs";
import { parseKeys } from "../../src/secure/keys.ts";
import type { HandshakeAuth } from "../../src/secure/messages.ts";
import { encodeAckEntries } from "../../src/wire/codec.ts";
import { FRAME_ACK, FRAME_PING } from "../../src/wire/constants.ts";
import { emit, parseFlags } from "../lib/data.ts";
import { RawPeer, dataFrame, fragmentFrames, repeatFrame } from "../lib/rawpeer.ts";

const USAGE =
  "usage: attacker.ts --mode fragments|ping|ack|slots|recvmem|stall|probe --port P [--key-file F] [--frames N] [--seconds S] [--entries E] [--count N] [--sessions K] [--conns N] [--every-ms M]";
const f = parseFlags(
  process.argv.slice(2),
  ["--mode", "--port", "--key-file", "--frames", "--seconds", "--entries", "--count", "--sessions", "--conns", "--every-ms"],
  USAGE,
);
const mode = f.get("--mode");
const port = Number(f.get("--port"));
const HOST = "127.0.0.1";
const num = (name: string, dflt: number): number => Number(f.get(name) ?? dflt);

function auth(): HandshakeAuth {
  const file = f.get("--key-file");
  if (file === undefined) return { mode: "plain" };
  return { mode: "keyed", keys: [parseKeys(readFileSync(file, "utf8"), "key file")[0]!.bytes] };
}

/** Sends `batch()` again and again (keeping ~4 MB queued) until `stop()` or the server closes. */
async function flood(peer: RawPeer, batch: () => Uint8Array, framesPer: number, stop: () => boolean): Promise<number> {
  let sent = 0;
  while (!peer.closed && !stop()) {
    if (peer.queued > 4 * 1024 * 1024) {
      await Promise.race([peer.drained(), Bun.sleep(50)]);
      continue;
    }
    peer.send(batch());
    sent += framesPer;
    if (sent % (framesPer * 64) === 0) await Bun.sleep(0); // let the socket's events in
  }
  return sent;
}

async function report(peer: RawPeer, sent: number, started: number): Promise<void> {
  await Promise.race([peer.waitClosed(), Bun.sleep(2000)]);
  emit({
    event: "done",
    sent,
    closedHow: peer.closedHow ?? "open",
    closedAfterMs: peer.closed ? peer.closedAt - started : null,
    resets: peer.events.resets.map(([code]) => code),
    pongs: peer.events.pongs,
  });
  if (!peer.closed) peer.terminate();
}

async function fragments(): Promise<void> {
  const peer = await RawPeer.connect({ port, auth: auth() });
  const total = num("--frames", 1_000_000);
  const per = 4096;
  let next = 1;
  const started = performance.now();
  const sent = await flood(
    peer,
    () => {
      const b = fragmentFrames(next, 2, per);
      next += 2 * per;
      return b;
    },
    per,
    () => (next - 1) / 2 >= total,
  );
  await report(peer, sent, started);
}

async function control(kind: "ping" | "ack"): Promise<void> {
  const peer = await RawPeer.connect({ port, auth: auth() });
  const seconds = num("--seconds", 4);
  const per = kind === "ping" ? 4096 : 16;
  const entries = num("--entries", 8191);
  const frames =
    kind === "ping"
      ? repeatFrame(FRAME_PING, 7, per)
      : repeatFrame(FRAME_ACK, 0, per, encodeAckEntries(Array.from({ length: entries }, (_, i) => ({ index: i & 63, generation: 1, received: 0 }))));
  const started = performance.now();
  const end = started + seconds * 1000;
  const sent = await flood(peer, () => frames, per, () => performance.now() >= end);
  await report(peer, sent, started);
}

async function slots(): Promise<void> {
  const count = num("--count", 1024);
  const a = auth();
  const peers: RawPeer[] = [];
  let refused = 0;
  let failed = 0;
  for (let i = 0; i < count; i += 64) {
    const batch = await Promise.allSettled(Array.from({ length: Math.min(64, count - i) }, () => RawPeer.connect({ port, auth: a })));
    for (const r of batch) {
      if (r.status === "rejected") failed++;
      else if (r.value.ok) peers.push(r.value);
      else {
        refused++;
        r.value.terminate();
      }
    }
  }
  emit({ event: "opened", ok: peers.length, refused, failed });
  await Bun.sleep(200);
  for (const p of peers) p.terminate();
  emit({ event: "vanished", count: peers.length });
  await Bun.sleep(60_000);
}

async function recvmem(): Promise<void> {
  const k = num("--sessions", 256);
  const a = auth();
  const peers: RawPeer[] = [];
  let bytes = 0;
  let refused = 0;
  const payload = new Uint8Array(64 * 1024).fill(0x62);
  for (let i = 0; i < k; i++) {
    const p = await RawPeer.connect({ port, auth: a });
    if (!p.ok) {
      refused++;
      p.terminate();
      continue;
    }
    peers.push(p);
    // Everything but the first byte of the window: nothing can be delivered, all of it is held.
    const end = p.reply.window;
    for (let off = 1; off < end; off += payload.byteLength) {
      const piece = payload.subarray(0, Math.min(payload.byteLength, end - off));
      p.send(dataFrame(off, piece), 128 * 1024);
      bytes += piece.byteLength;
    }
    await p.drained();
  }
  await Bun.sleep(500);
  emit({ event: "filled", sessions: peers.length, refused, bytes, closed: peers.filter((p) => p.closed).length });
  await Bun.sleep(600_000);
}

async function stall(): Promise<void> {
  const n = num("--conns", 4);
  const socks: Socket<undefined>[] = [];
  for (let i = 0; i < n; i++) {
    socks.push(
      await Bun.connect<undefined>({
        hostname: HOST,
        port,
        socket: {
          open: (s) => s.pause(), // never read: a paused download
          data() {},
          error() {},
        },
      }),
    );
  }
  emit({ event: "stalled", conns: socks.length });
  await Bun.sleep(600_000);
}

async function probe(): Promise<void> {
  const seconds = num("--seconds", 10);
  const every = num("--every-ms", 10);
  const rtts: number[] = [];
  let sentAt = 0;
  let waiting = false;
  let error: string | null = null;
  let over = false;
  const sock = await Bun.connect<undefined>({
    hostname: HOST,
    port,
    socket: {
      data() {
        if (!waiting) return;
        waiting = false;
        rtts.push(performance.now() - sentAt);
      },
      close(_s, err) {
        if (over) return;
        error ??= err ? ((err as { code?: string }).code ?? err.message) : "closed";
      },
      error() {},
    },
  });
  const end = performance.now() + seconds * 1000;
  let stuckSince = 0;
  while (performance.now() < end && error === null) {
    if (!waiting) {
      waiting = true;
      sentAt = performance.now();
      sock.write(Uint8Array.of(1));
    } else stuckSince = performance.now() - sentAt;
    await Bun.sleep(every);
  }
  // A reply still outstanding at the end counts as a round trip of at least that long.
  if (waiting) rtts.push(Math.max(stuckSince, performance.now() - sentAt));
  over = true;
  sock.terminate();
  const sorted = [...rtts].sort((x, y) => x - y);
  emit({
    event: "done",
    rtts: rtts.length,
    maxMs: sorted.at(-1) ?? null,
    p99Ms: sorted[Math.floor(sorted.length * 0.99)] ?? null,
    medianMs: sorted[Math.floor(sorted.length / 2)] ?? null,
    error,
  });
}

emit({ event: "ready" });
try {
  switch (mode) {
    case "fragments":
      await fragments();
      break;
    case "ping":
    case "ack":
      await control(mode);
      break;
    case "slots":
      await slots();
      break;
    case "recvmem":
      await recvmem();
      break;
    case "stall":
      await stall();
      break;
    case "probe":
      await probe();
      break;
    default:
      process.stderr.write(`bad --mode ${mode}\n${USAGE}\n`);
      process.exit(2);
  }
  process.exit(0);
} catch (err) {
  process.stderr.write(`attacker: ${(err as Error).message}\n`);
  process.exit(1);
}
