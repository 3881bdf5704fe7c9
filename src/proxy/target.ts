/**
 * The server's connection to a session's destination (issue 13): judge it against the allowlist,
 * resolve the name (bounded in time and in lookups at once), judge every address again (SSRF defaults),
 * and connect to an address that passed — never to a second resolution of the name, so a name that
 * re-resolves elsewhere between check and use (DNS rebinding) gets nowhere. The connect has its own
 * deadline (the kernel's would be minutes).
 *
 * What it decides:
 *   server-default   the server's `--target` (the operator's choice: not judged); refused without one
 *   an address       allowed by an address rule containing it, or by `*` when it is not special
 *   a name           refused at once unless some rule could allow it; else resolved, each address judged
 *
 * Failures are ConnectErrors whose `resetCode` tells the client why (docs/protocol.md §4.6):
 * E_NOT_ALLOWED (6), E_UNRESOLVED (7, also a lookup timeout), ECONNREFUSED (8), E_CONNECT_TIMEOUT (9),
 * anything else (5). The caller logs one line and ends the session with the error.
 */

import { lookup as dnsLookup } from "node:dns/promises";
import { networkInterfaces } from "node:os";
import { ConnectError, StriperError, asStriperError } from "../errors.ts";
import { connectTcp, formatAddress, type Address, type TcpPipe } from "../pipe/tcp.ts";
import { ResetCode } from "../wire/constants.ts";
import { anyRule, judgeAddress, judgeName, type AllowRule } from "./allow.ts";
import { connectResetCode, formatDestination, notAllowed, unresolved, type Destination } from "./destination.ts";
import { canonical, formatIp, normalizeHostname, parseIp, sameIp, type Ip } from "./ip.ts";

/** Default deadline for the TCP connect to a target, ms. */
export const CONNECT_TIMEOUT_MS = 10_000;
/** Default deadline for a name lookup (from the request, queueing included), ms. */
export const DNS_TIMEOUT_MS = 5_000;
/** Default lookups running at once; getaddrinfo() occupies a thread each. */
export const MAX_LOOKUPS = 32;
/** Default lookups waiting for a slot; beyond it a session fails at once (E_DNS_BUSY). */
export const MAX_LOOKUP_QUEUE = 512;
/** Addresses of one name tried in turn (each with what is left of the deadline). */
const MAX_ATTEMPTS = 3;
/** How long the server's own addresses are cached, ms. */
const OWN_TTL_MS = 10_000;

/** What client-chosen destinations may reach, and where sessions without one go. */
export interface TargetPolicy {
  /** The server's `--target`; undefined: a session that names no destination is refused. */
  readonly defaultTarget: Address | undefined;
  /** `--allow` rules; none: every client-chosen destination is refused (except the default target itself). */
  readonly rules: readonly AllowRule[];
}

/** A resolved address: text and family, as getaddrinfo gives them. */
export interface LookupAddress {
  address: string;
  family: number;
}

/** Options of a TargetOpener; everything but the policy has a default. */
export interface TargetOpenerOptions {
  policy: TargetPolicy;
  connectTimeoutMs?: number;
  dnsTimeoutMs?: number;
  maxLookups?: number;
  maxLookupQueue?: number;
  /** Resolves a name to all its addresses (default: getaddrinfo through node:dns). Tests inject one. */
  lookup?: (name: string) => Promise<LookupAddress[]>;
  /** Opens a TCP connection (default connectTcp). */
  connect?: (to: Address) => TcpPipe;
  /** The server's own addresses (default: every interface's, cached 10 s). */
  ownAddresses?: () => readonly Ip[];
}

/**
 * Why a destination was not connected, as a metric label (the server's refusals by reason):
 * not-allowed (no rule), ssrf (a special or own address no rule names), dns (did not resolve or timed
 * out), dns-busy (too many lookups waiting), target-refused, target-timeout, target-unreachable.
 */
export type RefusalReason = "not-allowed" | "ssrf" | "dns" | "dns-busy" | "target-refused" | "target-timeout" | "target-unreachable";

/** The label of a failed connect's error (the judging steps give theirs directly). */
function connectReason(e: ConnectError): RefusalReason {
  switch (e.resetCode) {
    case ResetCode.TargetRefused:
      return "target-refused";
    case ResetCode.TargetTimeout:
      return "target-timeout";
    case ResetCode.TargetUnresolved:
      return e.code === "E_DNS_BUSY" ? "dns-busy" : "dns";
    case ResetCode.NotAllowed:
      return "not-allowed";
    default:
      return "target-unreachable";
  }
}

/** How an open ended. */
export type TargetResult =
  /** Connected: `pipe` is open; its handler must be installed before `done` returns. `address` is where. */
  | { readonly ok: true; readonly pipe: TcpPipe; readonly address: string; readonly rule: string | undefined }
  | { readonly ok: false; readonly error: ConnectError; readonly reason: RefusalReason };

