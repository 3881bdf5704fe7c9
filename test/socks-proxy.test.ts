/**
 * Many destinations through one relay (issue 13), end to end over real loopback sockets with the real
 * curl: SOCKS5 (names resolved by the server, and by curl), HTTP CONNECT and the port forward, downloads
 * checked by SHA-256 against a local HTTP server; every error reply; RFC 1929 logins; the SSRF defaults
 * (also through names that resolve to special addresses, and DNS rebinding); the destination never in
 * clear on a stripe; malformed requests; 200 concurrent sessions; standby stripes; reply timing; and
 * the command line in real processes (a config file's allowlist re-read on SIGHUP, a users file).
 */

import { describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { startFaultProxy, type FaultProxy } from "../src/link/fault.ts";
import { TcpPipe, connectTcp, type Address } from "../src/pipe/tcp.ts";
import { startClient, type ClientOptions, type StriperClient } from "../src/proxy/client.ts";
import type { StripeAuth } from "../src/proxy/handshake.ts";
import { parseIp } from "../src/proxy/ip.ts";
import { REP } from "../src/proxy/socks.ts";
import { startServer, type ServerOptions, type StriperServer } from "../src/proxy/server.ts";
import type { LookupAddress } from "../src/proxy/target.ts";
import { parseUsers } from "../src/proxy/users.ts";
import { generateKey } from "../src/secure/keys.ts";
import { MIN_WINDOW, windowCost } from "../src/stripe/budget.ts";
import { KEYED, PLAIN } from "./helpers/keys.ts";
import { randomData, sha256, startTarget } from "./helpers/net.ts";
import { Proc } from "./helpers/proc.ts";
import { RawSocket, curl, httpServer, socksRequest } from "./helpers/socks.ts";
import { cleanups, until } from "./helpers/util.ts";

const LOOP = "127.0.0.1";
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const cleanup = cleanups();
const F10K = randomData(10 * 1024, 10);
const F4M = randomData(4 * 1024 * 1024, 4);
const FILES = { "/f10k": F10K, "/f4m": F4M };

interface Setup {
  server: StriperServer;
  client: StriperClient;
  serverLogs: string[];
  clientLogs: string[];
  /** The HTTP server's port. */
  http: number;
  /** The client's SOCKS / HTTP CONNECT port. */
  socks: number;
  fault: FaultProxy | undefined;
}

/**
 * HTTP server ← server proxy ← [fault proxy with a tap] ← client proxy (SOCKS front on port 0). `allow`
 * gets the HTTP port; `server` and `client` override options.
 */
async function setup(o: {
  allow?: (http: number) => string[];
  server?: Partial<ServerOptions> | ((http: number) => Partial<ServerOptions>);
  client?: Partial<ClientOptions>;
  socks?: Partial<NonNullable<ClientOptions["socks"]>>;
  auth?: StripeAuth;
  tap?: (index: number, up: boolean, chunk: Uint8Array) => void;
  peerPort?: number;
}): Promise<Setup> {
  const serverLogs: string[] = [];
  const clientLogs: string[] = [];
  const { port: http } = httpServer(FILES, cleanup);
  const extra = typeof o.server === "function" ? o.server(http) : (o.server ?? {});
  const server = startServer({
    auth: o.auth ?? KEYED,
    listen: { host: LOOP, port: 0 },
    allow: o.allow ? o.allow(http) : [`${LOOP}:${http}`],
    log: (l) => serverLogs.push(l),
    ...extra,
  });
  cleanup.push(() => server.stop());
  let fault: FaultProxy | undefined;
  if (o.tap !== undefined) {
    fault = await startFaultProxy({ targetHost: LOOP, targetPort: server.port, tap: o.tap });
    cleanup.push(() => fault!.stop());
  }
  const client = startClient({
    auth: o.auth ?? KEYED,
    peer: { host: LOOP, port: o.peerPort ?? fault?.port ?? server.port },
    socks: { listen: { host: LOOP, port: 0 }, ...o.socks },
    stripes: 4,
    log: (l) => clientLogs.push(l),
    ...o.client,
  });
  cleanup.push(() => client.stop());
  return { server, client, serverLogs, clientLogs, http, socks: client.port, fault };
}

const socks5h = (s: Setup) => ["--socks5-hostname", `${LOOP}:${s.socks}`];
const httpProxy = (s: Setup) => ["-p", "-x", `http://${LOOP}:${s.socks}`];

/** curl's SOCKS5 failure line carries the reply code: "Can't complete SOCKS5 connection to X. (N)". */
function socksCode(stderr: string): number | undefined {
  const m = /Can't complete SOCKS5 connection to [^ ]+\. \((\d+)\)/.exec(stderr);
  return m ? Number(m[1]) : undefined;
}

/** A SOCKS5 exchange on a raw socket: greeting (no auth), then `request`; returns the reply's 10 bytes. */
async function rawSocks(port: number, request: Uint8Array): Promise<{ reply: Uint8Array; sock: RawSocket }> {
  const sock = await RawSocket.open(port, cleanup);
  sock.write(Uint8Array.of(5, 1, 0));
  expect([...(await sock.read(2))]).toEqual([5, 0]);
  sock.write(request);
  const all = await sock.read(12);
  return { reply: all.subarray(2, 12), sock };
}

describe("downloads through the SOCKS front, checked by SHA-256", () => {
  test("curl --socks5-hostname (the server resolves the name), --socks5 (curl resolves it), and -x http:// CONNECT", async () => {
    const s = await setup({});
    for (const via of [socks5h(s), ["--socks5", `${LOOP}:${s.socks}`], httpProxy(s)]) {
      for (const host of ["localhost", LOOP]) {
        const r = await curl([...via, `http://${host}:${s.http}/f4m`]);
        expect([via[0], host, r.exit, r.stderr]).toEqual([via[0], host, 0, ""]);
        expect(sha256(r.body)).toBe(sha256(F4M));
      }
    }
    // The server's log names each destination and the client's address.
    expect(s.serverLogs.filter((l) => new RegExp(`start from 127\\.0\\.0\\.1:\\d+ to localhost:${s.http} \\(127\\.0\\.0\\.1:${s.http}\\) by rule 127\\.0\\.0\\.1:${s.http}`).test(l)).length).toBe(2);
    expect(s.clientLogs.filter((l) => new RegExp(`start app 127\\.0\\.0\\.1:\\d+ to localhost:${s.http} `).test(l)).length).toBe(2);
  });

  test("IPv6 destinations: an address rule [::1]:PORT opens an IPv6 loopback target", async () => {
    const t = startTarget({ mode: "echo", host: "::1" });
    cleanup.push(() => t.stop());
    const s = await setup({ allow: () => [`[::1]:${t.port}`] });
    const { reply, sock } = await rawSocks(s.socks, socksRequest(1, parseIp("::1")!, t.port));
    expect(reply[1]).toBe(REP.succeeded);
    sock.write("ping over v6");
    expect(Buffer.from((await sock.read(12 + 12)).subarray(12)).toString()).toBe("ping over v6");
  });

  test("a port forward: client --listen with --target, and without it the server's own target", async () => {
    const { port: http } = httpServer(FILES, cleanup);
    const server = startServer({ auth: KEYED, listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: http }, allow: [`${LOOP}:${http}`], log: () => {} });
    cleanup.push(() => server.stop());
    for (const target of [{ host: "localhost", port: http }, undefined]) {
      const c = startClient({ auth: KEYED, peer: { host: LOOP, port: server.port }, listen: { host: LOOP, port: 0 }, target, log: () => {} });
      cleanup.push(() => c.stop());
      const r = await curl([`http://${LOOP}:${c.port}/f4m`]);
      expect(r.exit).toBe(0);
      expect(sha256(r.body)).toBe(sha256(F4M));
    }
  });
});

