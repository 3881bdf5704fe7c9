/**
 * The record layer of protocol v2: AES-256-GCM (node:crypto) under one key per stripe connection and
 * direction, with counter nonces.
 *
 *   record = seal_n(u32 BE body length)   4 + 16 bytes
 *          ‖ seal_n+1(body)               length + 16 bytes
 *   nonce  = 4 zero bytes ‖ u64 BE counter; the counter starts at 0 under each key, +1 per seal
 *
 * The length is sealed on its own so that the receiver authenticates it before it buffers a byte of the
 * body (a forged length costs an attacker nothing but the stripe). A receiver never hands out plaintext
 * before the record's tag verified: decipher.update() output is held until final() succeeds.
 *
 * Performance (bench/secure.bench.ts): node:crypto always returns ciphertext in a
 * fresh buffer, so a record that leaves in one socket write costs one copy of the ciphertext next to its
 * sealed length. That copy runs at memory speed only when destination and source are co-aligned: a
 * destination 1–31 bytes past its source (mod 4096) is 10–20× slower on this CPU
 * (docs/bun-sockets.md, "Copying"; measured up to +31 here), and a plain concatenation lands at +20. The
 * sealer therefore offsets the record in its output buffer so the ciphertext copy is 64-byte co-aligned,
 * and takes a caller's reusable output buffer: a fresh 256 KiB buffer costs more than the copy (first touch).
 * sealv() encrypts scattered pieces (frame headers, payload views) straight into one record, so the
 * sealing can be the send path's only copy instead of one more after the batch copy.
 */

import { createCipheriv, createDecipheriv, type CipherGCM, type DecipherGCM } from "node:crypto";
import { ptr } from "bun:ffi";
import { KEY_SIZE, LENGTH_RECORD_SIZE, MAX_RECORD, MAX_SEALS, NONCE_SIZE, RECORD_OVERHEAD, TAG_SIZE } from "./constants.ts";
import { RecordError } from "./errors.ts";

const CIPHER = "aes-256-gcm";
/** Bodies below this are not aligned: a small misaligned copy costs less than the ptr() lookups. */
const ALIGN_FROM = 2048;
/** Spare bytes an output buffer needs beyond the record to allow any 64-byte alignment offset. */
export const ALIGN_SLACK = 63;

/** Bytes on the wire for a body of `length` bytes. */
export function recordSize(length: number): number {
  return length + RECORD_OVERHEAD;
}

/** Writes the nonce of seal number `counter` (< 2^53) into `nonce` (12 bytes, first 4 stay zero). */
export function writeNonce(nonce: Uint8Array, counter: number): void {
  const hi = Math.floor(counter / 0x1_0000_0000);
  const lo = counter >>> 0;
  nonce[4] = hi >>> 24;
  nonce[5] = (hi >>> 16) & 0xff;
  nonce[6] = (hi >>> 8) & 0xff;
  nonce[7] = hi & 0xff;
  nonce[8] = lo >>> 24;
  nonce[9] = (lo >>> 16) & 0xff;
  nonce[10] = (lo >>> 8) & 0xff;
  nonce[11] = lo & 0xff;
}

/** Spare buffer for copyUnaliased(): grows to the largest piece bounced (≤ MAX_RECORD + a page). */
let bounce = new Uint8Array(0);

/**
 * Copies `src` into `dst` at `at`, at memory speed whatever the two addresses: a destination 1–63
 * bytes past its source (mod 4096) copies 10–20× slower on this CPU (docs/bun-sockets.md, "Copying"),
 * so such a copy goes through a spare buffer half a page away from both. Small copies go straight.
 */
