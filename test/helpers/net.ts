/**
 * Test helpers over real loopback sockets: a target server that echoes or answers, and an app client
 * that sends a buffer, half-closes, and collects what comes back — all with backpressure and hashes.
 */

import type { Socket, TCPSocketConnectOptions, TCPSocketListenOptions, TCPSocketListener } from "bun";

/** sha256 hex of the bytes. */
export function sha256(data: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(data).digest("hex");
}

/** Random bytes from a seeded generator (fast; crypto quality not needed). */
export function randomData(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  const words = new Uint32Array(out.buffer, 0, size >>> 2);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  for (let i = words.length * 4; i < size; i++) out[i] = i & 0xff;
  return out;
}

interface Conn {
  out: Uint8Array;
  sent: number;
  received: Uint8Array[];
  receivedBytes: number;
  gotEnd: boolean;
  closeErr?: Error;
  resolve: (r: AppResult) => void;
  shutdownAfterSend: boolean;
  done: boolean;
}

/** What an app client saw. */
export interface AppResult {
  received: Uint8Array;
  /** The peer's FIN arrived (clean EOF) before the connection closed. */
  cleanEnd: boolean;
  /** The connection ended with an error (e.g. ECONNRESET) or closed without EOF. */
  error?: string;
  ms: number;
}

function pump(s: Socket<Conn>): void {
  const c = s.data;
  while (c.sent < c.out.byteLength) {
    const n = s.write(c.out.subarray(c.sent, Math.min(c.out.byteLength, c.sent + 256 * 1024)));
    if (n <= 0) return;
    c.sent += n;
  }
  if (c.shutdownAfterSend && !c.done) {
    c.done = true;
    s.shutdown();
  }
}

/**
 * Connects to host:port, sends `data`, shuts down its write side, and resolves with everything received
 * once the connection closes (clean EOF or error). Rejects on connect failure.
 */
export async function appExchange(
  port: number,
  data: Uint8Array,
  opts: { host?: string; shutdown?: boolean; timeoutMs?: number; onData?: (receivedBytes: number) => void } = {},
): Promise<AppResult> {
  const started = performance.now();
  return new Promise<AppResult>((resolve, reject) => {
    const conn: Conn = {
      out: data,
      sent: 0,
      received: [],
      receivedBytes: 0,
      gotEnd: false,
      resolve,
      shutdownAfterSend: opts.shutdown ?? true,
      done: false,
    };
    let settled = false;
    const finish = (err?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ received: Buffer.concat(conn.received), cleanEnd: conn.gotEnd, error: err, ms: performance.now() - started });
    };
    const timer = setTimeout(() => finish(`timeout after ${opts.timeoutMs ?? 60000} ms with ${conn.receivedBytes} bytes received`), opts.timeoutMs ?? 60000);
    // allowHalfOpen works (see the notes) but is missing from bun-types.
    const options: TCPSocketConnectOptions<Conn> & { allowHalfOpen: true } = {
      hostname: opts.host ?? "127.0.0.1",
      port,
      data: conn,
      allowHalfOpen: true,
      socket: {
        open: (s) => pump(s),
        drain: (s) => pump(s),
        data: (s, chunk) => {
          conn.received.push(chunk);
          conn.receivedBytes += chunk.byteLength;
          opts.onData?.(conn.receivedBytes);
        },
        end: (s) => {
          conn.gotEnd = true;
          if (conn.sent >= conn.out.byteLength && conn.done) {
            s.end();
          }
        },
        close: (s, err) => {
          // After our own shutdown(), Bun reports the peer's FIN as a plain close with no `end` event.
          if (err) finish((err as { code?: string }).code ?? err.message);
          else if (!conn.gotEnd && !conn.done) finish("closed without EOF");
          else {
            conn.gotEnd = true;
            finish(undefined);
          }
        },
        error: (s, err) => finish(err.message),
        connectError: (s, err) => {
          settled = true;
          clearTimeout(timer);
          reject(err);
        },
      },
    };
    Bun.connect<Conn>(options).catch((err: unknown) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        reject(err);
      }
    });
  });
}

/** A connection a test drives step by step: send, wait for so many bytes back, end. */
export interface Conversation {
  /** Everything received so far. */
  readonly receivedBytes: number;
  /** Queues bytes (written with backpressure). */
  send(data: Uint8Array): void;
  /** Resolves once `n` bytes in all have been received; rejects if the connection ends first. */
  received(n: number, ms?: number): Promise<Uint8Array>;
  /** Half-closes and resolves with how it ended once the peer closes too. */
  end(): Promise<AppResult>;
  /** Resolves with how it ended, whenever it does. */
  readonly ended: Promise<AppResult>;
}