describe("every error reaches the app in its own language", () => {
  test("not allowed → 0x02 / 403; no such name → 0x04 / 502; refused → 0x05 / 502; timeout → 0x06 / 504", async () => {
    const closed = startTarget({ mode: "echo" });
    const closedPort = closed.port;
    closed.stop(); // nothing listens there now: ECONNREFUSED
    const s = await setup({
      allow: (http) => [`${LOOP}:${http}`, "*.invalid:80", `${LOOP}:${closedPort}`, "slow.test:80"],
      server: {
        connectTimeoutMs: 300,
        // slow.test "resolves" to an address whose connect never completes (a real socket cannot be made
        // to hang on loopback): the connect deadline is what is under test.
        lookup: async (name) => (name === "slow.test" ? [{ address: "198.51.100.9", family: 4 }] : (await import("node:dns/promises")).lookup(name, { all: true })),
        connect: (to: Address): TcpPipe => (to.host === "198.51.100.9" ? new TcpPipe() : connectTcp(to)),
      },
    });
    const cases: [string, number, number][] = [
      [`http://blocked.example:80/`, REP.notAllowed, 403],
      [`http://${LOOP}:1/`, REP.notAllowed, 403], // loopback, no rule names this port
      [`http://nonexistent.invalid:80/`, REP.hostUnreachable, 502],
      [`http://${LOOP}:${closedPort}/`, REP.refused, 502],
      [`http://slow.test:80/`, REP.ttlExpired, 504],
    ];
    for (const [url, rep, status] of cases) {
      const a = await curl([...socks5h(s), url]);
      expect([url, socksCode(a.stderr)]).toEqual([url, rep]);
      const b = await curl([...httpProxy(s), url], "%{http_connect}");
      expect([url, b.written]).toEqual([url, String(status)]);
    }
    // One line on each side names the destination and why.
    expect(s.clientLogs.some((l) => /app 127\.0\.0\.1:\d+ to blocked\.example:80 failed: not-allowed \(E_PEER_RESET .*code 6\)/.test(l))).toBe(true);
    expect(s.serverLogs.some((l) => /from 127\.0\.0\.1:\d+ to nonexistent\.invalid:80 failed: E_UNRESOLVED/.test(l))).toBe(true);
    expect(s.serverLogs.some((l) => /to slow\.test:80 failed: E_CONNECT_TIMEOUT .*did not answer within 300 ms/.test(l))).toBe(true);
    expect(s.serverLogs.some((l) => new RegExp(`to 127\\.0\\.0\\.1:${closedPort} failed: ECONNREFUSED`).test(l))).toBe(true);
    // Counted by reason, once per curl (SOCKS and HTTP CONNECT): the loopback port no rule names is SSRF.
    expect(s.server.destinationRefusals).toEqual({ "not-allowed": 2, ssrf: 2, dns: 2, "target-refused": 2, "target-timeout": 2 });
    // The same through the StatsSource (/metrics: striper_sessions_refused_total{reason}); the client
    // cannot tell SSRF from not-allowed (one RESET code), so it counts both as not-allowed.
    expect(s.server.stats.counters().sessionsRefused).toEqual({ "not-allowed": 2, ssrf: 2, dns: 2, "target-refused": 2, "target-timeout": 2 });
    expect(s.client.stats.counters().sessionsRefused).toEqual({ "not-allowed": 4, dns: 2, "target-refused": 2, "target-timeout": 2 });
  });

  test("BIND and UDP ASSOCIATE → 0x07; an unknown address type → 0x08; each then closed", async () => {
    const s = await setup({});
    for (const [req, rep] of [
      [socksRequest(2, "example.com", 80), REP.commandNotSupported],
      [socksRequest(3, "example.com", 80), REP.commandNotSupported],
      [Uint8Array.of(5, 1, 0, 9, 1, 2, 3, 4, 0, 80), REP.addressTypeNotSupported],
    ] as const) {
      const { reply, sock } = await rawSocks(s.socks, req);
      expect([...reply]).toEqual([5, rep, 0, 1, 0, 0, 0, 0, 0, 0]);
      expect(await sock.whenClosed()).toBe("eof");
    }
  });

  test("the server cannot be reached: 0x01 general failure / 502", async () => {
    const gone = startTarget({ mode: "echo" });
    const port = gone.port;
    gone.stop();
    const s = await setup({ peerPort: port });
    expect(socksCode((await curl([...socks5h(s), `http://${LOOP}:${s.http}/f10k`])).stderr)).toBe(REP.generalFailure);
    expect((await curl([...httpProxy(s), `http://${LOOP}:${s.http}/f10k`], "%{http_connect}")).written).toBe("502");
  });
});

