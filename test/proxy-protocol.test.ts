/**
 * PROXY protocol v2 on the relay (src/proxy/proxyproto.ts): the parser is strict and bounded, the set
 * of load-balancer addresses is checked, and over real loopback sockets the server takes a header only
 * from a configured balancer — whose header then names the client for logs and per-source limits —
 * while a balancer's connection without one, or a header from anyone else, fails like garbage.
 */

import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import type { StriperError } from "../src/errors.ts";
import { startClient } from "../src/proxy/client.ts";
import { BalancerSet, MAX_PROXY_HEADER, PROXY_V2_SIGNATURE, cidrProblem, encodeProxyHeader, formatIpv6, proxyHeaderParser } from "../src/proxy/proxyproto.ts";
import { startServer, type StriperServer } from "../src/proxy/server.ts";
import { HandshakeRejected } from "../src/wire/handshake.ts";
import { KEYED } from "./helpers/keys.ts";
import { appExchange, randomData, sha256, startTarget } from "./helpers/net.ts";
import { cleanups, until } from "./helpers/util.ts";

const cleanup = cleanups();
const CLIENT = { host: "198.51.100.7", port: 4242 };
const LB = { host: "203.0.113.1", port: 7000 };

describe("the PROXY v2 parser", () => {
  const parse = (b: Uint8Array) => proxyHeaderParser()(b);

  test("IPv4 and IPv6 PROXY headers name the client; LOCAL names none; TLVs are skipped", () => {
    const v4 = encodeProxyHeader({ command: "proxy", source: CLIENT, destination: LB, tlvs: new Uint8Array([0x04, 0, 2, 9, 9]) });
    expect(v4.byteLength).toBe(16 + 12 + 5);
    expect(parse(v4)).toEqual({ kind: "done", size: v4.byteLength, value: { command: "proxy", source: CLIENT, destination: LB } });
    const v6 = encodeProxyHeader({ command: "proxy", source: { host: "2001:db8::7", port: 1 }, destination: { host: "2001:db8::1", port: 2 } });
    expect(v6.byteLength).toBe(52);
    expect(parse(v6)).toMatchObject({ kind: "done", value: { source: { host: "2001:db8::7", port: 1 } } });
    expect(parse(encodeProxyHeader({ command: "local" }))).toEqual({ kind: "done", size: 16, value: { command: "local" } });
  });

  test("it asks for the fixed part, then the rest; bytes after the header are not its own", () => {
    const h = encodeProxyHeader({ command: "proxy", source: CLIENT, destination: LB });
    expect(parse(h.subarray(0, 5))).toEqual({ kind: "more", bytes: 11 });
    expect(parse(h.subarray(0, 20))).toEqual({ kind: "more", bytes: 8 });
    const withHello = new Uint8Array([...h, 1, 2, 3]);
    expect(parse(withHello)).toMatchObject({ kind: "done", size: h.byteLength });
  });

  test("anything else is bad-proxy: signature, version, command, transport, sizes, TLVs", () => {
    const good = encodeProxyHeader({ command: "proxy", source: CLIENT, destination: LB });
    const bad = (edit: (b: Uint8Array) => void, from = good): Uint8Array => {
      const b = new Uint8Array(from);
      edit(b);
      return b;
    };
    const cases = [
      new TextEncoder().encode("PROXY TCP4 198.51.100.7 203.0.113.1 4242 7000\r\n"), // version 1: not taken
      bad((b) => (b[0] = 0x0c)), // signature, first byte (rejected before 16 arrive)
      bad((b) => (b[12] = 0x11)), // version 1 in the binary header
      bad((b) => (b[12] = 0x22)), // command 2
      bad((b) => (b[13] = 0x12)), // IPv4 over UDP
      bad((b) => (b[15] = 4)), // length shorter than the IPv4 address block
      bad((b) => new DataView(b.buffer).setUint16(14, MAX_PROXY_HEADER)), // larger than the limit
      encodeProxyHeader({ command: "proxy", source: CLIENT, destination: LB, tlvs: new Uint8Array([0x04, 0, 9, 1]) }), // truncated TLV
    ];
    for (const c of cases) {
      const r = parse(c);
      expect(r.kind).toBe("invalid");
      expect((r as unknown as { error: HandshakeRejected }).error.reason).toBe("bad-proxy");
    }
    expect(parse(PROXY_V2_SIGNATURE.subarray(0, 3).map((x, i) => (i === 2 ? x ^ 1 : x))).kind).toBe("invalid");
  });

  test("IPv6 text: RFC 5952 shortening, IPv4-mapped as IPv4", () => {
    const b = new Uint8Array(16);
    expect(formatIpv6(b)).toBe("::");
    b[15] = 1;
    expect(formatIpv6(b)).toBe("::1");
    b.set([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    expect(formatIpv6(b)).toBe("2001:db8:0:1::1");
    b.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 9]);
    expect(formatIpv6(b)).toBe("192.0.2.9");
  });
});

