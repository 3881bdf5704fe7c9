/**
 * The pure parts of `server --workers` (src/proxy/join.ts, src/proxy/workers.ts): the reply's JOIN option
 * and the JOIN's WORKER option, a session's routing on the client (join port, fallback after an
 * unreachable join port, the bound on wrong-worker redials), the client's memory of black-holed join
 * ports (clock passed in), admission's WRONG_WORKER answer, join-port planning, restart backoff, and the
 * worker spec a primary hands its workers.
 */

import { describe, expect, test } from "bun:test";
import { JOIN_AVOID_MS, JoinMemory, JoinRoute, MAX_WORKERS, WRONG_WORKER_TRIES_PER_WORKER, joinHintOf, joinOption, wantedWorker, workerOption } from "../src/proxy/join.ts";
import { sumCounters } from "../src/proxy/primary.ts";
import { RESTART_BASE_MS, RESTART_MAX_MS, WORKER_ENV, joinPortsFor, restartDelayMs, workerSpecOf } from "../src/proxy/workers.ts";
import { admit, judgeReply, type AdmissionPolicy, type Membership } from "../src/proxy/handshake.ts";
import { KIND_JOIN, KIND_OPEN, OPT_JOIN, OPT_WORKER, STATUS_UNKNOWN_SESSION, STATUS_WRONG_WORKER } from "../src/secure/constants.ts";
import type { ClientHello } from "../src/secure/messages.ts";
import { StriperError, UsageError } from "../src/errors.ts";
import { SessionRegistry } from "../src/proxy/registry.ts";

const MAIN = { host: "192.0.2.10", port: 7000 };

describe("JOIN and WORKER options", () => {
  test("the JOIN option round-trips; malformed ones are ignored, never fatal", () => {
    const h = { worker: 3, workers: 4, port: 7004 };
    const o = joinOption(h);
    expect(o.type).toBe(OPT_JOIN);
    expect([...o.value]).toEqual([0, 3, 0, 4, 0x1b, 0x5c]);
    expect(joinHintOf([{ type: 9, value: new Uint8Array(3) }, o])).toEqual(h);
    expect(joinHintOf([])).toBeUndefined();
    expect(joinHintOf([{ type: OPT_JOIN, value: new Uint8Array(5) }])).toBeUndefined(); // wrong length
    expect(joinHintOf([joinOption({ worker: 4, workers: 4, port: 1 })])).toBeUndefined(); // worker ≥ count
    expect(joinHintOf([joinOption({ worker: 0, workers: 0, port: 1 })])).toBeUndefined();
    expect(joinHintOf([joinOption({ worker: 0, workers: MAX_WORKERS + 1, port: 1 })])).toBeUndefined();
  });

  test("the WORKER option names the worker; anything but 2 bytes names none", () => {
    expect(workerOption(258).type).toBe(OPT_WORKER);
    expect(wantedWorker([workerOption(258)])).toBe(258);
    expect(wantedWorker([])).toBeUndefined();
    expect(wantedWorker([{ type: OPT_WORKER, value: new Uint8Array(3) }])).toBeUndefined();
  });
});

describe("a session's routing on the client", () => {
  test("OPENs go to the main address; JOINs to the join port the reply named, naming its worker", () => {
    const r = new JoinRoute(MAIN, new JoinMemory(() => 0));
    expect(r.target(KIND_JOIN)).toEqual({ to: MAIN, joinPort: false }); // no reply yet
    expect(r.headerOptions(KIND_JOIN)).toEqual([]);
    r.learn([joinOption({ worker: 1, workers: 2, port: 7002 })]);
    expect(r.target(KIND_OPEN)).toEqual({ to: MAIN, joinPort: false });
    expect(r.target(KIND_JOIN)).toEqual({ to: { host: MAIN.host, port: 7002 }, joinPort: true });
    expect(r.headerOptions(KIND_JOIN)).toEqual([workerOption(1)]);
    expect(r.headerOptions(KIND_OPEN)).toEqual([]);
  });

  test("port 0 in the reply (--advertise-join off): JOINs go to the main address, still naming the worker", () => {
    const r = new JoinRoute(MAIN, new JoinMemory(() => 0));
    r.learn([joinOption({ worker: 0, workers: 2, port: 0 })]);
    expect(r.target(KIND_JOIN)).toEqual({ to: MAIN, joinPort: false });
    expect(r.headerOptions(KIND_JOIN)).toEqual([workerOption(0)]);
  });

  test("a refused join port sends this session's JOINs to the main address; others keep trying theirs", () => {
    const memory = new JoinMemory(() => 0);
    const a = new JoinRoute(MAIN, memory);
    const b = new JoinRoute(MAIN, memory);
    for (const r of [a, b]) r.learn([joinOption({ worker: 0, workers: 2, port: 7001 })]);
    a.joinUnreachable(false);
    expect(a.target(KIND_JOIN).joinPort).toBe(false);
    expect(b.target(KIND_JOIN).joinPort).toBe(true);
  });

  test("a join port that dropped a connect is avoided by every session for JOIN_AVOID_MS, then tried again", () => {
    let now = 1000;
    const memory = new JoinMemory(() => now);
    const a = new JoinRoute(MAIN, memory);
    a.learn([joinOption({ worker: 0, workers: 2, port: 7001 })]);
    a.joinUnreachable(true);
    const b = new JoinRoute(MAIN, memory);
    b.learn([joinOption({ worker: 1, workers: 2, port: 7002 })]);
    expect(b.target(KIND_JOIN).joinPort).toBe(false);
    now += JOIN_AVOID_MS - 1;
    expect(memory.avoiding).toBe(true);
    now += 1;
    expect(memory.avoiding).toBe(false);
    expect(b.target(KIND_JOIN).joinPort).toBe(true);
    memory.blackholed();
    b.joinReached(); // a join port answered: they work again
    expect(memory.avoiding).toBe(false);
  });

  test("wrong-worker answers are redialled at once up to 4 × workers in a row per stripe, then left to backoff", () => {
    const r = new JoinRoute(MAIN, new JoinMemory(() => 0));
    r.learn([joinOption({ worker: 2, workers: 3, port: 0 })]);
    const bound = WRONG_WORKER_TRIES_PER_WORKER * 3;
    for (let i = 1; i < bound; i++) expect(r.wrongWorker(5)).toBe(true);
    expect(r.wrongWorker(5)).toBe(false);
    expect(r.wrongWorker(5)).toBe(false);
    expect(r.wrongWorker(6)).toBe(true); // per stripe index
    r.attached(5);
    expect(r.wrongWorker(5)).toBe(true); // starts over once attached
  });
});