describe("logins (RFC 1929, and Basic for HTTP CONNECT on the same port)", () => {
  const users = parseUsers("alice:s3cret\n", "test users");

  test("the right login downloads; a wrong one is refused with status 1 / 407; no login is refused too", async () => {
    const s = await setup({ socks: { users } });
    const url = `http://${LOOP}:${s.http}/f10k`;
    const ok = await curl(["-x", `socks5h://alice:s3cret@${LOOP}:${s.socks}`, url]);
    expect(ok.exit).toBe(0);
    expect(sha256(ok.body)).toBe(sha256(F10K));
    const wrong = await curl(["-x", `socks5h://alice:nope@${LOOP}:${s.socks}`, url]);
    expect(wrong.exit).not.toBe(0);
    expect(wrong.stderr).toContain("User was rejected by the SOCKS5 server (1 1)");
    const none = await curl([...socks5h(s), url]);
    expect(none.exit).not.toBe(0);
    expect(none.stderr).toContain("No authentication method was acceptable");
    const httpOk = await curl([...httpProxy(s), "--proxy-user", "alice:s3cret", url], "%{http_connect}");
    expect([httpOk.exit, httpOk.written, sha256(httpOk.body)]).toEqual([0, "200", sha256(F10K)]);
    expect((await curl([...httpProxy(s), "--proxy-user", "alice:x", url], "%{http_connect}")).written).toBe("407");
    expect((await curl([...httpProxy(s), url], "%{http_connect}")).written).toBe("407");
    // Refusals never reach the server: only the two good logins opened sessions.
    expect(s.serverLogs.filter((l) => / start from /.test(l)).length).toBe(2);
  });

  test("raw: a login of the wrong sub-version or with an empty name gets status 1 and a close", async () => {
    const s = await setup({ socks: { users } });
    for (const login of [Uint8Array.of(5, 1, 0x61, 1, 0x62), Uint8Array.of(1, 0, 1, 0x62)]) {
      const sock = await RawSocket.open(s.socks, cleanup);
      sock.write(Uint8Array.of(5, 2, 0, 2));
      expect([...(await sock.read(2))]).toEqual([5, 2]);
      sock.write(login);
      expect([...(await sock.read(4))]).toEqual([5, 2, 1, 1]);
      expect(await sock.whenClosed()).toBe("eof");
    }
  });
});

