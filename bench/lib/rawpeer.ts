/**
 * RawPeer: one stripe connection to a server proxy driven by hand, as a hostile (or broken) client that
 * holds a key would drive it: the first message (OPEN or JOIN), the server's authenticated reply, then
 * whatever frames the caller makes, sealed into records under the stripe's key. What the server sends
 * back is opened and decoded, so a caller sees its PONGs, ACKs and RESETs, and how the connection ended.
 *
 * Used by the attack benchmarks (bench/tools/attacker.ts) and the attack tests (test/attacks.test.ts);
 * it lives here because bench children run from a snapshot of src/ and bench/ only.
 */

import type { Socket } from "bun";
import { randomBytes } from "node:crypto";
import { FIRST_FRAME_COUNTER, KIND_JOIN, KIND_OPEN, SALT_SIZE, SID_SIZE, STATUS_OK } from "../../src/secure/constants.ts";
import { joinProof } from "../../src/secure/kdf.ts";
import { encodeClientHello, readServerReply, type ClientHeader, type HandshakeAuth, type ServerReply } from "../../src/secure/messages.ts";
import { RecordOpener, type RecordSealer } from "../../src/secure/record.ts";
import { FrameDecoder, encodeFrame, writeFrameHeader, type ControlFrameType } from "../../src/wire/codec.ts";
import { FRAME_DATA, FRAME_HEADER_SIZE, FrameType } from "../../src/wire/constants.ts";

/** How a stripe to open or join looks. */
export interface RawStripeOptions {
  host?: string;
  port: number;
  auth: HandshakeAuth;
  /** Session id (default: 16 fresh random bytes). */
  sid?: Uint8Array;
  /** Session secret S (default: 32 fresh random bytes); a JOIN proves it. */
  secret?: Uint8Array;
  kind?: "open" | "join";
  index?: number;
  generation?: number;
  /** Stripe count announced (default 1). */
  stripeCount?: number;
  /** Our receive window announced (default 16 MiB). */
  window?: number;
  /** Give up on the reply after this long (default 5 s). */
  timeoutMs?: number;
}

/** Frames and events the server sent on this stripe. */
export interface RawEvents {
  /** DATA bytes received. */
  dataBytes: number;
  pongs: number;
  acks: number;
  /** The last ACK value. */
  ackValue: number;
  /** RESET frames: [code, reason]. */
  resets: [number, string][];
}

const u8 = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

/** A stripe connection under the caller's control; see the module comment. */
export class RawPeer {
  readonly events: RawEvents = { dataBytes: 0, pongs: 0, acks: 0, ackValue: 0, resets: [] };
  /** The server's reply. */
  reply!: ServerReply;
  /** "reset" (ECONNRESET), "eof" (a clean close) or another error code, once closed. */
  closedHow: string | undefined;
  /** When the connection closed (performance.now()), or NaN. */
  closedAt = NaN;
  /** Bytes handed to the socket (records included). */
  written = 0;
  private socket!: Socket<undefined>;
  private sealer: RecordSealer | undefined;
  private opener: RecordOpener | undefined;
  private readonly decoder: FrameDecoder;
  private queue: Uint8Array[] = [];
  private readonly drainWaiters: (() => void)[] = [];
  private readonly closeWaiters: (() => void)[] = [];

  private constructor(
    readonly sid: Uint8Array,
    readonly secret: Uint8Array,
    readonly index: number,
    readonly generation: number,
  ) {
    this.decoder = new FrameDecoder({
      data: (_offset, bytes) => {
        this.events.dataBytes += bytes.byteLength;
      },
      control: (type: ControlFrameType, _flags, value, payload) => {
        if (type === FrameType.Pong) this.events.pongs++;
        else if (type === FrameType.Ack) {
          this.events.acks++;
          this.events.ackValue = value;
        } else if (type === FrameType.Reset) this.events.resets.push([value, new TextDecoder().decode(payload)]);
      },
    });
  }

