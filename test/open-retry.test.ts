/**
 * A session whose opening stripe is lost before the server's reply reached the client: the client dials
 * the OPEN again (same session id and secret, fresh salt) instead of failing the app's connection. Two
 * places the loss can happen, over real sockets through a fault proxy that resets the first connection:
 *   - on its first bytes up (the server may or may not have seen the OPEN);
 *   - on the server's reply (the server has the session: the second OPEN must join it, and the 0-RTT
 *     data it already got must not be delivered twice).
 * The app's data arrives exact both ways, with one target connection. And a peer that resets every
 * connection is asked OPEN_ATTEMPTS times, not forever.
 */

import { describe, expect, test } from "bun:test";
import { startFaultProxy } from "../src/link/fault.ts";
import { startClient } from "../src/proxy/client.ts";
import type { StripeAuth } from "../src/proxy/handshake.ts";
import { startServer } from "../src/proxy/server.ts";
import { KEYED, PLAIN } from "./helpers/keys.ts";
import { appExchange, randomData, sha256, startTarget } from "./helpers/net.ts";
import { cleanups, until } from "./helpers/util.ts";

const LOOP = "127.0.0.1";
const cleanup = cleanups();

async function lossOfTheOpening(auth: StripeAuth, up: boolean, seed: number): Promise<{ clientLogs: string[]; serverLogs: string[]; targetConns: number }> {
  const target = startTarget({ mode: "echo" });
  const serverLogs: string[] = [];
  const server = startServer({ auth, listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: target.port }, log: (l) => serverLogs.push(l) });
  let done = false;
  const fault = await startFaultProxy({
    targetHost: LOOP,
    targetPort: server.port,
    // The first chunk of connection 0 in the chosen direction: reset both sides before it is forwarded.
    tap(index, dirUp) {
      if (index !== 0 || dirUp !== up || done) return;
      done = true;
      fault.connections()[0]!.reset();
    },
  });
  const clientLogs: string[] = [];
  const client = startClient({ auth, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port: fault.port }, stripes: 4, log: (l) => clientLogs.push(l) });
  cleanup.push(async () => {
    client.stop();
    server.stop();
    await fault.stop();
    target.stop();
  });
  const data = randomData(1 << 20, seed);
  const r = await appExchange(client.port, data, { timeoutMs: 60_000 });
  expect(r.error).toBeUndefined();
  expect(r.cleanEnd).toBe(true);
  expect(r.received.byteLength).toBe(data.byteLength);
  expect(sha256(r.received)).toBe(sha256(data));
  expect(done).toBe(true);
  return { clientLogs, serverLogs, targetConns: target.conns.length };
}

describe("the opening stripe lost before the reply", () => {
  for (const [name, auth] of [
    ["keyed", KEYED],
    ["plain", PLAIN],
  ] as const) {
    for (const up of [true, false]) {
      test(`${name}: reset on its ${up ? "first bytes up" : "reply"}: the OPEN is dialled again, 1 MiB echoes exact, one target connection`, async () => {
        const r = await lossOfTheOpening(auth, up, up ? 11 : 12);
        expect(r.targetConns).toBe(1);
        // One session on the server: a second OPEN that proves the secret joins the one the first opened.
        expect(r.serverLogs.filter((l) => / start from /.test(l)).length).toBe(1);
        expect(r.clientLogs.filter((l) => /opening stripe lost before the reply \(\w+\): dialling the OPEN again \(attempt 2 of 3\)/.test(l)).length).toBe(1);
      });
    }
  }
});

test("a peer that resets every connection: the OPEN is dialled 3 times, then the app connection is reset and the reason logged", async () => {
  let accepted = 0;
  const l = Bun.listen({
    hostname: LOOP,
    port: 0,
    socket: {
      open(s) {
        accepted++;
        s.terminate(); // RST
      },
      data() {},
    },
  });
  const logs: string[] = [];
  const client = startClient({ auth: KEYED, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port: l.port }, stripes: 4, log: (x) => logs.push(x) });
  cleanup.push(() => {
    client.stop();
    l.stop(true);
  });
  const r = await appExchange(client.port, randomData(1000, 13), { timeoutMs: 30_000 });
  expect(r.cleanEnd).toBe(false);
  expect(r.received.byteLength).toBe(0);
  await until(() => logs.some((x) => / end /.test(x)), () => `the session's end line (${logs.join(" | ")})`);
  expect(accepted).toBe(3);
  expect(logs.filter((x) => /dialling the OPEN again/.test(x)).length).toBe(2);
  expect(logs.find((x) => / end /.test(x))).toMatch(new RegExp(`connected to 127\\.0\\.0\\.1:${l.port}, but it did not answer as a tcp-striper server proxy`));
});
