/**
 * The record layer (src/secure/record.ts) and the server's hello check (src/secure/messages.ts).
 *
 * Sealing, in the ways a record could leave in ONE buffer or not (bodies: consecutive slices of a
 * 512 KiB receive chunk, as the session hands them over; records of 16, 64 and 256 KiB):
 * - "seal pooled":    what SealedPipe does over a socket: the record sealed into a reused buffer,
 *                     offset so the ciphertext copy is 64-byte co-aligned with update()'s output.
 * - "seal fresh":     the same into a new buffer per record (a non-copying carrier; first touch of new memory).
 * - "seal concat":    the naive contiguous record: Buffer.concat of the pieces, so the ciphertext lands
 *                     20 bytes past its source mod 4096 — the slow copy case of the notes.
 * - "seal parts":     no contiguous record at all: the three pieces (sealed length, ciphertext, tag) as
 *                     separate buffers, i.e. three socket writes instead of one. The CPU floor of sealing.
 * - "copy aligned":   a plain co-aligned copy of the body into a pooled buffer: today's send-path copy
 *                     (payload into the batch), the baseline.
 * - "batch+seal":     today's copy into a batch, then "seal pooled" of the batch: sealing added on top.
 * - "sealv":          the record sealed straight from 4 frames (a 64-byte header+pad piece and a payload
 *                     view of the receive chunk each): the sealing IS the send path's one copy.
 * - "seal batch":     what SealedPipe.sendv does with a session batch cut into small records (below
 *                     128 KiB: a slow stripe's frames): the records of one 512 KiB batch sealed one after
 *                     another into one pooled buffer (RecordSealer.sealAt) for one carrier write; no
 *                     per-record alignment (copyUnaliased avoids the slow distances). Larger records go
 *                     one per buffer, as "seal pooled".
 * - "open":           one whole record pushed into a RecordOpener.
 * - "seal+open":      pooled seal then open, the issue's target (≥ 2 GB/s at 256 KiB on one core).
 * Handshake: "hello open $keys" reads a valid client hello whose key is the LAST of 1 or 16 server keys
 * (every key tried: the worst case); "hello reject $keys" reads garbage (all keys tried, none opens).
 */

import { ptr } from "bun:ffi";
import { createCipheriv, randomBytes, type CipherGCM } from "node:crypto";
import { do_not_optimize } from "mitata";
import { KIND_JOIN, RECORD_OVERHEAD } from "../src/secure/constants.ts";
import { encodeClientHello, readClientHello, type HandshakeAuth } from "../src/secure/messages.ts";
import { ALIGN_SLACK, RecordOpener, RecordSealer, writeNonce } from "../src/secure/record.ts";
import { receiveChunk, slices, type Case, type Steady, registerSummary, runStandalone } from "./micro.ts";

const SIZES = [16 * 1024, 64 * 1024, 256 * 1024] as const;
const KEY = new Uint8Array(randomBytes(32));

/** Bodies cycled through: views of one receive chunk (page-aligned, as Bun's are). */
function bodies(size: number): { next: () => Uint8Array } {
  const list = slices(receiveChunk(), size);
  let i = 0;
  return {
    next: () => {
      const b = list[i]!;
      i = i + 1 === list.length ? 0 : i + 1;
      return b;
    },
  };
}

function sealPooled(size: number): Steady {
  const src = bodies(size);
  const sealer = new RecordSealer(KEY);
  const scratch = Buffer.allocUnsafe(size + RECORD_OVERHEAD + ALIGN_SLACK);
  return { bytes: size, unit: "record", op: () => do_not_optimize(sealer.seal(src.next(), undefined, scratch)) };
}

function sealFresh(size: number): Steady {
  const src = bodies(size);
  const sealer = new RecordSealer(KEY);
  return { bytes: size, unit: "record", op: () => do_not_optimize(sealer.seal(src.next())) };
}

const nonce = new Uint8Array(12);
const lengthPlain = new Uint8Array(4);
let counter = 0;
/**
 * Seals as RecordSealer does, but returns [sealed length, ciphertext, tag] as update()/getAuthTag()
 * give them, without joining them: what a three-write send would hand the socket.
 */