  /**
   * Connects, sends the first message and waits for the authenticated reply. Resolves with the peer
   * whatever the reply's status (see `ok`); rejects when no reply authenticates in time (silence).
   */
  static async connect(o: RawStripeOptions): Promise<RawPeer> {
    const sid = o.sid ?? u8(SID_SIZE);
    const secret = o.secret ?? u8(32);
    const kind = o.kind ?? "open";
    const peer = new RawPeer(sid, secret, o.index ?? 0, o.generation ?? 1);
    const cs = o.auth.mode === "keyed" ? u8(SALT_SIZE) : new Uint8Array(SALT_SIZE);
    const header: ClientHeader = {
      kind: kind === "open" ? KIND_OPEN : KIND_JOIN,
      flags: 0,
      stripeIndex: peer.index,
      generation: peer.generation,
      stripeCount: o.stripeCount ?? 1,
      timestampMs: Date.now(),
      window: o.window ?? 16 * 1024 * 1024,
      secret: kind === "open" ? secret : joinProof(secret, cs),
      options: [],
    };
    const hello = encodeClientHello(o.auth, sid, header, cs);
    peer.sealer = hello.sealer;
    let got: Uint8Array[] = [];
    let replied = false;
    const replyDone = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no authenticated reply in time")), o.timeoutMs ?? 5000);
      const tryReply = (): void => {
        const all = new Uint8Array(Buffer.concat(got));
        const step = readServerReply(all, o.auth, { sid, cs: hello.cs });
        if (step.status === "need") return;
        clearTimeout(timer);
        if (step.status === "fail") return reject(new Error(`reply did not authenticate: ${step.reason}`));
        replied = true;
        peer.reply = step.value.reply;
        if (step.value.key !== undefined) peer.opener = new RecordOpener(step.value.key, FIRST_FRAME_COUNTER);
        got = [];
        peer.receive(all.subarray(step.consumed));
        resolve();
      };
      peer.onBeforeReply = (chunk) => {
        got.push(chunk);
        tryReply();
      };
      peer.onCloseBeforeReply = () => {
        clearTimeout(timer);
        reject(new Error(`closed (${peer.closedHow}) before a reply`));
      };
    });
    peer.socket = await Bun.connect<undefined>({
      hostname: o.host ?? "127.0.0.1",
      port: o.port,
      socket: {
        data: (_s, chunk) => (replied ? peer.receive(chunk) : peer.onBeforeReply(new Uint8Array(chunk))),
        drain: () => peer.flush(),
        close: (_s, err) => peer.onClosed(err),
        error() {},
      },
    });
    peer.socket.write(hello.bytes);
    await replyDone;
    return peer;
  }

  private onBeforeReply: (chunk: Uint8Array) => void = () => {};
  private onCloseBeforeReply: () => void = () => {};

  /** The reply said OK. */
  get ok(): boolean {
    return this.reply.status === STATUS_OK;
  }

  /** The connection has closed. */
  get closed(): boolean {
    return this.closedHow !== undefined;
  }

  /** Bytes waiting for the socket to take them. */
  get queued(): number {
    let n = 0;
    for (const q of this.queue) n += q.byteLength;
    return n;
  }

  /** A JOIN of this peer's session on stripe `index` (same key, sid and secret). */
  join(o: Omit<RawStripeOptions, "sid" | "secret" | "kind">): Promise<RawPeer> {
    return RawPeer.connect({ ...o, sid: this.sid, secret: this.secret, kind: "join" });
  }

  /** Sends `frames` (whole frames, concatenated) as records of at most `recordBytes`. False once closed. */
  send(frames: Uint8Array, recordBytes = 64 * 1024): boolean {
    if (this.closed) return false;
    for (let at = 0; at < frames.byteLength; at += recordBytes) {
      const body = frames.subarray(at, Math.min(frames.byteLength, at + recordBytes));
      const rec = this.sealer ? this.sealer.seal(body) : body.slice();
      this.queue.push(rec);
    }
    this.flush();
    return !this.closed;
  }

  /** Resolves once what was queued has been handed to the kernel (or the connection closed). */
  drained(): Promise<void> {
    if (this.queue.length === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Resolves when the connection closes (at once if it has). */
  waitClosed(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  /** Sends RST. */
  terminate(): void {
    this.socket.terminate();
  }

  /** Sends FIN and closes. */
  end(): void {
    this.socket.end();
  }

  private flush(): void {
    while (this.queue.length > 0 && !this.closed) {
      const b = this.queue[0]!;
      const n = this.socket.write(b);
      if (n < 0) return;
      this.written += n;
      if (n < b.byteLength) {
        this.queue[0] = b.subarray(n);
        return;
      }
      this.queue.shift();
    }
    for (const w of this.drainWaiters.splice(0)) w();
  }

  private receive(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    try {
      if (this.opener) {
        const plain: Uint8Array[] = [];
        this.opener.push(chunk, plain);
        for (const p of plain) this.decoder.push(p);
      } else this.decoder.push(new Uint8Array(chunk));
    } catch {
      // The server's frames never fail to decode; a test that garbles them sees it in the events.
    }
  }

  private onClosed(err: Error | undefined): void {
    if (this.closedHow !== undefined) return;
    const code = (err as { code?: string } | undefined)?.code;
    this.closedHow = err === undefined ? "eof" : code === "ECONNRESET" ? "reset" : (code ?? err.message);
    this.closedAt = performance.now();
    this.queue = [];
    this.onCloseBeforeReply();
    for (const w of this.drainWaiters.splice(0)) w();
    for (const w of this.closeWaiters.splice(0)) w();
  }
}

// --- frame builders -------------------------------------------------------------------------------------

/** `count` DATA frames of 1 byte at offsets first, first + step, … (the fragment flood). */
export function fragmentFrames(first: number, step: number, count: number): Uint8Array {
  const size = FRAME_HEADER_SIZE + 1;
  const out = new Uint8Array(count * size);
  const view = new DataView(out.buffer);
  for (let i = 0; i < count; i++) {
    writeFrameHeader(view, i * size, FRAME_DATA, 0, 0, 1, first + i * step);
    out[i * size + FRAME_HEADER_SIZE] = 0x61;
  }
  return out;
}

/** One DATA frame carrying `payload` at `offset`. */
export function dataFrame(offset: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_SIZE + payload.byteLength);
  writeFrameHeader(new DataView(out.buffer), 0, FRAME_DATA, 0, 0, payload.byteLength, offset);
  out.set(payload, FRAME_HEADER_SIZE);
  return out;
}

/** `count` copies of the control frame (type, value, payload) back to back. */
export function repeatFrame(type: number, value: number, count: number, payload?: Uint8Array): Uint8Array {
  const one = encodeFrame(type, 0, value, payload);
  const out = new Uint8Array(one.byteLength * count);
  for (let i = 0; i < count; i++) out.set(one, i * one.byteLength);
  return out;
}