describe("SSRF defaults", () => {
  const own = parseIp("203.0.113.9")!;
  const resolver = async (name: string): Promise<LookupAddress[]> => {
    const table: Record<string, string[]> = {
      "intranet.test": ["10.1.2.3"],
      "metadata.test": ["169.254.169.254"],
      "cgnat.test": ["100.64.0.7"],
      "v6private.test": ["fd00::7"],
      "mapped.test": ["::ffff:127.0.0.1"],
      "self.test": ["203.0.113.9"],
      "mixed.test": ["127.0.0.1", "10.0.0.1"],
    };
    const list = table[name];
    if (list !== undefined) return list.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
    return (await import("node:dns/promises")).lookup(name, { all: true });
  };

  test("*:PORT opens no loopback, private, link-local, CGNAT or own address — literal or behind a name; the target is never contacted", async () => {
    const s = await setup({ allow: (http) => [`*:${http}`], server: { lookup: resolver, ownAddresses: () => [own] } });
    const p = s.http;
    const refused = [
      `${LOOP}:${p}`,
      `localhost:${p}`, // real getaddrinfo: 127.0.0.1
      `[::1]:${p}`,
      `10.0.0.1:${p}`,
      `192.168.1.1:${p}`,
      `169.254.169.254:${p}`,
      `100.64.0.1:${p}`,
      `203.0.113.9:${p}`, // the server's own
      `intranet.test:${p}`,
      `metadata.test:${p}`,
      `cgnat.test:${p}`,
      `v6private.test:${p}`,
      `mapped.test:${p}`,
      `self.test:${p}`,
      `mixed.test:${p}`,
    ];
    for (const dest of refused) {
      const r = await curl([...socks5h(s), `http://${dest}/f10k`]);
      expect([dest, socksCode(r.stderr)]).toEqual([dest, REP.notAllowed]);
    }
    const lines = s.serverLogs.filter((l) => / failed: E_NOT_ALLOWED /.test(l));
    expect(lines.length).toBe(refused.length);
    expect(lines.some((l) => /to metadata\.test:\d+ failed: E_NOT_ALLOWED not allowed: metadata\.test resolves to 169\.254\.169\.254 is a link-local address/.test(l))).toBe(true);
    expect(lines.some((l) => /203\.0\.113\.9 is one of the server's own addresses/.test(l))).toBe(true);
    expect(lines.some((l) => /to mapped\.test:\d+ .*127\.0\.0\.1 is a loopback address/.test(l))).toBe(true);
    expect(s.server.destinationRefusals).toEqual({ ssrf: refused.length });
  });

  test("the server's own interface addresses are refused by default (no list injected)", async () => {
    const mine = Object.values(networkInterfaces())
      .flat()
      .map((a) => a?.address)
      .filter((a): a is string => a !== undefined && !a.includes("%"));
    expect(mine.length).toBeGreaterThan(0); // at least loopback
    const s = await setup({ allow: (http) => [`*:${http}`] });
    for (const a of mine) {
      const host = a.includes(":") ? `[${a}]` : a;
      expect([a, socksCode((await curl([...socks5h(s), `http://${host}:${s.http}/f10k`])).stderr)]).toEqual([a, REP.notAllowed]);
    }
  });

  test("a rule naming the address opens it: 127.0.0.1:PORT lets localhost through, and a name resolving into 10.1.0.0/16 reaches it", async () => {
    let connectedTo: string | undefined;
    const s = await setup({
      allow: (http) => [`${LOOP}:${http}`, `10.1.0.0/16:${http}`],
      server: (http) => ({
        lookup: resolver,
        // 10.1.2.3 does not exist here: record where the server connects, and carry it to the HTTP server.
        connect: (to: Address) => {
          connectedTo = `${to.host}:${to.port}`;
          return connectTcp(to.host === "10.1.2.3" ? { host: LOOP, port: http } : to);
        },
      }),
    });
    for (const host of ["localhost", "intranet.test"]) {
      const r = await curl([...socks5h(s), `http://${host}:${s.http}/f10k`]);
      expect([host, r.exit, sha256(r.body)]).toEqual([host, 0, sha256(F10K)]);
    }
    expect(connectedTo).toBe(`10.1.2.3:${s.http}`);
    // The rule opens that port only.
    expect(socksCode((await curl([...socks5h(s), `http://localhost:${s.http + 1}/`])).stderr)).toBe(REP.notAllowed);
  });

  test("DNS rebinding: the server connects to the address it checked, never to a second lookup", async () => {
    let lookups = 0;
    let connectedTo: string | undefined;
    const s = await setup({
      allow: (http) => [`*.test:${http}`],
      server: (http) => ({
        // First answer public, every later one loopback: a second lookup would connect to 127.0.0.1.
        lookup: async () => [{ address: lookups++ === 0 ? "198.51.100.7" : LOOP, family: 4 }],
        connect: (to: Address) => {
          connectedTo = to.host;
          return connectTcp(to.host === "198.51.100.7" ? { host: LOOP, port: http } : to);
        },
      }),
    });
    const r = await curl([...socks5h(s), `http://rebind.test:${s.http}/f10k`]);
    expect([r.exit, sha256(r.body)]).toEqual([0, sha256(F10K)]);
    expect(lookups).toBe(1);
    expect(connectedTo).toBe("198.51.100.7");
  });

  // The cap on lookups at once and waiting is a unit test (test/destination.test.ts).
  test("bounded DNS: a lookup that never answers fails at the deadline as 0x04, once", async () => {
    let started = 0;
    const s = await setup({
      allow: () => ["*.test:80"],
      server: { lookup: () => (started++, new Promise<LookupAddress[]>(() => {})), dnsTimeoutMs: 300 },
    });
    expect(socksCode((await curl([...socks5h(s), "http://hang.test:80/"])).stderr)).toBe(REP.hostUnreachable);
    expect(s.serverLogs.some((l) => /hang\.test:80 failed: E_UNRESOLVED name did not resolve: hang\.test: lookup timed out after 300 ms/.test(l))).toBe(true);
    expect(started).toBe(1);
  });

  test("a server with only --target serves only that: client-chosen destinations are refused, the same one is not", async () => {
    const { port: http } = httpServer(FILES, cleanup);
    const server = startServer({ auth: KEYED, listen: { host: LOOP, port: 0 }, target: { host: LOOP, port: http }, log: () => {} });
    cleanup.push(() => server.stop());
    const c = startClient({ auth: KEYED, peer: { host: LOOP, port: server.port }, socks: { listen: { host: LOOP, port: 0 } }, log: () => {} });
    cleanup.push(() => c.stop());
    const via = ["--socks5-hostname", `${LOOP}:${c.port}`];
    expect(socksCode((await curl([...via, `http://localhost:${http}/f10k`])).stderr)).toBe(REP.notAllowed);
    const same = await curl([...via, `http://${LOOP}:${http}/f10k`]);
    expect([same.exit, sha256(same.body)]).toEqual([0, sha256(F10K)]);
  });

  test("the allowlist is replaced at run time (SIGHUP's setter); a bad rule leaves the old one in force", async () => {
    const s = await setup({ allow: () => ["*.test:1"] });
    const url = `http://localhost:${s.http}/f10k`;
    expect(socksCode((await curl([...socks5h(s), url])).stderr)).toBe(REP.notAllowed);
    s.server.setAllow([`${LOOP}:${s.http}`]);
    expect((await curl([...socks5h(s), url])).exit).toBe(0);
    expect(() => s.server.setAllow(["10.0.0.1/8:22"])).toThrow("host bits must be zero");
    expect((await curl([...socks5h(s), url])).exit).toBe(0);
  });
});

describe("the destination never travels in clear", () => {
  const NAME = "very-secret-destination.test";
  const resolveTo = async (): Promise<LookupAddress[]> => [{ address: LOOP, family: 4 }];

  for (const pool of [0, 2]) {
    test(`keyed, ${pool ? "from a standby stripe (TARGET frame)" : "in the OPEN header"}: no stripe byte holds the name; --no-auth shows it (so the tap sees it)`, async () => {
      for (const auth of [KEYED, PLAIN]) {
        const seen: Uint8Array[] = [];
        const s = await setup({
          auth,
          allow: (http) => [`${LOOP}:${http}`],
          server: { lookup: resolveTo },
          client: { pool },
          tap: (_i, _up, chunk) => void seen.push(new Uint8Array(chunk)),
        });
        if (pool) await until(() => s.client.pool.ready === pool, "the pool filled");
        const r = await curl([...socks5h(s), `http://${NAME}:${s.http}/f10k`]);
        expect([r.exit, sha256(r.body)]).toEqual([0, sha256(F10K)]);
        if (pool) expect(s.client.pool.taken).toBe(1);
        const wire = Buffer.concat(seen);
        expect(wire.byteLength).toBeGreaterThan(10 * 1024);
        expect([auth.mode, wire.includes(NAME)]).toEqual([auth.mode, auth.mode === "plain"]);
        expect(wire.includes(Buffer.from(NAME.toUpperCase()))).toBe(false);
        while (cleanup.length) await cleanup.pop()!();
      }
    });
  }
});

describe("malformed requests: the protocol's error reply and a close, never a crash", () => {
  test("truncated, oversize, bad versions, other protocols, garbage, and a trickle past the deadline", async () => {
    const s = await setup({ socks: { requestTimeoutMs: 400 } });
    const cases: { name: string; send: Uint8Array | string; reply: number[] | string; fin?: boolean }[] = [
      { name: "SOCKS4", send: Uint8Array.of(4, 1, 0, 80, 127, 0, 0, 1, 0), reply: [0, 0x5b, 0, 0, 0, 0, 0, 0] },
      { name: "no methods", send: Uint8Array.of(5, 0), reply: [5, 0xff] },
      { name: "no acceptable method", send: Uint8Array.of(5, 1, 2), reply: [5, 0xff] },
      { name: "request of version 4", send: Uint8Array.of(5, 1, 0, 4, 1, 0, 1, 127, 0, 0, 1, 0, 80), reply: [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0] },
      { name: "empty name", send: Uint8Array.of(5, 1, 0, 5, 1, 0, 3, 0, 0, 80), reply: [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0] },
      { name: "oversize name (255 bytes)", send: Uint8Array.from([5, 1, 0, ...socksRequest(1, "a".repeat(255), 80)]), reply: [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0] },
      { name: "name with a NUL", send: Uint8Array.from([5, 1, 0, ...socksRequest(1, "a\u0000b.com", 80)]), reply: [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0] },
      { name: "port 0", send: Uint8Array.from([5, 1, 0, ...socksRequest(1, "a.com", 0)]), reply: [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0] },
      { name: "HTTP GET", send: "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", reply: "HTTP/1.1 501 Not Implemented\r\n" },
      { name: "CONNECT without port", send: "CONNECT example.com HTTP/1.1\r\n\r\n", reply: "HTTP/1.1 400 Bad Request\r\n" },
      { name: "CONNECT of HTTP/2", send: "CONNECT example.com:443 HTTP/2\r\n\r\n", reply: "HTTP/1.1 400 Bad Request\r\n" },
      { name: "CONNECT with a broken header", send: "CONNECT example.com:443 HTTP/1.1\r\nno colon here\r\n\r\n", reply: "HTTP/1.1 400 Bad Request\r\n" },
      { name: "oversize headers", send: `CONNECT example.com:443 HTTP/1.1\r\nX: ${"y".repeat(9000)}\r\n\r\n`, reply: "HTTP/1.1 431 Request Header Fields Too Large\r\n" },
      { name: "garbage", send: Uint8Array.of(0x16, 3, 1, 0, 5), reply: [] },
      { name: "truncated greeting, then FIN", send: Uint8Array.of(5, 3, 0), reply: [], fin: true },
      { name: "truncated request, then FIN", send: Uint8Array.of(5, 1, 0, 5, 1, 0, 3, 20, 0x61), reply: [5, 0], fin: true },
      { name: "truncated request, held past the deadline", send: Uint8Array.of(5, 1, 0, 5, 1, 0, 1, 127), reply: [5, 0] },
    ];
    for (const c of cases) {
      const sock = await RawSocket.open(s.socks, cleanup);
      sock.write(c.send);
      if (c.fin) sock.shutdown();
      const how = await sock.whenClosed(5000);
      const got = sock.bytes;
      if (typeof c.reply === "string") expect([c.name, Buffer.from(got).toString("latin1").split("\r\n")[0] + "\r\n"]).toEqual([c.name, c.reply]);
      else expect([c.name, [...got]]).toEqual([c.name, c.reply]);
      expect([c.name, how === "eof" || how === "reset"]).toEqual([c.name, true]);
    }
    expect(s.clientLogs.filter((l) => /request refused: E_APP_REQUEST/.test(l)).length).toBeGreaterThanOrEqual(12);
    // No session was opened for any of them, and the front still serves.
    expect(s.serverLogs.filter((l) => / start from /.test(l)).length).toBe(0);
    const ok = await curl([...socks5h(s), `http://${LOOP}:${s.http}/f10k`]);
    expect([ok.exit, sha256(ok.body)]).toEqual([0, sha256(F10K)]);
  });

  test("fuzz: 300 random first messages (SOCKS5-shaped and not) get a reply or a close, and the front goes on", async () => {
    const s = await setup({ socks: { requestTimeoutMs: 300 } });
    let x = 12345;
    const rnd = (n: number) => ((x = (x * 1103515245 + 12345) >>> 0) % n);
    for (let i = 0; i < 300; i++) {
      const len = 1 + rnd(40);
      const b = Uint8Array.from({ length: len }, () => rnd(256));
      if (i % 2 === 0) b[0] = 5; // half look like SOCKS5
      if (i % 4 === 0 && len > 3) [b[1], b[2], b[3]] = [1, 0, 5];
      const sock = await RawSocket.open(s.socks, cleanup);
      sock.write(b);
      sock.shutdown();
      await sock.whenClosed(5000);
    }
    const ok = await curl([...socks5h(s), `http://${LOOP}:${s.http}/f10k`]);
    expect([ok.exit, sha256(ok.body)]).toEqual([0, sha256(F10K)]);
  });
});

describe("many sessions", () => {
  test("200 concurrent SOCKS sessions, 64 KiB each way, all intact", async () => {
    const echo = startTarget({ mode: "echo" });
    cleanup.push(() => echo.stop());
    const s = await setup({ allow: () => [`${LOOP}:${echo.port}`], client: { pool: 4, growAfter: 128 * 1024 } });
    const N = 200;
    const results = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const data = randomData(64 * 1024, 1000 + i);
        const { reply, sock } = await rawSocks(s.socks, socksRequest(1, "localhost", echo.port));
        if (reply[1] !== 0) return `session ${i}: reply ${reply[1]}`;
        sock.write(data);
        sock.shutdown();
        await sock.whenClosed(60_000);
        const back = sock.bytes.subarray(12);
        return sha256(back) === sha256(data) ? "ok" : `session ${i}: ${back.byteLength} bytes back`;
      }),
    );
    expect(results.filter((r) => r !== "ok")).toEqual([]);
    expect(echo.conns.length).toBe(N);
    await until(() => s.client.sessions.size === 0 && s.server.sessions.size === 0, "every session ended");
  }, 120_000);
});