function sealParts(body: Uint8Array): Uint8Array[] {
  new DataView(lengthPlain.buffer).setUint32(0, body.byteLength);
  writeNonce(nonce, counter++);
  const c1 = createCipheriv("aes-256-gcm", KEY, nonce) as CipherGCM;
  const l = c1.update(lengthPlain);
  c1.final();
  const head = Buffer.concat([l, c1.getAuthTag()]);
  writeNonce(nonce, counter++);
  const c2 = createCipheriv("aes-256-gcm", KEY, nonce) as CipherGCM;
  const ct = c2.update(body);
  c2.final();
  return [head, ct, c2.getAuthTag()];
}

function sealSeparate(size: number): Steady {
  const src = bodies(size);
  return { bytes: size, unit: "record", op: () => do_not_optimize(sealParts(src.next())) };
}

function sealConcat(size: number): Steady {
  const src = bodies(size);
  const probe = sealParts(src.next());
  const out = Buffer.concat(probe);
  const delta = (ptr(out) + 20 - ptr(probe[1]!)) & 4095;
  return {
    bytes: size,
    unit: "record",
    note: `ciphertext copy dst−src mod 4096 = ${delta}`,
    op: () => do_not_optimize(Buffer.concat(sealParts(src.next()))),
  };
}

function copyAligned(size: number): Steady {
  const src = bodies(size);
  const dst = Buffer.allocUnsafe(size + 64);
  return {
    bytes: size,
    unit: "copy",
    op: () => {
      const b = src.next();
      const at = (ptr(b) - ptr(dst)) & 63;
      dst.set(b, at);
      do_not_optimize(dst);
    },
  };
}

function batchSeal(size: number): Steady {
  const src = bodies(size);
  const sealer = new RecordSealer(KEY);
  const batch = Buffer.allocUnsafe(size + 64);
  const scratch = Buffer.allocUnsafe(size + RECORD_OVERHEAD + ALIGN_SLACK);
  return {
    bytes: size,
    unit: "record",
    op: () => {
      const b = src.next();
      const at = (ptr(b) - ptr(batch)) & 63;
      batch.set(b, at);
      do_not_optimize(sealer.seal(batch.subarray(at, at + size), undefined, scratch));
    },
  };
}

function sealvFrames(size: number): Steady {
  const src = bodies(size);
  const sealer = new RecordSealer(KEY);
  const scratch = Buffer.allocUnsafe(size + 4 * 64 + RECORD_OVERHEAD + ALIGN_SLACK);
  const header = new Uint8Array(64); // a 16-byte frame header and 48 pad bytes: payloads at multiples of 64
  const frame = size / 4;
  const pieces: Uint8Array[] = new Array(8);
  return {
    bytes: size,
    unit: "record",
    op: () => {
      const b = src.next();
      for (let f = 0; f < 4; f++) {
        pieces[2 * f] = header;
        pieces[2 * f + 1] = b.subarray(f * frame, (f + 1) * frame);
      }
      do_not_optimize(sealer.sealv(pieces, undefined, scratch));
    },
  };
}

/** A stream of records to open, made once; one iteration opens the next record. */
function openRecords(size: number): Steady {
  const src = bodies(size);
  const n = Math.max(4, Math.floor((2 << 20) / size)); // 2 MiB of records: about what one stripe's socket holds
  const sealer = new RecordSealer(KEY);
  const recs = Array.from({ length: n }, () => new Uint8Array(sealer.seal(src.next())));
  let opener = new RecordOpener(KEY);
  let i = 0;
  const out: Uint8Array[] = [];
  return {
    bytes: size,
    unit: "record",
    op: () => {
      if (i === n) {
        opener = new RecordOpener(KEY); // counters restart with the recorded stream
        i = 0;
      }
      out.length = 0;
      opener.push(recs[i++]!, out);
      do_not_optimize(out);
    },
  };
}

/** Records of `size` per 512 KiB session batch, and SealedPipe's pooled buffer (640 KiB) for them. */
function batchOf(size: number): { records: number; buffer: Uint8Array } {
  return { records: Math.max(1, Math.floor((512 * 1024) / size)), buffer: Buffer.allocUnsafe(640 * 1024) };
}

