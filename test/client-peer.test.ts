/**
 * What the client says when --peer is not a server proxy (issue 12: it logged "unreachable" although it
 * had connected). Real sockets on loopback: a closed port, a service that answers something else (an
 * HTTP server's 400), and one that accepts and stays silent. Each must end the app's connection with a
 * reset and name the cause; only the closed port is "unreachable".
 */

import { expect, test } from "bun:test";
import type { Socket } from "bun";
import { startClient } from "../src/proxy/client.ts";
import { appExchange, randomData } from "./helpers/net.ts";
import { KEYED } from "./helpers/keys.ts";
import { cleanups, until } from "./helpers/util.ts";

const LOOP = "127.0.0.1";
const cleanup = cleanups();

/** A TCP service on port 0 that does `onData` with what a connection sends first. */
function service(onData: (s: Socket<undefined>) => void): number {
  const l = Bun.listen({ hostname: LOOP, port: 0, socket: { data: (s) => onData(s), open() {} } });
  cleanup.push(() => l.stop(true));
  return l.port;
}

/** A closed port: listened on, then stopped. */
function closedPort(): number {
  const l = Bun.listen({ hostname: LOOP, port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

/** A client towards `peerPort`; one app connection through it; its end line and refusal counts. */
async function openOnce(peerPort: number): Promise<{ end: string; refused: Readonly<Record<string, number>>; cleanEnd: boolean }> {
  const logs: string[] = [];
  const client = startClient({ auth: KEYED, listen: { host: LOOP, port: 0 }, peer: { host: LOOP, port: peerPort }, stripes: 2, handshakeTimeoutMs: 500, log: (l) => logs.push(l) });
  cleanup.push(() => client.stop());
  const r = await appExchange(client.port, randomData(100, 1), { timeoutMs: 30_000 });
  await until(() => logs.some((l) => / end /.test(l)), () => `the session's end line (${logs.join(" | ")})`, 30_000);
  return { end: logs.find((l) => / end /.test(l))!, refused: client.stats.counters().sessionsRefused, cleanEnd: r.cleanEnd };
}

test("a closed port is 'unreachable'", async () => {
  const r = await openOnce(closedPort());
  expect(r.cleanEnd).toBe(false);
  expect(r.end).toMatch(/reason ECONNREFUSED server proxy 127\.0\.0\.1:\d+ unreachable: cannot connect/);
  expect(r.refused).toEqual({ unreachable: 1 });
});

test("a service that answers something else: connected, not a server proxy — never 'unreachable'", async () => {
  const port = service((s) => {
    s.write("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
    s.end();
  });
  const r = await openOnce(port);
  expect(r.cleanEnd).toBe(false);
  expect(r.end).toMatch(new RegExp(`connected to 127\\.0\\.0\\.1:${port}, but it did not answer as a tcp-striper server proxy`));
  expect(r.end).not.toMatch(/unreachable/);
  expect(r.refused).toEqual({ "bad-reply": 1 });
});

test("a service that accepts and says nothing: no authenticated reply within the deadline", async () => {
  const r = await openOnce(service(() => {}));
  expect(r.cleanEnd).toBe(false);
  expect(r.end).toMatch(/reason E_AUTH no authenticated reply within 0\.5 s: .*not a tcp-striper server/);
  expect(r.end).not.toMatch(/unreachable/);
  expect(r.refused).toEqual({ auth: 1 });
});
