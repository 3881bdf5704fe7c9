/**
 * Benchmark HTTP target: serves one body of --bytes bytes of the test stream (seed --seed) at every path,
 * for the short-connection benchmark (real curl through the SOCKS front).
 *
 *   bun bench/tools/http-target.ts --port P --bytes N [--seed S]
 *
 * stdout: {"event":"ready","port":P,"sha256":HEX} once listening; then {"event":"requests","n":K} on
 * SIGUSR1 (how many requests it served).
 */

import { StreamGen, emit, parseFlags } from "../lib/data.ts";

const f = parseFlags(process.argv.slice(2), ["--port", "--bytes", "--seed"], "usage: http-target.ts --port P --bytes N [--seed S]");
const bytes = Number(f.get("--bytes") ?? 10240);
const gen = new StreamGen(Number(f.get("--seed") ?? 1), bytes);
const parts: Uint8Array[] = [];
for (let c = gen.next(); c !== undefined; c = gen.next()) parts.push(c.slice());
const body = new Uint8Array(Buffer.concat(parts));
let n = 0;
const srv = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(f.get("--port") ?? 0),
  fetch() {
    n++;
    return new Response(body, { headers: { "content-type": "application/octet-stream" } });
  },
});
process.on("SIGUSR1", () => emit({ event: "requests", n }));
emit({ event: "ready", port: srv.port, sha256: new Bun.CryptoHasher("sha256").update(body).digest("hex") });