const defaultLookup = (name: string): Promise<LookupAddress[]> => dnsLookup(name, { all: true, verbatim: true });

/** Every interface address of this host, canonical. */
function interfaceAddresses(): Ip[] {
  const out: Ip[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      const ip = parseIp(a.address.split("%")[0]!);
      if (ip !== undefined) out.push(canonical(ip));
    }
  }
  return out;
}

/** Opens the server's connections to destinations; one per server, shared by its sessions. */
export class TargetOpener {
  private policy: TargetPolicy;
  private readonly connectTimeoutMs: number;
  private readonly dnsTimeoutMs: number;
  private readonly maxLookups: number;
  private readonly maxQueue: number;
  private readonly lookup: (name: string) => Promise<LookupAddress[]>;
  private readonly connect: (to: Address) => TcpPipe;
  private readonly own: () => readonly Ip[];
  private lookups = 0;
  private readonly queue: (() => void)[] = [];
  private ownCache: { at: number; list: Ip[] } | undefined;

  constructor(opts: TargetOpenerOptions) {
    this.policy = opts.policy;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    this.dnsTimeoutMs = opts.dnsTimeoutMs ?? DNS_TIMEOUT_MS;
    this.maxLookups = opts.maxLookups ?? MAX_LOOKUPS;
    this.maxQueue = opts.maxLookupQueue ?? MAX_LOOKUP_QUEUE;
    this.lookup = opts.lookup ?? defaultLookup;
    this.connect = opts.connect ?? connectTcp;
    this.own =
      opts.ownAddresses ??
      (() => {
        const now = performance.now();
        if (this.ownCache === undefined || now - this.ownCache.at > OWN_TTL_MS) this.ownCache = { at: now, list: interfaceAddresses() };
        return this.ownCache.list;
      });
  }

  /** Replaces the policy (a reload): sessions opened from now on are judged by it. */
  setPolicy(policy: TargetPolicy): void {
    this.policy = policy;
  }

  /** The policy in force. */
  get current(): TargetPolicy {
    return this.policy;
  }

  /** Name lookups running now (for statistics and tests). */
  get activeLookups(): number {
    return this.lookups;
  }

  /**
   * Judges, resolves and connects `d`; calls `done` once (never synchronously). Returns a cancel function:
   * after it, `done` is not called and a connection being made is closed.
   */
  open(d: Destination, done: (r: TargetResult) => void): () => void {
    let over = false;
    let pipe: TcpPipe | undefined;
    const finish = (r: TargetResult): void => {
      if (over) {
        if (r.ok) r.pipe.close();
        return;
      }
      over = true;
      done(r);
    };
    const fail = (error: ConnectError, reason: RefusalReason = connectReason(error)): void => finish({ ok: false, error, reason });
    const policy = this.policy;
    queueMicrotask(() => {
      if (over) return;
      switch (d.kind) {
        case "server-default":
          if (policy.defaultTarget === undefined) return fail(notAllowed("this server has no default target: the client must name a destination"));
          return this.dial([policy.defaultTarget], undefined, finish, (p) => (pipe = p), () => over);
        case "ip": {
          const port = d.port;
          const asDefault = policy.defaultTarget !== undefined && sameDefault(policy.defaultTarget, d);
          if (asDefault) return this.dial([policy.defaultTarget!], undefined, finish, (p) => (pipe = p), () => over);
          const v = judgeAddress(policy.rules, d.ip, port, anyRule(policy.rules, port), this.own());
          if (!v.ok) return fail(notAllowed(v.why), v.special ? "ssrf" : "not-allowed");
          return this.dial([{ host: formatIp(d.ip), port }], v.rule, finish, (p) => (pipe = p), () => over);
        }
        case "name": {
          const name = normalizeHostname(d.name);
          if (policy.defaultTarget !== undefined && sameDefault(policy.defaultTarget, d)) {
            return this.dial([policy.defaultTarget], undefined, finish, (p) => (pipe = p), () => over);
          }
          const nv = judgeName(policy.rules, name, d.port);
          if (nv.kind === "refused") return fail(notAllowed(`${formatDestination(d)}: ${nv.why}`));
          const byName = nv.kind === "by-name" ? nv.rule : undefined;
          this.resolve(name, (r) => {
            if (over) return;
            if (r instanceof StriperError) return fail(r as ConnectError);
            const allowed: Address[] = [];
            let firstWhy: string | undefined;
            let special = false;
            let rule: string | undefined;
            const own = this.own();
            for (const a of r) {
              const ip = parseIp(a.address.split("%")[0]!);
              if (ip === undefined) continue;
              const v = judgeAddress(policy.rules, ip, d.port, byName, own);
              if (v.ok) {
                allowed.push({ host: formatIp(ip), port: d.port });
                rule ??= v.rule;
              } else if (firstWhy === undefined) {
                firstWhy = v.why;
                special = v.special;
              }
            }
            if (allowed.length === 0) {
              if (firstWhy === undefined) return fail(unresolved(`${name}: no address`));
              return fail(notAllowed(`${name} resolves to ${firstWhy}`), special ? "ssrf" : "not-allowed");
            }
            this.dial(allowed.slice(0, MAX_ATTEMPTS), rule, finish, (p) => (pipe = p), () => over);
          });
          return;
        }
        default: {
          const never: never = d;
          throw new Error(`unknown destination ${JSON.stringify(never)}`);
        }
      }
    });
    return () => {
      if (over) return;
      over = true;
      pipe?.close();
    };
  }