/** One iteration seals one batch of records into the pooled buffer; returns the batch's bytes. */
function sealBatchOp(size: number): { records: number; seal: () => Uint8Array } {
  const src = bodies(size);
  const sealer = new RecordSealer(KEY);
  const { records, buffer } = batchOf(size);
  const piece: Uint8Array[] = [new Uint8Array(0)];
  return {
    records,
    seal: () => {
      let at = 0;
      for (let r = 0; r < records; r++) {
        piece[0] = src.next();
        at = sealer.sealAt(piece, size, buffer, at);
      }
      return buffer.subarray(0, at);
    },
  };
}

function sealBatch(size: number): Steady {
  const { records, seal } = sealBatchOp(size);
  return { bytes: size * records, unit: "batch", note: `${records} records per batch`, op: () => do_not_optimize(seal()) };
}

function sealOpen(size: number): Steady {
  const src = bodies(size);
  const sealer = new RecordSealer(KEY);
  const opener = new RecordOpener(KEY);
  const scratch = Buffer.allocUnsafe(size + RECORD_OVERHEAD + ALIGN_SLACK);
  const out: Uint8Array[] = [];
  return {
    bytes: size,
    unit: "record",
    op: () => {
      out.length = 0;
      opener.push(sealer.seal(src.next(), undefined, scratch), out);
      do_not_optimize(out);
    },
  };
}

function helloCase(keyCount: number, valid: boolean): Steady {
  const keys = Array.from({ length: keyCount }, () => new Uint8Array(randomBytes(32)));
  const server: HandshakeAuth = { mode: "keyed", keys };
  const client: HandshakeAuth = { mode: "keyed", keys: [keys[keyCount - 1]!] };
  const header = { kind: KIND_JOIN, flags: 0, stripeIndex: 1, generation: 1, stripeCount: 8, timestampMs: Date.now(), window: 1 << 24, secret: new Uint8Array(32), options: [] };
  const bytes = valid ? encodeClientHello(client, new Uint8Array(16), header).bytes : new Uint8Array(randomBytes(140));
  const expect = valid ? "done" : "fail";
  if (readClientHello(bytes, server).status !== expect) throw new Error("hello bench input is not what it should be");
  return { bytes: 0, unit: "hello", op: () => do_not_optimize(readClientHello(bytes, server)) };
}

const target = { value: 256 * 1024, gbps: 2, label: "seal + open of 256 KiB records, one core (issue 9)" };
const recordCases: Case[] = [
  { name: "copy aligned $size", arg: "size", values: SIZES, setup: copyAligned },
  { name: "seal parts $size", arg: "size", values: SIZES, setup: sealSeparate },
  { name: "seal pooled $size", arg: "size", values: SIZES, setup: sealPooled },
  { name: "seal fresh $size", arg: "size", values: SIZES, setup: sealFresh },
  { name: "seal concat $size", arg: "size", values: SIZES, setup: sealConcat },
  { name: "batch+seal $size", arg: "size", values: SIZES, setup: batchSeal },
  { name: "sealv $size", arg: "size", values: SIZES, setup: sealvFrames },
  { name: "seal batch $size", arg: "size", values: [16 * 1024, 64 * 1024], setup: sealBatch },
  { name: "open $size", arg: "size", values: SIZES, setup: openRecords },
  { name: "seal+open $size", arg: "size", values: SIZES, setup: sealOpen, target },
];
const KEY_COUNTS = ["1 key", "16 keys"] as const;
const helloCases: Case<string>[] = [
  { name: "hello open $keys", arg: "keys", values: KEY_COUNTS, setup: (k: string) => helloCase(parseInt(k), true) },
  { name: "hello reject $keys", arg: "keys", values: KEY_COUNTS, setup: (k: string) => helloCase(parseInt(k), false) },
];
export const cases: Case<any>[] = [...recordCases, ...helloCases];

registerSummary(recordCases);
registerSummary(helloCases);
if (import.meta.main) await runStandalone(cases);
