/**
 * Wire constants of protocol v2's secure layer (docs/protocol.md §3). test/secure-messages.test.ts
 * pins every value, so an edited constant cannot silently change the protocol.
 */

/** Protocol version carried inside the authenticated header and reply. */
export const V2 = 2;

/** Bytes of a pre-shared key (and of every derived key): AES-256. */
export const KEY_SIZE = 32;
/** Bytes of the session id, in clear at offset 0 of every client first message. */
export const SID_SIZE = 16;
/** Bytes of a client or server salt: fresh random per stripe connection. */
export const SALT_SIZE = 32;
/** Bytes of the session secret S (OPEN) and of the join proof P (JOIN). */
export const SECRET_SIZE = 32;

/** AES-GCM tag bytes. */
export const TAG_SIZE = 16;
/** AES-GCM nonce bytes: 4 zero bytes ‖ u64 big-endian counter. */
export const NONCE_SIZE = 12;
/** A sealed u32 length: 4 ciphertext bytes + tag. */
export const LENGTH_RECORD_SIZE = 4 + TAG_SIZE;
/** Bytes a record adds to its body: the sealed length and the body's tag. */
export const RECORD_OVERHEAD = LENGTH_RECORD_SIZE + TAG_SIZE;
/** Largest body of a frame record (1 MiB): larger is E_RECORD_TOO_LARGE. */
export const MAX_RECORD = 1 << 20;
/** Largest body of a header or reply record (2 KiB). */
export const MAX_HEADER = 2048;
/**
 * Seals one key may make. Each record takes two (length, body). Far beyond any stripe's life, checked
 * anyway: the counter must never wrap, since a repeated (key, nonce) breaks AES-GCM.
 */
export const MAX_SEALS = 2 ** 32;

/** Plain mode (`--no-auth`): the header and reply are `u32 length ‖ body`, no tags. */
export const PLAIN_LENGTH_SIZE = 4;

/** Client first message: sid ‖ cs, then the header record. */
export const CLIENT_PREFIX_SIZE = SID_SIZE + SALT_SIZE;
/** Server first message: ss, then the reply record. */
export const SERVER_PREFIX_SIZE = SALT_SIZE;

/** Header kind: open a new session (carries the session secret S). */
export const KIND_OPEN = 1;
/** Header kind: join a live session (carries the join proof P). */
export const KIND_JOIN = 2;

/**
 * Fixed part of the header body: version u8, kind u8, flags u16, stripe index u16, generation u16,
 * stripe count u16, reserved u16, timestamp u64, window u32, secret 32 bytes. TLV options follow.
 */
export const HEADER_FIXED_SIZE = 1 + 1 + 2 + 2 + 2 + 2 + 2 + 8 + 4 + SECRET_SIZE;
/** Fixed part of the reply body: version u8, status u8, flags u16, window u32. TLV options follow. */
export const REPLY_FIXED_SIZE = 1 + 1 + 2 + 4;
/** A TLV option's own header: type u8, length u16. */
export const TLV_HEADER_SIZE = 3;

/**
 * Header flag (OPEN only): a standby stripe, opened ahead of need with no destination; its session
 * starts when the client sends a TARGET frame on it (issue 13, docs/protocol.md §3.15).
 */
export const HEADER_FLAG_STANDBY = 0x0001;
/** Header option (OPEN, TARGET frame): where the session goes; absent = the server's own target. */
export const OPT_DESTINATION = 1;

/** Reply status: the stripe is attached; frames follow. */
export const STATUS_OK = 0;
/** Reply status: a JOIN named a session the server does not have. */
export const STATUS_UNKNOWN_SESSION = 1;
/** Reply status: refused by a limit (stripe index, sessions, draining). */
export const STATUS_REFUSED = 3;
/**
 * Reply status: a JOIN for a session held by another worker process of this server (it named that
 * worker); the client dials again (docs/protocol.md §3.16).
 */
export const STATUS_WRONG_WORKER = 4;

/**
 * Header option (client → server, in a JOIN): the worker that holds the session, as the OPEN's reply
 * named it; value u16. (Type 1 is left to the destination option.)
 */
export const OPT_WORKER = 2;
/**
 * Reply option (server → client, in the OK reply to an OPEN): where the session's other stripes go;
 * value worker u16 ‖ workers u16 ‖ join port u16 (0: the main address). Reply and header options are
 * separate type spaces.
 */
export const OPT_JOIN = 1;

/** Default half-width of the accepted timestamp window (±30 s). */
export const TIME_WINDOW_MS = 30_000;
/** Replay entries are kept this long past timestamp + window: covers the clock's resolution. */
export const REPLAY_SLACK_MS = 1_000;

/** Seal number of the first frame record under K_c2s / K_s2c: the header or reply record took 0 and 1. */
export const FIRST_FRAME_COUNTER = 2;
