/**
 * The SOCKS front (`client --socks HOST:PORT`, issue 13): SOCKS5 (RFC 1928) with CONNECT, "no
 * authentication" or username/password (RFC 1929, with `--socks-users`), and on the same port HTTP
 * CONNECT (src/proxy/http-connect.ts). The first byte says which: 0x05 SOCKS5; an upper-case letter an
 * HTTP request; 0x04 (SOCKS4) gets SOCKS4's "rejected" reply; anything else is closed without one.
 *
 * Every stage (greeting, login, request) is read by the handshake reader with a pure parser, under one
 * absolute deadline for the whole negotiation and a size limit per message; a malformed request gets the
 * protocol's error reply (where it has one) and a close, never a crash. Names are not resolved here: the
 * server resolves them (socks5h semantics), so a client may name hosts only the server can see.
 *
 * Replies: with `waits` (the default, `--socks-reply wait`) the front answers the app once the server
 * says what became of the connect — 0x00 / 200, or 0x02 not allowed / 403, 0x04 name did not resolve /
 * 502, 0x05 refused / 502, 0x06 timeout / 504, 0x01 anything else / 502 — at the cost of one round trip
 * to the server before the app's first byte. Without (`--socks-reply immediate`) it answers success at
 * once and a failure shows as a reset connection.
 */

import { StriperError, BrokenError } from "../errors.ts";
import type { Pipe } from "../pipe/pipe.ts";
import { formatAddress, listenTcp, type Address, type TcpPipe } from "../pipe/tcp.ts";
import type { HandshakeParser, ParseStep } from "../wire/handshake.ts";
import { ATYP_IPV4, ATYP_IPV6, ATYP_NAME, destinationOf, formatDestination, type Destination, type Outcome } from "./destination.ts";
import type { AppAnswer, AppConnection, Front, FrontListener } from "./front.ts";
import { readHandshake } from "./handshake.ts";
import { AppRequestError, PROXY_AUTH_REQUIRED, httpConnectParser, httpResponse, httpStatusOf, type ConnectRequest } from "./http-connect.ts";
import { escapeText, stderrLog, type LogSink } from "./log.ts";
import type { SocksUsers } from "./users.ts";

/** Default deadline for the whole negotiation (greeting to request), ms. */
export const SOCKS_REQUEST_TIMEOUT_MS = 10_000;
/** Default connections negotiating at once; beyond it newcomers are closed. */
export const SOCKS_MAX_PENDING = 1024;

/** SOCKS5 method: no authentication. */
export const METHOD_NONE = 0x00;
/** SOCKS5 method: username/password (RFC 1929). */
export const METHOD_USERPASS = 0x02;
/** SOCKS5 method reply: none of the offered methods is acceptable. */
export const METHOD_UNACCEPTABLE = 0xff;

/** SOCKS5 reply codes (RFC 1928 §6). */
export const REP = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowed: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  refused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;

/** A SOCKS5 reply with BND.ADDR 0.0.0.0:0 (clients do not use it for CONNECT). */
export function socksReply(rep: number): Uint8Array {
  return Uint8Array.of(5, rep, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0);
}

/** The SOCKS5 reply code an outcome is answered with. */
export function socksReplyOf(outcome: Outcome): number {
  switch (outcome) {
    case "connected":
      return REP.succeeded;
    case "not-allowed":
      return REP.notAllowed;
    case "unresolved":
    case "unreachable":
      return REP.hostUnreachable;
    case "refused":
      return REP.refused;
    case "timeout":
      return REP.ttlExpired;
    case "failed":
      return REP.generalFailure;
    default: {
      const never: never = outcome;
      throw new Error(`unknown outcome ${String(never)}`);
    }
  }
}

/** SOCKS4's "request rejected or failed" (a SOCKS4 client learns at once that this is not for it). */
const SOCKS4_REJECTED = Uint8Array.of(0, 0x5b, 0, 0, 0, 0, 0, 0);
/** RFC 1929 status: success / failure. */
const LOGIN_OK = Uint8Array.of(1, 0);
const LOGIN_FAILED = Uint8Array.of(1, 1);

const invalid = <T>(why: string, reply: Uint8Array | undefined, code?: "E_APP_AUTH"): ParseStep<T> => ({ kind: "invalid", error: new AppRequestError(why, reply, code) });

/** What the first message of a connection was. */
export type FirstMessage = { readonly kind: "socks5"; readonly methods: readonly number[] } | { readonly kind: "http"; readonly request: ConnectRequest };

