/**
 * Test streams for the end-to-end suite: deterministic, cheap to make, and unique at every KiB, so a
 * lost, duplicated or reordered piece of at least 1 KiB changes the SHA-256 at the receiver.
 *
 * Byte p of stream `seed` is base[p mod 1 MiB] (xorshift bytes from the seed), except that the first
 * 8 bytes of every KiB hold (p >>> 10) and the seed as little-endian uint32. Generating a 256 KiB chunk
 * is one aligned copy plus 256 stamps (~25 GB/s here), so the generator never limits a run; hashing
 * (~1.5 GB/s) does, which is why the uncapped runs only count bytes.
 */

/** Chunk size handed to `write()`: 256 KiB, the size the capped link's own measurement used. */
export const CHUNK = 256 * 1024;
const BASE = 1 << 20;
const STAMP_EVERY = 1024;

const bases = new Map<number, Uint8Array>();

function baseFor(seed: number): Uint8Array {
  let b = bases.get(seed);
  if (b) return b;
  b = new Uint8Array(BASE);
  const words = new Uint32Array(b.buffer);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  bases.set(seed, b);
  return b;
}

/** Produces the stream `seed` chunk by chunk, up to `total` bytes. */
export class StreamGen {
  /** Bytes produced so far. */
  pos = 0;
  private readonly base: Uint8Array;
  private readonly buf = new Uint8Array(CHUNK);
  private readonly view = new DataView(this.buf.buffer);

  constructor(
    readonly seed: number,
    readonly total: number,
  ) {
    this.base = baseFor(seed);
  }

  /** The next chunk, or undefined at the end. The buffer is reused: it is valid until the next call. */
  next(): Uint8Array | undefined {
    const len = Math.min(CHUNK, this.total - this.pos);
    if (len <= 0) return undefined;
    const from = this.pos % BASE; // pos is a multiple of CHUNK, which divides BASE: no wrap-around
    this.buf.set(this.base.subarray(from, from + len));
    for (let k = 0; k + 8 <= len; k += STAMP_EVERY) {
      this.view.setUint32(k, (this.pos + k) >>> 10, true);
      this.view.setUint32(k + 4, this.seed >>> 0, true);
    }
    this.pos += len;
    return len === CHUNK ? this.buf : this.buf.subarray(0, len);
  }
}

/** Running SHA-256, or a no-op when hashing is off (uncapped runs). */
export class Digest {
  private readonly h: Bun.CryptoHasher | undefined;
  constructor(on: boolean) {
    this.h = on ? new Bun.CryptoHasher("sha256") : undefined;
  }
  update(b: Uint8Array): void {
    this.h?.update(b);
  }
  /** Hex digest, or null when hashing is off. */
  hex(): string | null {
    return this.h ? this.h.digest("hex") : null;
  }
}

/** Wall-clock time in ms with sub-ms resolution, comparable across processes on one machine. */
export function now(): number {
  return performance.timeOrigin + performance.now();
}

/** Error code of a socket close/error, if any. */
export function errCode(err: unknown): string | null {
  if (err === undefined || err === null) return null;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string") return code;
  return err instanceof Error ? err.message : String(err);
}

/** Parses `--flag value` / `--flag=value` pairs; unknown flags are an error (exit 2). */
export function parseFlags(argv: string[], allowed: readonly string[], usage: string): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (!allowed.includes(name)) {
      process.stderr.write(`unknown argument "${a}"\n${usage}\n`);
      process.exit(2);
    }
    const v = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (v === undefined) {
      process.stderr.write(`${name} needs a value\n${usage}\n`);
      process.exit(2);
    }
    out.set(name, v);
  }
  return out;
}

/** Writes one JSON line on stdout (the tools' report channel). */
export function emit(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}