describe("admission on a worker", () => {
  const hello = (kind: number, options = [workerOption(1)]): ClientHello =>
    ({ sid: new Uint8Array(16).fill(7), header: { kind, stripeIndex: 1, options } }) as unknown as ClientHello;
  const noMember = (): Membership => ({ secret: new Uint8Array(32), keyId: "" });
  const policy = (worker?: number): AdmissionPolicy => ({ maxStripes: 64, worker });
  const registry = new SessionRegistry<{ closed: boolean }>(4);

  test("a JOIN for a session held elsewhere, naming another worker: WRONG_WORKER; the client redials", () => {
    const a = admit(hello(KIND_JOIN), "", registry as never, policy(0), noMember);
    expect(a).toMatchObject({ kind: "refuse", status: STATUS_WRONG_WORKER, code: "E_WRONG_WORKER" });
    expect(judgeReply({ status: STATUS_WRONG_WORKER, flags: 0, window: 0, options: [] })).toMatchObject({ kind: "retry", error: { code: "E_WRONG_WORKER" } });
  });

  test("naming this worker, naming none, or on a single process: UNKNOWN_SESSION (the session is gone)", () => {
    for (const [h, p] of [[hello(KIND_JOIN), policy(1)], [hello(KIND_JOIN, []), policy(0)], [hello(KIND_JOIN), policy(undefined)]] as const) {
      expect(admit(h, "", registry as never, p, noMember)).toMatchObject({ kind: "refuse", status: STATUS_UNKNOWN_SESSION });
    }
  });
});

describe("planning the workers", () => {
  test("join ports: a range gives worker k FIRST + k; default is the listen port + 1 + k; 0 and port 0 pick any", () => {
    expect(joinPortsFor(MAIN, "7101-7108", 3)).toEqual([7101, 7102, 7103]);
    expect(joinPortsFor(MAIN, undefined, 3)).toEqual([7001, 7002, 7003]);
    expect(joinPortsFor(MAIN, "0", 2)).toEqual([0, 0]);
    expect(joinPortsFor({ host: "127.0.0.1", port: 0 }, undefined, 2)).toEqual([0, 0]);
  });

  test("join ports that cannot work are a usage error with the reason", () => {
    expect(() => joinPortsFor(MAIN, "7101-7102", 3)).toThrow(UsageError);
    expect(() => joinPortsFor(MAIN, "7101-7102", 3)).toThrow("2 port(s) for 3 workers");
    expect(() => joinPortsFor({ host: "h", port: 65534 }, undefined, 3)).toThrow("run past 65535");
    expect(() => joinPortsFor(MAIN, "6999-7002", 3)).toThrow("include the listen port 7000");
  });

  test("restart backoff: at once after a long run, doubling from 100 ms after quick exits, capped", () => {
    expect(restartDelayMs(0)).toBe(0);
    expect(restartDelayMs(1)).toBe(RESTART_BASE_MS);
    expect(restartDelayMs(2)).toBe(2 * RESTART_BASE_MS);
    expect(restartDelayMs(30)).toBe(RESTART_MAX_MS);
  });

  test("the worker spec in the environment is checked: malformed is E_WORKER, absent is a single process", () => {
    expect(workerSpecOf({})).toBeUndefined();
    const ok = { index: 1, workers: 2, ports: [7000], joinPorts: [7002] };
    expect(workerSpecOf({ [WORKER_ENV]: JSON.stringify(ok) })).toEqual(ok);
    for (const bad of ["{", JSON.stringify({ ...ok, index: 2 }), JSON.stringify({ ...ok, joinPorts: [] }), JSON.stringify({ ...ok, ports: [70000] })]) {
      let err: unknown;
      try {
        workerSpecOf({ [WORKER_ENV]: bad });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(StriperError);
      expect((err as StriperError).code).toBe("E_WORKER");
    }
  });

  test("the fleet's counters are the workers' summed, maps merged key by key", () => {
    const sum = sumCounters([
      { sessionsTotal: 3, bytesUp: 10, sessionsRefused: { limit: 1 } },
      { sessionsTotal: 4, sessionsRefused: { limit: 2, draining: 1 } },
    ]);
    expect(sum).toEqual({ sessionsTotal: 7, bytesUp: 10, sessionsRefused: { limit: 3, draining: 1 } });
  });
});
