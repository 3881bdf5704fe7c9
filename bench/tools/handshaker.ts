/**
 * Handshake load on a server proxy (bench scenario "handshake"), one process.
 *
 *   bun bench/tools/handshaker.ts --port P --mode joins --key-file F [--seconds S] [--concurrency C]
 *   bun bench/tools/handshaker.ts --port P --mode hold [--conns N] [--hold-ms H]
 *
 * - joins: opens one session (an OPEN on stripe 0, kept open and silent), then for S seconds keeps C
 *   JOINs of it in flight: each connects, sends a fresh first message (new salt, so new keys; a join
 *   proof of the session secret), reads the server's reply, checks that it authenticates and says OK,
 *   and closes. Reports {"event":"done","handshakes":n,"failures":f,"seconds":s}.
 * - hold: opens N connections that each send the first 20 bytes of a first message and nothing more, so
 *   none ever authenticates; reports {"event":"holding","open":k,"refusedAtConnect":r} once all are connected
 *   (r: reset by the server before the connect resolved), keeps them H ms,
 *   then {"event":"done","closedEarly":c} (c: closed by the server before the end).
 *
 * stdout carries {"event":"ready"} at start. Times are the process's own.
 */

import type { Socket } from "bun";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { KIND_JOIN, KIND_OPEN, SALT_SIZE, STATUS_OK } from "../../src/secure/constants.ts";
import { joinProof } from "../../src/secure/kdf.ts";
import { parseKeys } from "../../src/secure/keys.ts";
import { encodeClientHello, readServerReply, type ClientHeader, type HandshakeAuth } from "../../src/secure/messages.ts";
import { emit, parseFlags } from "../lib/data.ts";

const USAGE = "usage: handshaker.ts --port P --mode joins|hold [--key-file F] [--seconds S] [--concurrency C] [--conns N] [--hold-ms H]";
const f = parseFlags(process.argv.slice(2), ["--port", "--mode", "--key-file", "--seconds", "--concurrency", "--conns", "--hold-ms"], USAGE);
const port = Number(f.get("--port"));
const mode = f.get("--mode");
const HOST = "127.0.0.1";

interface Conn {
  got: Uint8Array[];
  have: number;
  onData?: () => void;
  onClose?: () => void;
  closed: boolean;
}

/** Connects; resolves with the socket once open. */
function connect(c: Conn): Promise<Socket<Conn>> {
  return Bun.connect<Conn>({
    hostname: HOST,
    port,
    data: c,
    socket: {
      data(s, chunk) {
        s.data.got.push(chunk);
        s.data.have += chunk.byteLength;
        s.data.onData?.();
      },
      close(s) {
        s.data.closed = true;
        s.data.onClose?.();
      },
      error() {},
    },
  });
}

const newConn = (): Conn => ({ got: [], have: 0, closed: false });

async function joins(): Promise<void> {
  const keyText = readFileSync(f.get("--key-file") ?? "", "utf8");
  const auth: HandshakeAuth = { mode: "keyed", keys: [parseKeys(keyText, "key file")[0]!.bytes] };
  const seconds = Number(f.get("--seconds") ?? 4);
  const concurrency = Number(f.get("--concurrency") ?? 16);
  const sid = new Uint8Array(randomBytes(16));
  const secret = new Uint8Array(randomBytes(32));
  const header = (kind: number, index: number, generation: number, cs: Uint8Array): ClientHeader => ({
    kind,
    flags: 0,
    stripeIndex: index,
    generation,
    stripeCount: 64,
    timestampMs: Date.now(),
    window: 1 << 24,
    secret: kind === KIND_OPEN ? secret : joinProof(secret, cs),
    options: [],
  });

  /** One stripe handshake; resolves true when the reply authenticated and said OK. */
  const handshake = async (kind: number, index: number, generation: number, keepOpen: boolean): Promise<boolean> => {
    const cs = new Uint8Array(randomBytes(SALT_SIZE));
    const hello = encodeClientHello(auth, sid, header(kind, index, generation, cs), cs);
    const c = newConn();
    const s = await connect(c);
    s.write(hello.bytes);
    const ok = await new Promise<boolean>((resolve) => {
      const check = (): void => {
        const step = readServerReply(c.got.length === 1 ? c.got[0]! : new Uint8Array(Buffer.concat(c.got)), auth, { sid, cs });
        if (step.status === "need" && !c.closed) return;
        resolve(step.status === "done" && step.value.reply.status === STATUS_OK);
      };
      c.onData = check;
      c.onClose = check;
    });
    if (!keepOpen) s.terminate();
    return ok;
  };

  if (!(await handshake(KIND_OPEN, 0, 1, true))) throw new Error("the OPEN was not accepted");
  let handshakes = 0;
  let failures = 0;
  let generation = 1;
  const start = performance.now();
  const end = start + seconds * 1000;
  const worker = async (w: number): Promise<void> => {
    while (performance.now() < end) {
      // Each worker owns one stripe index (1..C), so JOINs replace only their own earlier stripe.
      if (await handshake(KIND_JOIN, 1 + w, ++generation & 0xffff, false)) handshakes++;
      else failures++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  emit({ event: "done", handshakes, failures, seconds: (performance.now() - start) / 1000 });
}

async function hold(): Promise<void> {
  const n = Number(f.get("--conns") ?? 1000);
  const holdMs = Number(f.get("--hold-ms") ?? 3000);
  const prefix = new Uint8Array(randomBytes(20));
  const conns: { c: Conn; s: Socket<Conn> }[] = [];
  // A connection the server resets before our connect resolves (its connection limits) is counted, not fatal.
  let refusedAtConnect = 0;
  // In batches, so the listen backlog is never the limit.
  for (let i = 0; i < n; i += 100) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(100, n - i) }, async () => {
        const c = newConn();
        try {
          const s = await connect(c);
          s.write(prefix);
          return { c, s };
        } catch {
          refusedAtConnect++;
          return undefined;
        }
      }),
    );
    for (const x of batch) if (x !== undefined) conns.push(x);
  }
  emit({ event: "holding", open: conns.filter((x) => !x.c.closed).length, refusedAtConnect });
  await Bun.sleep(holdMs);
  const closedEarly = conns.filter((x) => x.c.closed).length;
  const bytesBack = conns.reduce((a, x) => a + x.c.have, 0);
  for (const x of conns) x.s.terminate();
  emit({ event: "done", closedEarly, bytesBack });
}

emit({ event: "ready" });
try {
  if (mode === "joins") await joins();
  else if (mode === "hold") await hold();
  else {
    process.stderr.write(`bad --mode ${mode}\n${USAGE}\n`);
    process.exit(2);
  }
  process.exit(0);
} catch (err) {
  process.stderr.write(`handshaker: ${(err as Error).message}\n`);
  process.exit(1);
}