export function copyUnaliased(dst: Uint8Array, at: number, src: Uint8Array): void {
  const n = src.byteLength;
  if (n >= ALIGN_FROM) {
    const delta = (ptr(dst) + at - ptr(src)) & 4095;
    if (delta !== 0 && delta < 64) {
      if (bounce.byteLength < n + 4096) bounce = new Uint8Array(Math.max(n, 64 * 1024) + 4096);
      const off = (ptr(src) + 2048 - ptr(bounce)) & 4095;
      const mid = bounce.subarray(off, off + n);
      mid.set(src);
      dst.set(mid, at);
      return;
    }
  }
  dst.set(src, at);
}

function checkKey(key: Uint8Array): Uint8Array {
  if (key.byteLength !== KEY_SIZE) throw new Error(`record key must be ${KEY_SIZE} bytes, got ${key.byteLength}`);
  return key;
}

function readU32(buf: Uint8Array, pos: number): number {
  return ((buf[pos]! << 24) | (buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!) >>> 0;
}

/**
 * Opens a sealed length (the first 20 bytes of a record) made with seal number `counter`. Returns the
 * body length, or undefined when it does not authenticate. Pure; used by the opener and the handshake
 * codec (which tries each of the server's keys in turn).
 */
export function openLength(key: Uint8Array, counter: number, sealed: Uint8Array, aad?: Uint8Array): number | undefined {
  const nonce = new Uint8Array(NONCE_SIZE);
  writeNonce(nonce, counter);
  const d = createDecipheriv(CIPHER, key, nonce) as DecipherGCM;
  if (aad) d.setAAD(aad);
  const plain = d.update(sealed.subarray(0, 4));
  d.setAuthTag(sealed.subarray(4, LENGTH_RECORD_SIZE));
  try {
    d.final();
  } catch {
    return undefined;
  }
  return readU32(plain, 0);
}

/**
 * Opens a whole body (`ct`, then its 16-byte `tag`) made with seal number `counter`. Returns the
 * plaintext, or undefined when it does not authenticate. Pure.
 */
export function openBody(key: Uint8Array, counter: number, ct: Uint8Array, tag: Uint8Array, aad?: Uint8Array): Uint8Array | undefined {
  const nonce = new Uint8Array(NONCE_SIZE);
  writeNonce(nonce, counter);
  const d = createDecipheriv(CIPHER, key, nonce) as DecipherGCM;
  if (aad) d.setAAD(aad);
  const plain = d.update(ct);
  d.setAuthTag(tag);
  try {
    d.final();
  } catch {
    return undefined;
  }
  return plain;
}

/**
 * Seals records under one key. Each seal() makes one whole record in ONE contiguous buffer, ready for a
 * single socket write. Never reuses a nonce: the counter only grows, and sealing stops with
 * E_RECORD_COUNTER before it could wrap.
 */
export class RecordSealer {
  private readonly key: Uint8Array;
  private next: number;
  private readonly nonce = new Uint8Array(NONCE_SIZE);
  private readonly lengthPlain = new Uint8Array(4);

  /**
   * `counter`: the first seal number to use (2 after a header or reply record sealed with this key).
   * `maxBody`: the largest body accepted (the receiver's limit).
   */
  constructor(
    key: Uint8Array,
    counter = 0,
    readonly maxBody = MAX_RECORD,
  ) {
    this.key = new Uint8Array(checkKey(key));
    this.next = counter;
  }

  /** The next seal number (two per record). */
  get counter(): number {
    return this.next;
  }

  /**
   * Seals `body` as one record. `aad` (header records only) is authenticated with both seals. `scratch`,
   * when it holds at least recordSize(body) + ALIGN_SLACK bytes, receives the record (no allocation); the
   * result is then a subarray of it, and the caller must not reuse `scratch` while the result is in use.
   * Throws RecordError E_RECORD_EMPTY, E_RECORD_TOO_LARGE or E_RECORD_COUNTER.
   */
  seal(body: Uint8Array, aad?: Uint8Array, scratch?: Uint8Array): Uint8Array {
    return this.sealv([body], aad, scratch);
  }

  /**
   * Seals the concatenation of `pieces` as one record without concatenating the plaintext first: each
   * piece is encrypted straight from where it lies, so a sender can seal frame headers and payload views
   * of the app's receive chunks in place of copying them into a batch buffer first (the sealing is then
   * the send path's one copy). The largest piece's ciphertext is copied co-aligned; update() returns
   * 64-byte-aligned buffers for pieces of a few KiB and more, so every large piece whose offset in the
   * body is a multiple of 64 is copied co-aligned too. Same contract as seal() otherwise.
   */
  sealv(pieces: readonly Uint8Array[], aad?: Uint8Array, scratch?: Uint8Array): Uint8Array {
    let length = 0;
    for (const p of pieces) length += p.byteLength;
    this.check(length);
    const { lengthCt, lengthTag } = this.sealLength(length, aad);
    const c2 = this.cipher(aad);
    const cts: Uint8Array[] = [];
    let big = 0; // index of the largest ciphertext piece, and its offset in the body
    let bigAt = 0;
    let at = 0;
    for (const p of pieces) {
      if (p.byteLength === 0) continue;
      const ct = c2.update(p);
      if (ct.byteLength > (cts[big]?.byteLength ?? 0)) {
        big = cts.length;
        bigAt = at;
      }
      cts.push(ct);
      at += ct.byteLength;
    }
    const rest = c2.final(); // empty for GCM (a stream mode); kept general rather than assumed
    if (rest.byteLength > 0) cts.push(rest);
    const tag = c2.getAuthTag();

    const size = length + RECORD_OVERHEAD;
    const aligned = cts[big]!.byteLength >= ALIGN_FROM;
    const base = scratch !== undefined && scratch.byteLength >= size + ALIGN_SLACK ? scratch : Buffer.allocUnsafe(size + (aligned ? ALIGN_SLACK : 0));
    // Offset the record so the largest ciphertext piece is 64-byte co-aligned with update()'s output.
    const pad = aligned ? (ptr(cts[big]!) - (ptr(base) + LENGTH_RECORD_SIZE + bigAt)) & 63 : 0;
    const out = base.subarray(pad, pad + size);
    out.set(lengthCt, 0);
    out.set(lengthTag, 4);
    at = LENGTH_RECORD_SIZE;
    for (const ct of cts) {
      copyUnaliased(out, at, ct); // the largest is co-aligned; another piece may land anywhere
      at += ct.byteLength;
    }
    out.set(tag, at);
    return out;
  }

  /**
   * Seals the concatenation of `pieces` (`length` bytes) as one record written into `dst` at offset
   * `at`, and returns the offset just past it. `dst` must hold recordSize(length) bytes from `at`. For
   * a sender that puts several records in one buffer (one socket write): the record cannot be placed
   * for alignment, so each large ciphertext piece is copied with copyUnaliased(). Throws like seal().
   */
  sealAt(pieces: readonly Uint8Array[], length: number, dst: Uint8Array, at: number): number {
    this.check(length);
    if (dst.byteLength - at < length + RECORD_OVERHEAD) throw new RangeError(`sealAt: ${dst.byteLength - at} bytes of room for a ${length}-byte record`);
    const { lengthCt, lengthTag } = this.sealLength(length, undefined);
    dst.set(lengthCt, at);
    dst.set(lengthTag, at + 4);
    const c2 = this.cipher(undefined);
    let pos = at + LENGTH_RECORD_SIZE;
    const end = pos + length;
    for (const p of pieces) {
      if (p.byteLength === 0) continue;
      const ct = c2.update(p);
      if (pos + ct.byteLength > end) throw new RangeError("sealAt: pieces hold more than `length` bytes");
      copyUnaliased(dst, pos, ct);
      pos += ct.byteLength;
    }
    const rest = c2.final(); // empty for GCM (a stream mode); kept general rather than assumed
    if (rest.byteLength > 0) {
      if (pos + rest.byteLength > end) throw new RangeError("sealAt: pieces hold more than `length` bytes");
      dst.set(rest, pos);
      pos += rest.byteLength;
    }
    if (pos !== end) throw new RangeError(`sealAt: pieces hold ${pos - at - LENGTH_RECORD_SIZE} bytes, not ${length}`);
    dst.set(c2.getAuthTag(), pos);
    return pos + TAG_SIZE;
  }

  /** Refuses a record that must not be sealed (typed errors, before any seal number is used). */
  private check(length: number): void {
    if (length === 0) throw new RecordError("E_RECORD_EMPTY", "cannot seal an empty record");
    if (length > this.maxBody) {
      throw new RecordError("E_RECORD_TOO_LARGE", `record of ${length} bytes exceeds the maximum of ${this.maxBody}`);
    }
    if (this.next + 2 > MAX_SEALS) {
      throw new RecordError("E_RECORD_COUNTER", `key used up: ${this.next} seals made, the limit is ${MAX_SEALS}`);
    }
  }

  /** The first seal of a record: its body length (4 ciphertext bytes and their tag). */
  private sealLength(length: number, aad: Uint8Array | undefined): { lengthCt: Uint8Array; lengthTag: Uint8Array } {
    const lp = this.lengthPlain;
    lp[0] = length >>> 24;
    lp[1] = (length >>> 16) & 0xff;
    lp[2] = (length >>> 8) & 0xff;
    lp[3] = length & 0xff;
    const c1 = this.cipher(aad);
    const lengthCt = c1.update(lp);
    c1.final();
    return { lengthCt, lengthTag: c1.getAuthTag() };
  }

  /** A cipher for the next seal number. */
  private cipher(aad: Uint8Array | undefined): CipherGCM {
    writeNonce(this.nonce, this.next++);
    const c = createCipheriv(CIPHER, this.key, this.nonce) as CipherGCM;
    if (aad) c.setAAD(aad);
    return c;
  }
}

/**
 * Incremental opener of a record stream under one key: push() chunks split anywhere; the plaintext of
 * each record whose tag verified is appended to `out` (one or more pieces, zero-copy from the decipher).
 * Nothing of a record is appended before its tag verified. Throws RecordError (E_RECORD_AUTH,
 * E_RECORD_TOO_LARGE, E_RECORD_EMPTY, E_RECORD_COUNTER); after a throw the opener refuses all input.
 * Holds at most one record's plaintext (≤ maxBody) plus 20 bytes.
 */
export class RecordOpener {
  private readonly key: Uint8Array;
  private next: number;
  private readonly nonce = new Uint8Array(NONCE_SIZE);
  /** Records opened so far (for messages). */
  records = 0;
  // Length phase: a sealed length split across chunks is gathered here.
  private readonly lengthBuf = new Uint8Array(LENGTH_RECORD_SIZE);
  private lengthFill = 0;
  // Body phase (decipher set): ciphertext bytes still expected, plaintext held until the tag verifies.
  private decipher: DecipherGCM | undefined;
  private ctLeft = 0;
  private held: Uint8Array[] = [];
  private heldBytes = 0;
  private readonly tagBuf = new Uint8Array(TAG_SIZE);
  private tagFill = 0;
  private failed: RecordError | undefined;

  /**
   * `counter`: the first seal number expected (2 after a header or reply record under this key).
   * `maxBody`: the largest body accepted; a larger authenticated length is E_RECORD_TOO_LARGE.
   */
  constructor(
    key: Uint8Array,
    counter = 0,
    readonly maxBody = MAX_RECORD,
  ) {
    this.key = new Uint8Array(checkKey(key));
    this.next = counter;
  }

  /** The next seal number expected. */
  get counter(): number {
    return this.next;
  }

  /** True between records: the stream may end here. */
  get atBoundary(): boolean {
    return this.decipher === undefined && this.lengthFill === 0;
  }

  /** Bytes of the current partial record held (sealed length, plaintext not yet verified, tag). */
  get buffered(): number {
    return this.lengthFill + this.heldBytes + this.tagFill;
  }

  /** Feeds `chunk`; appends each verified record's plaintext pieces to `out`. */
  push(chunk: Uint8Array, out: Uint8Array[]): void {
    if (this.failed) throw this.failed;
    try {
      this.consume(chunk, out);
    } catch (err) {
      if (err instanceof RecordError) this.fail(err);
      throw err;
    }
  }

  private consume(chunk: Uint8Array, out: Uint8Array[]): void {
    const end = chunk.byteLength;
    let pos = 0;
    while (pos < end) {
      let d = this.decipher;
      if (d === undefined) {
        let sealed: Uint8Array;
        if (this.lengthFill === 0 && end - pos >= LENGTH_RECORD_SIZE) {
          sealed = chunk.subarray(pos, pos + LENGTH_RECORD_SIZE);
          pos += LENGTH_RECORD_SIZE;
        } else {
          const take = Math.min(LENGTH_RECORD_SIZE - this.lengthFill, end - pos);
          this.lengthBuf.set(chunk.subarray(pos, pos + take), this.lengthFill);
          this.lengthFill += take;
          pos += take;
          if (this.lengthFill < LENGTH_RECORD_SIZE) return;
          this.lengthFill = 0;
          sealed = this.lengthBuf;
        }
        this.checkCounter();
        const length = openLength(this.key, this.next, sealed);
        if (length === undefined) throw new RecordError("E_RECORD_AUTH", `record ${this.records}: length did not authenticate`);
        this.next++;
        if (length === 0) throw new RecordError("E_RECORD_EMPTY", `record ${this.records}: empty record`);
        if (length > this.maxBody) {
          throw new RecordError("E_RECORD_TOO_LARGE", `record ${this.records}: ${length} bytes exceeds the maximum of ${this.maxBody}`);
        }
        writeNonce(this.nonce, this.next++);
        d = createDecipheriv(CIPHER, this.key, this.nonce) as DecipherGCM;
        this.decipher = d;
        this.ctLeft = length;
        continue;
      }
      if (this.ctLeft > 0) {
        const take = Math.min(this.ctLeft, end - pos);
        const plain = d.update(chunk.subarray(pos, pos + take));
        if (plain.byteLength > 0) {
          this.held.push(plain);
          this.heldBytes += plain.byteLength;
        }
        this.ctLeft -= take;
        pos += take;
        continue;
      }
      let tag: Uint8Array;
      if (this.tagFill === 0 && end - pos >= TAG_SIZE) {
        tag = chunk.subarray(pos, pos + TAG_SIZE);
        pos += TAG_SIZE;
      } else {
        const take = Math.min(TAG_SIZE - this.tagFill, end - pos);
        this.tagBuf.set(chunk.subarray(pos, pos + take), this.tagFill);
        this.tagFill += take;
        pos += take;
        if (this.tagFill < TAG_SIZE) return;
        tag = this.tagBuf;
      }
      this.tagFill = 0;
      d.setAuthTag(tag);
      let rest: Uint8Array;
      try {
        rest = d.final();
      } catch {
        throw new RecordError("E_RECORD_AUTH", `record ${this.records}: body did not authenticate`);
      }
      // Verified: release the record's plaintext.
      for (const p of this.held) out.push(p);
      if (rest.byteLength > 0) out.push(rest);
      this.held = [];
      this.heldBytes = 0;
      this.decipher = undefined;
      this.records++;
    }
  }

  private checkCounter(): void {
    if (this.next + 2 > MAX_SEALS) {
      throw new RecordError("E_RECORD_COUNTER", `key used up: ${this.next} seals opened, the limit is ${MAX_SEALS}`);
    }
  }

  private fail(err: RecordError): void {
    this.failed = err;
    this.held = [];
    this.heldBytes = 0;
    this.decipher = undefined;
  }
}