  /** Looks `name` up within the DNS deadline, in a bounded number of lookups at once. */
  private resolve(name: string, done: (r: LookupAddress[] | StriperError) => void): void {
    let settled = false;
    const settle = (r: LookupAddress[] | StriperError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      done(r);
    };
    const timer = setTimeout(() => settle(unresolved(`${name}: lookup timed out after ${this.dnsTimeoutMs} ms`)), this.dnsTimeoutMs);
    timer.unref?.();
    const start = (): void => {
      if (settled) return this.nextLookup(); // timed out while queued: give the slot on
      this.lookups++;
      this.lookup(name).then(
        (list) => settle(list),
        (err: unknown) => {
          const e = asStriperError(err, "E_UNRESOLVED");
          settle(unresolved(`${name}: ${e.code}`));
        },
      ).finally(() => {
        // The slot is held until getaddrinfo() returns, deadline or not: that is what bounds the threads.
        this.lookups--;
        this.nextLookup();
      });
    };
    if (this.lookups < this.maxLookups) start();
    else if (this.queue.length < this.maxQueue) this.queue.push(start);
    else settle(new ConnectError("E_DNS_BUSY", `${this.queue.length} name lookups waiting already`, { resetCode: ResetCode.TargetUnresolved }));
  }

  private nextLookup(): void {
    while (this.lookups < this.maxLookups && this.queue.length > 0) this.queue.shift()!();
  }

  /** Connects to the first of `addrs` that answers, within the connect deadline from now. */
  private dial(addrs: readonly Address[], rule: string | undefined, finish: (r: TargetResult) => void, track: (p: TcpPipe) => void, cancelled: () => boolean): void {
    const deadline = performance.now() + this.connectTimeoutMs;
    let i = 0;
    let last: ConnectError | undefined;
    const next = (): void => {
      if (cancelled()) return;
      const to = addrs[i++];
      const left = deadline - performance.now();
      if (to === undefined || left <= 0) {
        const error = last ?? timeoutError(addrs[0]!, this.connectTimeoutMs);
        return finish({ ok: false, error, reason: connectReason(error) });
      }
      let done = false;
      const pipe = this.connect(to);
      track(pipe);
      const timer = setTimeout(() => {
        if (done) return;
        done = true;
        last = timeoutError(to, this.connectTimeoutMs);
        pipe.close(last);
        finish({ ok: false, error: last, reason: "target-timeout" }); // the deadline covers all addresses: no next one
      }, left);
      timer.unref?.();
      pipe.setHandler({
        ready: () => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          if (cancelled()) {
            pipe.close();
            return;
          }
          pipe.setHandler({ data() {}, drain() {}, end() {}, close() {} }); // until the caller's own
          finish({ ok: true, pipe, address: formatAddress(to), rule });
        },
        data() {},
        drain() {},
        end() {},
        close: (err) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          // A failed connect says "cannot connect to HOST:PORT: …" itself.
          const cause = err ?? new StriperError("ECONNRESET", `connection to ${formatAddress(to)} closed before it opened`);
          last = new ConnectError(cause.code, cause.message, { resetCode: connectResetCode(cause.code), cause });
          next();
        },
      });
    };
    next();
  }
}

function timeoutError(to: Address, ms: number): ConnectError {
  return new ConnectError("E_CONNECT_TIMEOUT", `${formatAddress(to)} did not answer within ${ms} ms`, { resetCode: ResetCode.TargetTimeout });
}

/** A client-named destination that is exactly the server's default target (same host text and port). */
function sameDefault(t: Address, d: Destination): boolean {
  if (d.kind === "server-default" || d.port !== t.port) return false;
  if (d.kind === "name") return normalizeHostname(t.host) === normalizeHostname(d.name);
  const ip = parseIp(t.host);
  return ip !== undefined && sameIp(ip, d.ip);
}