/** The first message: a SOCKS5 greeting (VER 5, NMETHODS, METHODS) or an HTTP request, told by byte 0. */
export const firstMessageParser: HandshakeParser<FirstMessage> = (b) => {
  if (b.byteLength < 1) return { kind: "more", bytes: 1 };
  const v = b[0]!;
  if (v === 0x05) {
    if (b.byteLength < 2) return { kind: "more", bytes: 1 };
    const n = b[1]!;
    if (n === 0) return invalid("SOCKS5 greeting offers no method", Uint8Array.of(5, METHOD_UNACCEPTABLE));
    if (b.byteLength < 2 + n) return { kind: "more", bytes: 2 + n - b.byteLength };
    return { kind: "done", size: 2 + n, value: { kind: "socks5", methods: [...b.subarray(2, 2 + n)] } };
  }
  if (v === 0x04) return invalid("SOCKS4 is not supported (SOCKS5 or HTTP CONNECT)", SOCKS4_REJECTED);
  if (v >= 0x41 && v <= 0x5a) {
    const s = httpConnectParser(b);
    return s.kind === "done" ? { kind: "done", size: s.size, value: { kind: "http", request: s.value } } : s;
  }
  return invalid(`first byte 0x${v.toString(16).padStart(2, "0")} is neither SOCKS5 nor HTTP`, undefined);
};

/** An RFC 1929 login: VER 1, ULEN, UNAME, PLEN, PASSWD. */
export interface Login {
  user: Uint8Array;
  password: Uint8Array;
}

/** The RFC 1929 username/password message; a bad version or an empty field fails with status 1. */
export const loginParser: HandshakeParser<Login> = (b) => {
  if (b.byteLength < 2) return { kind: "more", bytes: 2 - b.byteLength };
  if (b[0] !== 1) return invalid(`login sub-negotiation version ${b[0]} (expected 1)`, LOGIN_FAILED, "E_APP_AUTH");
  const ulen = b[1]!;
  if (ulen === 0) return invalid("empty user name", LOGIN_FAILED, "E_APP_AUTH");
  if (b.byteLength < 3 + ulen) return { kind: "more", bytes: 3 + ulen - b.byteLength };
  const plen = b[2 + ulen]!;
  if (plen === 0) return invalid("empty password", LOGIN_FAILED, "E_APP_AUTH");
  const size = 3 + ulen + plen;
  if (b.byteLength < size) return { kind: "more", bytes: size - b.byteLength };
  return { kind: "done", size, value: { user: b.slice(2, 2 + ulen), password: b.slice(3 + ulen, size) } };
};

const COMMANDS: Record<number, string> = { 1: "CONNECT", 2: "BIND", 3: "UDP ASSOCIATE" };

/**
 * The SOCKS5 request: VER 5, CMD, RSV, ATYP, DST.ADDR, DST.PORT. CONNECT only (BIND and UDP ASSOCIATE,
 * and unknown commands: 0x07); IPv4, IPv6 and names (others: 0x08); a name that is not a host name, or
 * port 0: 0x01; a version other than 5: 0x01.
 */
export const requestParser: HandshakeParser<Destination> = (b) => {
  if (b.byteLength < 5) return { kind: "more", bytes: 5 - b.byteLength };
  if (b[0] !== 5) return invalid(`request version ${b[0]} (expected 5)`, socksReply(REP.generalFailure));
  const cmd = b[1]!;
  if (cmd !== 1) return invalid(`command ${COMMANDS[cmd] ?? cmd} not supported (CONNECT only)`, socksReply(REP.commandNotSupported));
  const atyp = b[3]!;
  let addrLen: number;
  let at = 4;
  if (atyp === ATYP_IPV4) addrLen = 4;
  else if (atyp === ATYP_IPV6) addrLen = 16;
  else if (atyp === ATYP_NAME) {
    addrLen = b[4]!;
    at = 5;
    if (addrLen === 0) return invalid("empty host name", socksReply(REP.generalFailure));
  } else return invalid(`address type ${atyp} not supported`, socksReply(REP.addressTypeNotSupported));
  const size = at + addrLen + 2;
  if (b.byteLength < size) return { kind: "more", bytes: size - b.byteLength };
  const port = (b[at + addrLen]! << 8) | b[at + addrLen + 1]!;
  const addr = b.subarray(at, at + addrLen);
  if (port === 0) return invalid("port 0", socksReply(REP.generalFailure));
  if (atyp !== ATYP_NAME) return { kind: "done", size, value: { kind: "ip", ip: new Uint8Array(addr), port } };
  let name = "";
  for (const c of addr) name += String.fromCharCode(c);
  try {
    return { kind: "done", size, value: destinationOf(name, port) };
  } catch {
    return invalid(`"${escapeText(name, 64)}" is not a host name`, socksReply(REP.generalFailure));
  }
};

/** Options of the SOCKS front. */
export interface SocksFrontOptions {
  listen: Address;
  /** With users, SOCKS5 requires RFC 1929 and HTTP CONNECT a Basic Proxy-Authorization. */
  users?: SocksUsers;
  /** Answer the app after the server's verdict (true, the default) or at once (false). */
  waits?: boolean;
  /** Deadline for the whole negotiation, ms (default 10 000). */
  requestTimeoutMs?: number;
  /** Connections negotiating at once (default 1024). */
  maxPending?: number;
  log?: LogSink;
}

/** Writes `reply` (if any), half-closes, and closes for good once the app has gone or after a second. */
function closeWith(pipe: Pipe, reply: Uint8Array | undefined): void {
  if (pipe.state === "closed") return;
  pipe.setHandler({ data() {}, drain() {}, end: () => pipe.close(), close() {} });
  if (reply !== undefined && pipe.writable) pipe.send(reply);
  pipe.shutdown();
  pipe.resume();
  setTimeout(() => pipe.close(), 1000).unref?.();
}