/** Opens a connection to 127.0.0.1:`port` for a Conversation; `keep: false` counts what arrives without keeping it. */
export async function converse(port: number, opts: { keep?: boolean } = {}): Promise<Conversation> {
  const keep = opts.keep ?? true;
  const started = performance.now();
  const chunks: Uint8Array[] = [];
  const queue: Uint8Array[] = [];
  let receivedBytes = 0;
  let gotEnd = false;
  let shut = false;
  let finished: AppResult | undefined;
  let resolveEnded!: (r: AppResult) => void;
  const ended = new Promise<AppResult>((r) => (resolveEnded = r));
  const wakers = new Set<() => void>();
  const finish = (error?: string) => {
    if (finished) return;
    finished = { received: Buffer.concat(chunks), cleanEnd: gotEnd && error === undefined, error, ms: performance.now() - started };
    resolveEnded(finished);
    for (const w of wakers) w();
  };
  const flush = (s: Socket<undefined>) => {
    while (queue.length > 0) {
      const b = queue[0]!;
      const n = s.write(b);
      if (n < b.byteLength) {
        queue[0] = b.subarray(Math.max(0, n));
        return;
      }
      queue.shift();
    }
    if (shut) s.shutdown();
  };
  const options: TCPSocketConnectOptions<undefined> & { allowHalfOpen: true } = {
    hostname: "127.0.0.1",
    port,
    data: undefined,
    allowHalfOpen: true,
    socket: {
      drain: (s) => flush(s),
      data: (_s, chunk) => {
        if (keep) chunks.push(chunk);
        receivedBytes += chunk.byteLength;
        for (const w of wakers) w();
      },
      end: () => {
        gotEnd = true;
      },
      close: (_s, err) => {
        // After our own shutdown(), Bun reports the peer's FIN as a plain close with no `end` event.
        if (err) finish((err as { code?: string }).code ?? err.message);
        else if (!gotEnd && !shut) finish("closed without EOF");
        else {
          gotEnd = true;
          finish(undefined);
        }
      },
      error: (_s, err) => finish(err.message),
    },
  };
  const socket = await Bun.connect<undefined>(options);
  return {
    get receivedBytes() {
      return receivedBytes;
    },
    send(data) {
      queue.push(data);
      flush(socket);
    },
    received(n, ms = 60_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => done(new Error(`${receivedBytes} of ${n} bytes received within ${ms} ms`)), ms);
        const check = () => {
          if (receivedBytes >= n) done();
          else if (finished) done(new Error(`the connection ended (${finished.error ?? "EOF"}) after ${receivedBytes} of ${n} bytes`));
        };
        const done = (err?: Error) => {
          clearTimeout(timer);
          wakers.delete(check);
          if (err) reject(err);
          else resolve(Buffer.concat(chunks));
        };
        wakers.add(check);
        check();
      });
    },
    end() {
      shut = true;
      flush(socket);
      return ended;
    },
    ended,
  };
}

/** Per-connection record of a target server. */
export interface TargetConn {
  received: Uint8Array[];
  receivedBytes: number;
  gotEnd: boolean;
  closed: boolean;
  error?: string;
}

/** A target server. mode "echo" sends everything back; "reply" reads to EOF then answers with reply(data). */
export interface Target {
  port: number;
  conns: TargetConn[];
  stop(): void;
}

interface TState extends TargetConn {
  out: Uint8Array[];
  closing: boolean;
  paused: boolean;
}

/**
 * Starts a target on 127.0.0.1:0. "echo": echoes with backpressure and half-closes after the client's
 * FIN. "reply": collects until FIN, then sends `reply(received)` and half-closes. `readDelayMs` makes it
 * a slow reader (pause after each chunk). `holdEnd`: what the target does on the client's FIN (the reply,
 * its own FIN) waits until this promise resolves, so a test can keep connections open on a condition.
 */
export function startTarget(opts: {
  mode: "echo" | "reply";
  reply?: (data: Uint8Array) => Uint8Array;
  readDelayMs?: number;
  host?: string;
  holdEnd?: Promise<unknown>;
}): Target {
  const conns: TargetConn[] = [];
  const flush = (s: Socket<TState>) => {
    const st = s.data;
    while (st.out.length > 0) {
      const b = st.out[0]!;
      const n = s.write(b);
      if (n < 0) return;
      if (n < b.byteLength) {
        st.out[0] = b.subarray(n);
        if (!st.paused) {
          st.paused = true;
          s.pause();
        }
        return;
      }
      st.out.shift();
    }
    if (st.paused && opts.readDelayMs === undefined) {
      st.paused = false;
      s.resume();
    }
    if (st.closing) {
      st.closing = false;
      s.shutdown();
    }
  };
  const options: TCPSocketListenOptions<TState> & { allowHalfOpen: true } = {
    hostname: opts.host ?? "127.0.0.1",
    port: 0,
    allowHalfOpen: true,
    socket: {
      open(s) {
        const st: TState = { received: [], receivedBytes: 0, gotEnd: false, closed: false, out: [], closing: false, paused: false };
        s.data = st;
        conns.push(st);
      },
      data(s, chunk) {
        const st = s.data;
        st.receivedBytes += chunk.byteLength;
        if (opts.mode === "echo") {
          st.out.push(chunk);
          flush(s);
        } else st.received.push(chunk);
        if (opts.readDelayMs !== undefined) {
          s.pause();
          setTimeout(() => s.resume(), opts.readDelayMs);
        }
      },
      drain(s) {
        flush(s);
      },
      end(s) {
        const st = s.data;
        st.gotEnd = true;
        const answer = () => {
          if (st.closed) return;
          if (opts.mode === "reply") st.out.push(opts.reply!(Buffer.concat(st.received)));
          st.closing = true;
          flush(s);
        };
        if (opts.holdEnd) void opts.holdEnd.then(answer);
        else answer();
      },
      close(s, err) {
        if (!s.data) return;
        s.data.closed = true;
        if (err) s.data.error = (err as { code?: string }).code ?? err.message;
        else if (!s.data.gotEnd) s.data.error = "closed without EOF";
      },
      error(s, err) {
        if (s.data) s.data.error = err.message;
      },
    },
  };
  const listener: TCPSocketListener<TState> = Bun.listen<TState>(options);
  return { port: listener.port, conns, stop: () => listener.stop(true) };
}