describe("standby stripes and short connections", () => {
  test("sessions take pooled stripes (no new connection on their path), stay on one stripe, and the pool refills", async () => {
    let accepted = 0;
    const s = await setup({ client: { pool: 2, growAfter: 128 * 1024 }, tap: () => {} });
    await until(() => s.client.pool.ready === 2 && s.server.standby === 2, "the pool filled");
    accepted = s.fault!.connections().length;
    expect(accepted).toBe(2);
    for (let i = 0; i < 5; i++) {
      const r = await curl([...socks5h(s), `http://${LOOP}:${s.http}/f10k`]);
      expect([r.exit, sha256(r.body)]).toEqual([0, sha256(F10K)]);
      await until(() => s.client.pool.ready === 2, "the pool refilled");
    }
    expect(s.client.pool.taken).toBe(5);
    // Five short fetches: one connection each (the refill), never the session's four stripes.
    expect(s.fault!.connections().length).toBe(2 + 5);
    expect(s.clientLogs.filter((l) => / standby$/.test(l)).length).toBe(5);
  });

  test("a bulk session grows to all its stripes after --grow-after bytes", async () => {
    const s = await setup({ client: { pool: 1, growAfter: 64 * 1024 }, tap: () => {} });
    await until(() => s.client.pool.ready === 1, "the pool filled");
    const r = await curl([...socks5h(s), `http://${LOOP}:${s.http}/f4m`]);
    expect([r.exit, sha256(r.body)]).toEqual([0, sha256(F4M)]);
    // 1 pooled + 3 JOINs + 1 refill.
    await until(() => s.fault!.connections().length === 5, () => `5 connections, got ${s.fault!.connections().length}`);
  });

  test("the server closes a standby stripe it held too long; the client's pool drops it and dials again", async () => {
    const s = await setup({ client: { pool: 1 }, server: { standbyIdleMs: 300 } });
    await until(() => s.client.pool.ready === 1, "the pool filled");
    await until(() => s.client.pool.dialled >= 2, "a second standby stripe dialled after the first expired", 5000);
    const r = await curl([...socks5h(s), `http://${LOOP}:${s.http}/f10k`]);
    expect(r.exit).toBe(0);
  });

  test("standby limits: beyond --max-standby the server refuses, and the client opens sessions the usual way", async () => {
    const s = await setup({ client: { pool: 3 }, server: { maxStandby: 1 } });
    await until(() => s.client.pool.ready === 1 && s.server.standby === 1, "one standby stripe held");
    await until(() => s.clientLogs.some((l) => /standby stripe failed: E_REFUSED/.test(l)), "the refusal logged");
    expect(s.serverLogs.some((l) => /refused: E_STANDBY_LIMIT standby limit 1/.test(l))).toBe(true);
    for (let i = 0; i < 3; i++) expect((await curl([...socks5h(s), `http://${LOOP}:${s.http}/f10k`])).exit).toBe(0);
  });
});

