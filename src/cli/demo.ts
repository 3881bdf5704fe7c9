/**
 * `demo`: the first thing a new user runs. In one process on loopback: a target that counts what it
 * receives, a capped link that limits every TCP connection through it, and both proxies with the
 * stripes crossing the link. Data is pushed for a few seconds over one plain connection through the
 * link, then striped; both rates and the speed-up are printed side by side.
 */

import type { Socket } from "bun";
import { randomBytes } from "node:crypto";
import { startCappedLink } from "../link/capped.ts";
import { startClient } from "../proxy/client.ts";
import { quietLog } from "../proxy/log.ts";
import { startServer } from "../proxy/server.ts";
import type { StripeAuth } from "../proxy/handshake.ts";
import { keyFromBytes } from "../secure/keys.ts";

const LOOP = "127.0.0.1";

/** Options of the demo (from the command line). */
export interface DemoOptions {
  /** Per-connection cap of the link, MB/s (10^6 bytes/s). */
  cap: number;
  delayMs: number;
  stripes: number;
  seconds: number;
}

/** A target that discards and counts. */
function startSink(): { port: number; received: () => number; stop: () => void } {
  let received = 0;
  const l = Bun.listen({
    hostname: LOOP,
    port: 0,
    socket: {
      data(_s, chunk) {
        received += chunk.byteLength;
      },
      error() {},
      close() {},
    },
  });
  return { port: l.port, received: () => received, stop: () => l.stop(true) };
}

/** Pushes bytes into host:port as fast as the connection takes them, until stopped. */
function push(port: number): { stop: () => void } {
  const block = new Uint8Array(256 * 1024).fill(0x5a);
  let socket: Socket | undefined;
  let stopped = false;
  const fill = (s: Socket) => {
    while (!stopped && s.write(block) === block.byteLength);
  };
  Bun.connect({
    hostname: LOOP,
    port,
    socket: { open: (s) => ((socket = s), fill(s)), drain: fill, data() {}, error() {}, close() {} },
  }).catch((err) => process.stderr.write(`demo: cannot connect: ${err.message}\n`));
  return {
    stop() {
      stopped = true;
      socket?.terminate();
    },
  };
}

function fmtRate(bps: number): string {
  return `${(bps / 1e6).toFixed(2)} MB/s`;
}

/** Measures the rate at which the sink receives while `port` is fed, with a live line on stderr. */
async function measure(label: string, port: number, sink: { received: () => number }, seconds: number): Promise<number> {
  const live = process.stderr.isTTY;
  const p = push(port);
  // Skip the first moments (connect, handshake, slow start) so both runs are measured alike.
  await Bun.sleep(300);
  const startBytes = sink.received();
  const start = performance.now();
  let lastLine = 0;
  while (performance.now() - start < seconds * 1000) {
    await Bun.sleep(100);
    const now = performance.now();
    if (now - lastLine >= 250) {
      lastLine = now;
      const rate = ((sink.received() - startBytes) * 1000) / (now - start);
      const line = `  ${label.padEnd(22)} ${((sink.received() - startBytes) / 1e6).toFixed(1).padStart(8)} MB  ${fmtRate(rate).padStart(12)}`;
      process.stderr.write(live ? `\r${line}` : `${line}\n`);
    }
  }
  const rate = ((sink.received() - startBytes) * 1000) / (performance.now() - start);
  p.stop();
  if (live) process.stderr.write("\n");
  await Bun.sleep(200);
  return rate;
}

/** Runs the demo and prints the comparison on stdout. */
export async function runDemo(o: DemoOptions): Promise<void> {
  const capBps = o.cap * 1e6;
  process.stderr.write(
    `tcp-striper demo: every TCP connection through the link is capped at ${fmtRate(capBps)}, ` +
      `${o.delayMs} ms one-way delay; ${o.seconds} s per run\n`,
  );
  const sink = startSink();
  // The demo makes its own key: its stripes are authenticated and encrypted like a real pair's.
  const auth: StripeAuth = { mode: "keyed", keys: [keyFromBytes(randomBytes(32))] };
  const server = startServer({ listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: sink.port }, auth, log: quietLog });
  // Plain run: app → link → target.
  const plainLink = await startCappedLink({ targetHost: LOOP, targetPort: sink.port, rates: [capBps], delayMs: o.delayMs });
  // Striped run: app → client proxy → N stripes through the link → server proxy → target.
  const stripeLink = await startCappedLink({ targetHost: LOOP, targetPort: server.port, rates: [capBps], delayMs: o.delayMs });
  const client = startClient({
    listen: { host: LOOP, port: 0 },
    peer: { host: LOOP, port: stripeLink.port },
    auth,
    stripes: o.stripes,
    log: quietLog,
  });
  try {
    const plain = await measure("1 plain connection", plainLink.port, sink, o.seconds);
    const striped = await measure(`${o.stripes} stripes`, client.port, sink, o.seconds);
    const ideal = capBps * o.stripes;
    process.stdout.write(
      `\n  plain connection : ${fmtRate(plain)}\n` +
        `  ${String(o.stripes).padStart(2)} stripes       : ${fmtRate(striped)}   (ideal ${fmtRate(ideal)}, ${((striped / ideal) * 100).toFixed(0)}% of it)\n` +
        `  speed-up         : ${(striped / plain).toFixed(2)}x\n`,
    );
  } finally {
    client.stop();
    server.stop();
    await plainLink.stop();
    await stripeLink.stop();
    sink.stop();
  }
}