describe("load-balancer addresses", () => {
  test("CIDR blocks and single addresses, IPv4 and IPv6", () => {
    const s = new BalancerSet(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]);
    expect(s.has("10.200.1.1")).toBe(true);
    expect(s.has("192.0.2.7")).toBe(true);
    expect(s.has("192.0.2.8")).toBe(false);
    expect(s.has("2001:db8:1::5")).toBe(true);
    expect(s.has("2001:db9::5")).toBe(false);
    expect(s.has("not an address")).toBe(false);
  });

  test("a block that is not one is refused with the reason", () => {
    expect(cidrProblem("10.0.0.0/8")).toBeUndefined();
    expect(cidrProblem("10.0.0.0/33")).toContain("prefix");
    expect(cidrProblem("example.com")).toContain("not an IPv4 or IPv6");
    let err: unknown;
    try {
      new BalancerSet(["::1/129"]);
    } catch (e) {
      err = e;
    }
    expect((err as StriperError).code).toBe("E_CONFIG");
  });
});

/** A stand-in balancer: accepts on 127.0.0.1:0 and relays each connection to `port`, first writing `header`. */
function balancer(port: number, header: Uint8Array | undefined): number {
  type Side = { peer?: Socket<Side>; queued: Uint8Array[] };
  const l = Bun.listen<Side>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(inbound) {
        inbound.data = { queued: [] };
        void Bun.connect<Side>({
          hostname: "127.0.0.1",
          port,
          data: { peer: inbound, queued: [] },
          socket: {
            open(out) {
              if (header !== undefined) out.write(header);
              for (const q of inbound.data.queued) out.write(q);
              inbound.data.peer = out;
            },
            data: (_out, d) => void inbound.write(d),
            close: () => void inbound.end(),
          },
        });
      },
      data(inbound, d) {
        if (inbound.data.peer) inbound.data.peer.write(d);
        else inbound.data.queued.push(new Uint8Array(d));
      },
      close: (inbound) => void inbound.data.peer?.end(),
    },
  });
  cleanup.push(() => l.stop(true));
  return l.port;
}

function relayPair(balancers: string[] | undefined, header: Uint8Array | undefined) {
  const t = startTarget({ mode: "echo" });
  cleanup.push(() => t.stop());
  const logs: string[] = [];
  const server: StriperServer = startServer({
    listen: { host: "127.0.0.1", port: 0 },
    target: { host: "127.0.0.1", port: t.port },
    auth: KEYED,
    handshakeTimeoutMs: 500,
    balancers: balancers && new BalancerSet(balancers),
    log: (l) => void logs.push(l),
  });
  cleanup.push(() => server.stop());
  const lb = balancer(server.port, header);
  const client = startClient({ listen: { host: "127.0.0.1", port: 0 }, peer: { host: "127.0.0.1", port: lb }, auth: KEYED, stripes: 2, handshakeTimeoutMs: 1500, log: () => {} });
  cleanup.push(() => client.stop());
  return { server, client, logs };
}

describe("the relay takes PROXY v2 only from its balancers", () => {
  const header = encodeProxyHeader({ command: "proxy", source: CLIENT, destination: LB });

  test("from a configured balancer: the header's client is the session's source; the data is exact", async () => {
    const { client, logs } = relayPair(["127.0.0.1"], header);
    const data = randomData(256 * 1024, 3);
    const r = await appExchange(client.port, data, { timeoutMs: 20_000 });
    expect(sha256(r.received)).toBe(sha256(data));
    expect(logs.join("\n")).toContain(`start from ${CLIENT.host}:${CLIENT.port}`);
    expect(logs.join("\n")).toContain("PROXY protocol v2 headers required from 127.0.0.1");
  });

  test("a configured balancer's connection without a header: silence (bad-proxy), no session", async () => {
    const { server, client } = relayPair(["127.0.0.1"], undefined);
    const r = await appExchange(client.port, randomData(1000, 4), { timeoutMs: 20_000 });
    expect(r.cleanEnd).toBe(false);
    expect(server.rejections["bad-proxy"]).toBeGreaterThan(0);
    expect(server.stats.counters().sessionsTotal ?? 0).toBe(0);
  });

  test("a header from an address that is not a balancer is garbage: silence (bad-auth), no session", async () => {
    const { server, client } = relayPair(["192.0.2.1"], header);
    const r = await appExchange(client.port, randomData(1000, 5), { timeoutMs: 20_000 });
    expect(r.cleanEnd).toBe(false);
    await until(() => server.rejections["bad-auth"] > 0, "the server counts a bad-auth");
    expect(server.rejections["bad-proxy"]).toBe(0);
    expect(server.stats.counters().sessionsTotal ?? 0).toBe(0);
  });
});