describe("standby stripes and the issue 10 limits", () => {
  /** A second client of `s.server`, without a pool, on one stripe: its sessions open the usual way. */
  function plainClient(s: Setup): { client: StriperClient; via: string[] } {
    const client = startClient({ auth: KEYED, peer: { host: LOOP, port: s.server.port }, socks: { listen: { host: LOOP, port: 0 } }, stripes: 1, pool: 0, log: () => {} });
    cleanup.push(() => client.stop());
    return { client, via: ["--socks5-hostname", `${LOOP}:${client.port}`] };
  }

  test("a held standby holds the receive window its reply promised, and gives it back when it goes", async () => {
    // Receive memory for exactly two of the smallest windows: two held standbys take it all.
    const s = await setup({ client: { pool: 2 }, server: { session: { window: MIN_WINDOW }, maxReceiveBuffer: 2 * windowCost(MIN_WINDOW) } });
    await until(() => s.client.pool.ready === 2 && s.server.standby === 2, "the pool filled");
    const other = plainClient(s);
    const refused = await curl([...other.via, `http://${LOOP}:${s.http}/f10k`]);
    expect(socksCode(refused.stderr)).toBe(REP.generalFailure);
    expect(s.server.stats.counters().sessionsRefused).toEqual({ "receive-memory": 1 });
    // The pooled client's session opens on the window granted at the standby's reply.
    const r = await curl([...socks5h(s), `http://${LOOP}:${s.http}/f10k`]);
    expect([r.exit, sha256(r.body)]).toEqual([0, sha256(F10K)]);
    // Once that session has ended, the pool's refill (refused for memory while it ran) gets its window.
    await until(() => s.server.liveSessions === 0 && s.server.standby === 2, "the session ended and the pool refilled", 10_000);
    // The client goes: its standbys end untaken, their windows are free again (else refused forever).
    s.client.stop();
    await until(() => s.server.standby === 0 && s.server.liveSessions === 0, "the standby stripes ended");
    const after = await curl([...other.via, `http://${LOOP}:${s.http}/f10k`]);
    expect([after.exit, sha256(after.body)]).toEqual([0, sha256(F10K)]);
  });

  test("held standbys count against --max-stripes-per-source, and free their slots when they go", async () => {
    const s = await setup({ client: { pool: 2 }, server: { maxStripesPerSource: 2 } });
    await until(() => s.client.pool.ready === 2 && s.server.standby === 2, "the pool filled");
    const other = plainClient(s); // the same source address, 127.0.0.1
    const refused = await curl([...other.via, `http://${LOOP}:${s.http}/f10k`]);
    expect(socksCode(refused.stderr)).toBe(REP.generalFailure);
    expect(s.server.stats.counters().sessionsRefused).toEqual({ "source-limit": 1 });
    s.client.stop();
    await until(() => s.server.standby === 0, "the standby stripes ended");
    const after = await curl([...other.via, `http://${LOOP}:${s.http}/f10k`]);
    expect([after.exit, sha256(after.body)]).toEqual([0, sha256(F10K)]);
  });
});