/** The SOCKS5 + HTTP CONNECT front on `opts.listen`. */
export function socksFront(opts: SocksFrontOptions): Front {
  const log = opts.log ?? stderrLog;
  const waits = opts.waits ?? true;
  const timeout = opts.requestTimeoutMs ?? SOCKS_REQUEST_TIMEOUT_MS;
  const maxPending = opts.maxPending ?? SOCKS_MAX_PENDING;
  const users = opts.users;
  let pending = 0;

  return {
    listen(onApp): FrontListener {
      const accept = (pipe: TcpPipe): void => {
        if (pending >= maxPending) {
          pipe.setHandler({ data() {}, drain() {}, end() {}, close() {} });
          pipe.close(new BrokenError("E_APP_REQUEST", "too many requests being negotiated"));
          return;
        }
        pending++;
        let settled = false;
        const settle = (): void => {
          if (!settled) pending--;
          settled = true;
        };
        const deadline = performance.now() + timeout;
        const left = (): number => Math.max(1, deadline - performance.now());
        const refuse = (err: StriperError): void => {
          settle();
          if (err instanceof AppRequestError) log(`app ${escapeText(pipe.remote, 80)} request refused: ${err.code} ${escapeText(err.message)}`);
          if (err instanceof AppRequestError) closeWith(pipe, err.reply);
          else pipe.close(); // timeout, EOF: nothing to answer
        };

        /** Hands the connection over, answering now or later as the reply mode says. */
        const deliver = (destination: Destination, leftover: Uint8Array, http: boolean): void => {
          settle();
          const success = http ? httpResponse(200) : socksReply(REP.succeeded);
          const answer: AppAnswer = {
            waits,
            connected: () => {
              if (pipe.writable) pipe.send(success);
            },
            failed: (o) => closeWith(pipe, http ? httpResponse(httpStatusOf(o)) : socksReply(socksReplyOf(o))),
          };
          if (!waits) pipe.send(success);
          const app: AppConnection = { pipe, remote: pipe.remote, destination, leftover, answer };
          onApp(app);
          pipe.resume();
        };

        const request = (prefix: Uint8Array): void => {
          readHandshake(pipe, requestParser, { deadlineMs: left(), prefix, maxBytes: 512 }, (r) => {
            if (r instanceof StriperError) return refuse(r);
            deliver(r.value, r.leftover, false);
          });
          pipe.resume();
        };

        const socks5 = (methods: readonly number[], leftover: Uint8Array): void => {
          const method = users !== undefined ? (methods.includes(METHOD_USERPASS) ? METHOD_USERPASS : METHOD_UNACCEPTABLE) : methods.includes(METHOD_NONE) ? METHOD_NONE : METHOD_UNACCEPTABLE;
          if (method === METHOD_UNACCEPTABLE) {
            const why = users !== undefined ? "the app offers no username/password login (users are required)" : "the app offers no method without authentication";
            return refuse(new AppRequestError(why, Uint8Array.of(5, METHOD_UNACCEPTABLE), users !== undefined ? "E_APP_AUTH" : "E_APP_REQUEST"));
          }
          pipe.send(Uint8Array.of(5, method));
          if (method === METHOD_NONE) return request(leftover);
          readHandshake(pipe, loginParser, { deadlineMs: left(), prefix: leftover, maxBytes: 600 }, (r) => {
            if (r instanceof StriperError) return refuse(r);
            if (!users!.check(r.value.user, r.value.password)) {
              return refuse(new AppRequestError(`wrong username or password for "${escapeText(Buffer.from(r.value.user).toString("latin1"), 64)}"`, LOGIN_FAILED, "E_APP_AUTH"));
            }
            pipe.send(LOGIN_OK);
            request(r.leftover);
          });
          pipe.resume();
        };

        readHandshake(pipe, firstMessageParser, { deadlineMs: left(), maxBytes: 16_384 }, (r) => {
          if (r instanceof StriperError) return refuse(r);
          const m = r.value;
          switch (m.kind) {
            case "socks5":
              return socks5(m.methods, r.leftover);
            case "http": {
              if (users !== undefined) {
                const l = m.request.login;
                if (l === undefined) return refuse(new AppRequestError("no Proxy-Authorization (users are required)", PROXY_AUTH_REQUIRED, "E_APP_AUTH"));
                if (!users.check(l.user, l.password)) return refuse(new AppRequestError(`wrong username or password for "${escapeText(l.user, 64)}"`, PROXY_AUTH_REQUIRED, "E_APP_AUTH"));
              }
              return deliver(m.request.destination, r.leftover, true);
            }
            default: {
              const never: never = m;
              throw new Error(`unknown first message ${JSON.stringify(never)}`);
            }
          }
        });
      };
      const listener = listenTcp(opts.listen, accept);
      return {
        port: listener.port,
        address: formatAddress({ host: opts.listen.host, port: listener.port }),
        stop: () => listener.stop(),
      };
    },
  };
}

/** For logs: what an app asked for. */
export function describeRequest(d: Destination): string {
  return escapeText(formatDestination(d));
}
