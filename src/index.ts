/** tcp-striper as a library: the pipe contract, its implementations, the bridge and the proxies. */

export type { Pipe, PipeHandler, PipeState, PipeStats } from "./pipe/pipe.ts";
export { TcpPipe, connectTcp, listenTcp, formatAddress, type Address, type TcpListener } from "./pipe/tcp.ts";
export { Bridge, type BridgeResult, type BridgeDirection } from "./pipe/bridge.ts";
export { StripedPipe, DEFAULT_SESSION_OPTIONS, type SessionOptions, type SessionMetrics } from "./pipe/striped.ts";
export { createScheduler, SCHEDULER_MODES, type Scheduler, type SchedulerMode, type StripeView } from "./stripe/scheduler.ts";
export { validateSessionOptions, SESSION_LIMITS, STRIPE_COUNT } from "./config.ts";
export { REAL_CLOCK, type Clock } from "./clock.ts";
export { ReorderBuffer } from "./stripe/reorder.ts";
export { SendBuffer } from "./stripe/sendbuf.ts";
export { startServer, type ServerOptions, type StriperServer } from "./proxy/server.ts";
export type { StripeAuth } from "./proxy/handshake.ts";
export { generateKey, keyFromBytes, loadKeys, parseKeys, fingerprint, type Key, type LoadedKeys } from "./secure/keys.ts";
export { KeyError, RecordError } from "./secure/errors.ts";
export { SealedPipe } from "./pipe/sealed.ts";
export type { SilentReason } from "./secure/messages.ts";
export { startClient, type ClientOptions, type StriperClient } from "./proxy/client.ts";
export { plainFront, combinedFront, type Front, type FrontListener, type AppConnection, type AppAnswer, type Destination } from "./proxy/front.ts";
export { socksFront, type SocksFrontOptions } from "./proxy/socks.ts";
export { SocksUsers, loadUsers, parseUsers } from "./proxy/users.ts";
export { destinationOf, formatDestination, SERVER_DEFAULT, type Outcome } from "./proxy/destination.ts";
export { parseAllowRule, parseAllowRules, type AllowRule } from "./proxy/allow.ts";
export { startRelay, type RelayOptions, type Relay } from "./proxy/relay.ts";
export { DatagramPipe, MessageDecoder, encodeMessage } from "./pipe/datagram.ts";
export { startCappedLink, type CappedLink, type CappedLinkOptions } from "./link/capped.ts";
export { startFaultProxy, type FaultProxy, type FaultProxyOptions } from "./link/fault.ts";
export * from "./errors.ts";