describe("standby stripes and a draining server", () => {
  test("a drain ends the held standby stripes: new sessions get the OPEN's REFUSED (0x01 / 502), counted as draining", async () => {
    const s = await setup({ client: { pool: 2 } });
    await until(() => s.client.pool.ready === 2 && s.server.standby === 2, "the pool filled");
    void s.server.drain();
    await until(() => s.server.standby === 0 && s.client.pool.ready === 0, "the standby stripes ended on both sides");
    expect(socksCode((await curl([...socks5h(s), `http://${LOOP}:${s.http}/f10k`])).stderr)).toBe(REP.generalFailure);
    expect(s.clientLogs.some((l) => /session \w+ end .* reason E_REFUSED server proxy refused the stripe/.test(l))).toBe(true);
    expect(s.server.stats.counters().sessionsRefused).toEqual({ draining: 1 });
    expect(s.client.pool.taken).toBe(0);
  });
});

describe("reply timing", () => {
  test("--socks-reply immediate: success at once, before the server is asked; a refused destination then shows as a reset", async () => {
    const s = await setup({ socks: { waits: false } });
    const sock = await RawSocket.open(s.socks, cleanup);
    sock.write(Uint8Array.of(5, 1, 0));
    await sock.read(2);
    sock.write(socksRequest(1, "blocked.example", 80));
    expect([...(await sock.read(12)).subarray(2, 12)]).toEqual([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    expect(await sock.whenClosed()).toBe("reset");
    const ok = await curl([...socks5h(s), `http://${LOOP}:${s.http}/f4m`]);
    expect([ok.exit, sha256(ok.body)]).toEqual([0, sha256(F4M)]);
    expect(s.clientLogs.some((l) => /to blocked\.example:80 failed: not-allowed/.test(l))).toBe(true);
  });

  test("wait (the default): optimistic data sent with the request reaches the target; the reply comes first", async () => {
    const echo = startTarget({ mode: "echo" });
    cleanup.push(() => echo.stop());
    const s = await setup({ allow: () => [`${LOOP}:${echo.port}`] });
    const sock = await RawSocket.open(s.socks, cleanup);
    sock.write(Uint8Array.from([5, 1, 0, ...socksRequest(1, LOOP, echo.port), ...Buffer.from("early bytes")]));
    const got = await sock.read(2 + 10 + 11);
    expect([...got.subarray(0, 12)]).toEqual([5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    expect(Buffer.from(got.subarray(12)).toString()).toBe("early bytes");
  });
});

describe("real processes", () => {
  test("server --config with allow = [...], re-read on SIGHUP; client --socks with --socks-users FILE", async () => {
    const dir = mkdtempSync(join(tmpdir(), "striper-socks-"));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const keyFile = join(dir, "k");
    writeFileSync(keyFile, `${generateKey()}\n`);
    chmodSync(keyFile, 0o600);
    const usersFile = join(dir, "users");
    writeFileSync(usersFile, "# LAN users\nbob:pa:ss\n");
    chmodSync(usersFile, 0o600);
    const { port: http } = httpServer(FILES, cleanup);
    const config = join(dir, "server.toml");
    const toml = (allow: string[]) => `mode = "server"\nlisten = "127.0.0.1:0"\nkey-file = "${keyFile}"\nallow = [${allow.map((a) => JSON.stringify(a)).join(", ")}]\n`;
    writeFileSync(config, toml([`${LOOP}:1`]));
    const env = { ...(process.env as Record<string, string>) };
    delete env.STRIPER_KEY;
    const server = Proc.spawn([process.execPath, MAIN, "--config", config], cleanup, { env });
    const serverPort = await server.listeningPort("server");
    const client = Proc.spawn(
      [process.execPath, MAIN, "client", "--socks", `${LOOP}:0`, "--peer", `${LOOP}:${serverPort}`, "--key-file", keyFile, "--socks-users", usersFile],
      cleanup,
      { env },
    );
    const socksPort = await client.listeningPort("client");
    const url = `http://localhost:${http}/f10k`;
    const login = ["-x", `socks5h://bob:pa:ss@${LOOP}:${socksPort}`];
    // Only 127.0.0.1:1 is allowed: the HTTP server's port is refused (and a wrong login never gets that far).
    expect(socksCode((await curl([...login, url])).stderr)).toBe(REP.notAllowed);
    expect((await curl(["-x", `socks5h://bob:nope@${LOOP}:${socksPort}`, url])).stderr).toContain("User was rejected by the SOCKS5 server (1 1)");
    // The file now allows it: SIGHUP applies the new list to new sessions.
    writeFileSync(config, toml([`${LOOP}:${http}`]));
    server.kill("SIGHUP");
    await server.waitFor(new RegExp(`allowlist now 127\\.0\\.0\\.1:${http}`));
    const ok = await curl([...login, url]);
    expect([ok.exit, sha256(ok.body)]).toEqual([0, sha256(F10K)]);
    // A rule that does not parse: the reload is refused and the list in force stays.
    writeFileSync(config, toml(["10.0.0.1/8:22"]));
    const from = server.text.length;
    server.kill("SIGHUP");
    await server.waitFor(/SIGHUP: reload refused, keeping the running config: .*host bits must be zero/, undefined, from);
    expect((await curl([...login, url])).exit).toBe(0);
    server.kill("SIGTERM");
    client.kill("SIGTERM");
    expect(await Promise.all([server.exited, client.exited])).toEqual([0, 0]);
  }, 60_000);
});
