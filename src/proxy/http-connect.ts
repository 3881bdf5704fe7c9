/**
 * HTTP CONNECT (RFC 9110 §9.3.6) for the SOCKS front's port (issue 13): `curl -x http://…`, git, pip and
 * browsers' "HTTP proxy" open tunnels with it. A pure parser for the handshake reader and the responses.
 *
 *   CONNECT example.com:443 HTTP/1.1\r\n
 *   Host: example.com:443\r\n
 *   Proxy-Authorization: Basic dXNlcjpwYXNz\r\n      (required when the front has users)
 *   \r\n
 *
 * Anything else gets the status that says why, then the connection closes: a method other than CONNECT
 * 501, a malformed request 400, headers above MAX_HTTP_REQUEST 431, a missing or wrong login 407.
 */

import { StriperError } from "../errors.ts";
import type { HandshakeParser } from "../wire/handshake.ts";
import { destinationOf, type Destination, type Outcome } from "./destination.ts";

/** Largest request (line and headers) read; more is 431. */
export const MAX_HTTP_REQUEST = 8192;

/** A request the front refuses: the response to send (if the protocol has one) and why, for the log. */
export class AppRequestError extends StriperError {
  constructor(
    message: string,
    /** What to write to the app before closing; undefined: close without a reply. */
    readonly reply: Uint8Array | undefined,
    code: "E_APP_REQUEST" | "E_APP_AUTH" = "E_APP_REQUEST",
  ) {
    super(code, message);
    this.name = "AppRequestError";
  }
}

/** A CONNECT request, read. */
export interface ConnectRequest {
  destination: Destination;
  /** The decoded `user:password` of a Basic Proxy-Authorization header, if one came. */
  login: { user: string; password: string } | undefined;
}

const REASONS: Record<number, string> = {
  200: "Connection established",
  400: "Bad Request",
  403: "Forbidden",
  407: "Proxy Authentication Required",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
  502: "Bad Gateway",
  504: "Gateway Timeout",
};

/** An HTTP/1.1 response with no body; errors ask the client to close. */
export function httpResponse(status: number, extra: readonly string[] = []): Uint8Array {
  const lines = [`HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}`, ...extra];
  if (status !== 200) lines.push("Content-Length: 0", "Connection: close");
  return new TextEncoder().encode(`${lines.join("\r\n")}\r\n\r\n`);
}

/** The status an outcome is answered with: 403 not allowed, 504 timeout, 502 the rest. */
export function httpStatusOf(outcome: Outcome): number {
  switch (outcome) {
    case "connected":
      return 200;
    case "not-allowed":
      return 403;
    case "timeout":
      return 504;
    case "unresolved":
    case "refused":
    case "unreachable":
    case "failed":
      return 502;
    default: {
      const never: never = outcome;
      throw new Error(`unknown outcome ${String(never)}`);
    }
  }
}

/** The challenge a 407 carries: the client answers with Basic credentials. */
const CHALLENGE = 'Proxy-Authenticate: Basic realm="tcp-striper"';

/** 407 with the challenge. */
export const PROXY_AUTH_REQUIRED = httpResponse(407, [CHALLENGE]);

const fail = (status: number, why: string, code?: "E_APP_AUTH") => ({
  kind: "invalid" as const,
  error: new AppRequestError(why, status === 407 ? PROXY_AUTH_REQUIRED : httpResponse(status), code),
});

/** The end of the header block: "\r\n\r\n" (bare "\n\n" is accepted too, as HTTP parsers commonly do). */
function headerEnd(b: Uint8Array): { at: number; size: number } | undefined {
  for (let i = 0; i + 1 < b.byteLength; i++) {
    if (b[i] !== 0x0a) continue;
    if (b[i + 1] === 0x0a) return { at: i, size: i + 2 };
    if (b[i + 1] === 0x0d && b[i + 2] === 0x0a) return { at: i, size: i + 3 };
  }
  return undefined;
}

/** Splits "host:port" or "[v6]:port" (the CONNECT request target, RFC 9110 authority-form). */
function authority(text: string): { host: string; port: number } | undefined {
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:\[\]\s]+):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  return { host: m[1]!, port: Number(m[2]) };
}

/** Decodes a `Basic` credential; undefined when malformed. */
function basicLogin(value: string): { user: string; password: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/]+=*)\s*$/i.exec(value);
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, "base64").toString("latin1");
  const colon = text.indexOf(":");
  if (colon < 0) return undefined;
  return { user: text.slice(0, colon), password: text.slice(colon + 1) };
}

/**
 * The parser of a CONNECT request for the handshake reader: the request line and headers up to the
 * blank line, at most MAX_HTTP_REQUEST bytes. Invalid steps carry an AppRequestError with the response.
 */
export const httpConnectParser: HandshakeParser<ConnectRequest> = (received) => {
  const end = headerEnd(received);
  if (end === undefined) {
    if (received.byteLength >= MAX_HTTP_REQUEST) return fail(431, `request headers above ${MAX_HTTP_REQUEST} bytes`);
    return { kind: "more", bytes: 1 };
  }
  if (end.size > MAX_HTTP_REQUEST) return fail(431, `request headers above ${MAX_HTTP_REQUEST} bytes`);
  const text = Buffer.from(received.subarray(0, end.at)).toString("latin1");
  const lines = text.split(/\r?\n/);
  const first = /^([A-Z]+) (\S+) HTTP\/1\.[01]\r?$/.exec(lines[0]!);
  if (!first) return fail(400, "not an HTTP/1.x request line");
  if (first[1] !== "CONNECT") return fail(501, `method ${first[1]} (only CONNECT is proxied)`);
  const target = authority(first[2]!);
  if (target === undefined) return fail(400, "CONNECT target is not host:port");
  let destination: Destination;
  try {
    destination = destinationOf(target.host, target.port);
  } catch (err) {
    return fail(400, (err as Error).message);
  }
  let login: ConnectRequest["login"];
  for (const line of lines.slice(1)) {
    const l = line.endsWith("\r") ? line.slice(0, -1) : line;
    const colon = l.indexOf(":");
    if (colon <= 0 || /\s/.test(l.slice(0, colon))) return fail(400, "malformed header line");
    if (l.slice(0, colon).toLowerCase() === "proxy-authorization") {
      login = basicLogin(l.slice(colon + 1).trim());
      if (login === undefined) return fail(407, "Proxy-Authorization is not Basic user:password", "E_APP_AUTH");
    }
  }
  return { kind: "done", size: end.size, value: { destination, login } };
};
