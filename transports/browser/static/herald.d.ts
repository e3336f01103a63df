// Types of herald.js, Herald's browser client. See docs/protocol.md for the
// wire protocol.

/** "ws": WebSocket (both ways). "sse": EventSource. "stream": fetch() of
 * GET /v1/stream (NDJSON), over HTTP/3 when the browser negotiates it.
 * "webtransport": a WebTransport session on /v1/wt (HTTP/3, both ways, one
 * NDJSON stream); where the browser has no WebTransport, or a first
 * session cannot open, the client uses "ws" instead (see activeTransport). */
export type Transport = "ws" | "sse" | "stream" | "webtransport";

export type State = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

/** Exponential backoff with full jitter: the wait before retry n (from 0)
 * is uniform in [0, min(max, min × factor^n)) milliseconds. */
export interface Backoff {
  min: number;
  max: number;
  factor: number;
}

/** A token, or a function called before every connection attempt that
 * returns one (tokens may be single-use and short-lived). When the server
 * says the token is expiring, a WebSocket or WebTransport connection calls it again and
 * sends the new token in a `refresh` command (the connection stays); an
 * EventSource or fetch stream reconnects with a new one ("expiring") and
 * resumes. A connection not refreshed in time is closed with code 4002
 * (`token_expired`). */
export type TokenSource = string | (() => string | Promise<string>);

export interface HeraldOptions {
  /** Default "ws". */
  transport?: Transport;
  /** The server's base URL, e.g. "https://push.example.com" or
   * "https://example.com/herald/". Default: the page's origin. */
  url?: string | URL;
  token: TokenSource;
  /** Channels to subscribe besides the user's own, which the server always
   * subscribes. */
  channels?: string[];
  /** Positions to resume from: a cursor ("news=1700000000000-0;user:42=…",
   * e.g. a stored `cursor`), or channel → message ID. Only the channels
   * above and the user's own ("user:…") are kept. */
  positions?: string | Record<string, string> | Map<string, string>;
  /** Default {min: 500, max: 30000, factor: 2}; partial values are merged. */
  backoff?: Partial<Backoff>;
  /** WebSocket only: after this many idle milliseconds send a ping, and
   * reconnect if nothing came back by the next check, an interval later.
   * 0 disables. Default 30000. */
  heartbeat?: number;
  /** How long publish() waits for the acknowledgement. Default 10000 ms. */
  publishTimeout?: number;
  /** Implementations to use instead of the globals (tests, polyfills). */
  WebSocket?: typeof WebSocket;
  EventSource?: typeof EventSource;
  fetch?: typeof fetch;
  WebTransport?: typeof WebTransport;
  /** "webtransport" only: certificates to trust by hash instead of the
   * browser's roots (new WebTransport's option; each an ECDSA certificate
   * valid for less than 14 days), e.g. for a development server. */
  serverCertificateHashes?: { algorithm: "sha-256"; value: BufferSource }[];
}

/** A message, as every transport delivers it. */
export interface Message<T = unknown> {
  type: "message";
  channel: string;
  /** Opaque, strictly increasing per channel. */
  id: string;
  event?: string;
  data: T;
  /** Publish time, Unix milliseconds. */
  ts: number;
}

export interface Subscribed {
  type: "subscribed";
  channel: string;
  /** The position the subscription starts after (absent: before every message). */
  id?: string;
  ref?: string;
  /** The channel's members when the subscription takes part in its
   * presence (the token grants presence on it): up to the server's
   * snapshot size, with the exact count. */
  presence?: { count: number; members: Member[]; next?: string };
}

/** A connection present in a channel: one user with two connections is two
 * members. conn is unique across the server's instances. */
export interface Member {
  user: string;
  conn: string;
}

/** A channel's members as the client knows them: the subscribed notice's
 * snapshot with every change since applied in order ("presence" events,
 * Herald.presence()); a presence reset with members replaces it. */
export interface Presence {
  channel: string;
  /** The channel's member count, as the server last said. */
  count: number;
  /** The members known, sorted by user then conn: all of them unless the
   * channel had more than the snapshot lists. */
  members: Member[];
  /** The change that made this view; empty for a snapshot. */
  joins: Member[];
  leaves: Member[];
}

export interface Unsubscribed {
  type: "unsubscribed";
  channel: string;
  ref?: string;
}

/** Messages of channel after since were lost: the server no longer holds
 * them (history bound or expiry), or it lost the channel's history
 * (code "unknown_position"). Refetch the state the channel describes. */
export interface Gap {
  type: "gap";
  channel: string;
  since?: string;
  code?: "unknown_position";
  message?: string;
}

/** Why a connection ended or could not be made. */
export interface Cause {
  /** "failed": could not connect (network, or refused: browsers do not
   * tell WebSocket and EventSource which). "refused": the stream's HTTP
   * error (see status and code). "closed": the WebSocket or the
   * WebTransport session closed (see code).
   * "ended": the SSE or stream response ended. "network": the stream failed
   * mid-way. "token": the token callback failed. "expiring": the server said
   * the token expires and this one-way stream reconnects with a new one.
   * "advice": the server drains
   * (delay is its advice). "error": an error notice (see code, e.g.
   * "lagged"). "timeout": a WebSocket ping went unanswered. "resubscribe":
   * SSE or stream reconnects with a new channel set. */
  reason: "failed" | "refused" | "closed" | "ended" | "network" | "token" | "advice" | "error" | "timeout" | "resubscribe" | "expiring";
  /** A WebSocket close code (1006, 4000…), a WebTransport session error
   * code (the same numbers: docs/protocol.md), or the server's error or
   * advice code. */
  code?: string | number;
  /** The HTTP status of a refused stream. */
  status?: number;
  message?: string;
  /** The wait the server advised, or 0 for a resubscription or a fallback. */
  delay?: number;
  /** A WebTransport session could not open before any had: the next
   * connection uses WebSocket. */
  fallback?: boolean;
}

export type StateChange =
  /** attempt: 0 for the first try, n for retry n. */
  | { state: "connecting"; attempt: number }
  | { state: "connected" }
  /** attempt: the retry this wait precedes (1 for the first since the
   * last connection; unchanged by advice and resubscription). */
  | { state: "reconnecting"; attempt: number; delay: number; cause: Cause }
  | { state: "closed" };

export interface Stats {
  /** Messages delivered to "message" listeners. */
  messages: number;
  /** Messages dropped because their ID was not after the channel's position. */
  duplicates: number;
  /** Connections opened. */
  connects: number;
}

export interface HeraldEvents {
  message: Message;
  state: StateChange;
  subscribed: Subscribed;
  unsubscribed: Unsubscribed;
  gap: Gap;
  /** A channel's members changed (or a snapshot came with its subscribed
   * notice), for subscriptions that take part in its presence. */
  presence: Presence;
  /** An error notice of the server: a channel that could not be subscribed
   * (code forbidden, invalid_channel, too_many_channels…: the channel is
   * dropped), lagged (the connection ends and resumes), or a malformed
   * envelope (code invalid_envelope). Publish errors reject publish(). */
  error: HeraldError;
}

export class HeraldError extends Error {
  constructor(code: string, message: string, details?: { status?: number; channel?: string; ref?: string });
  /** The server's error code (docs/protocol.md), or the client's:
   * "not_connected", "disconnected", "timeout", "closed", "unsupported",
   * "invalid_envelope", "invalid_position", "unauthorized", "http_<status>". */
  code: string;
  status?: number;
  channel?: string;
  ref?: string;
}

/** One connection at a time over one transport, reconnected and resumed
 * until close(). */
export class Herald {
  constructor(options: HeraldOptions);
  readonly transport: Transport;
  /** The transport of the current (or last) connection: transport, or "ws"
   * for a "webtransport" client that fell back. */
  readonly activeTransport: Transport;
  readonly state: State;
  /** The channels asked for (the user's own is subscribed as well). */
  readonly channels: string[];
  /** Each channel's position: the last message ID received, or where its
   * subscription started. */
  readonly positions: Record<string, string>;
  /** The positions as a cursor: store it and pass it back as `positions`. */
  readonly cursor: string;
  readonly stats: Stats;
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof HeraldEvents>(type: K, listener: (event: HeraldEvents[K]) => void): () => void;
  /** Starts connecting (no-op if started). After close(), connects again
   * and resumes from the positions. */
  connect(): this;
  /** Closes the connection and stops reconnecting; keeps the positions. */
  close(): void;
  /** WebSocket, WebTransport: a subscribe command; SSE and stream: reconnect with the new
   * channel set. since: the position to resume from. */
  subscribe(channel: string, options?: { since?: string }): void;
  unsubscribe(channel: string): void;
  /** The channel's members, or undefined if the subscription takes no part
   * in its presence. */
  presence(channel: string): Presence | undefined;
  /** WebSocket and WebTransport only: resolves with the message's ID once acknowledged;
   * rejects with a HeraldError (the server's code, or not_connected,
   * disconnected, timeout, unsupported). */
  publish(channel: string, data: unknown, options?: { event?: string; timeout?: number }): Promise<string>;
}

export const TRANSPORTS: readonly Transport[];
/** The transport a connection of a client asking for transport uses:
 * "webtransport" becomes "ws" without WebTransport, or after a session
 * failed to open before any opened. */
export function chooseTransport(transport: Transport, history: { hasWebTransport: boolean; failed: boolean; opened: boolean }): Transport;
export const DEFAULT_BACKOFF: Readonly<Backoff>;

/** -1, 0 or 1 as a is before, equal to or after b ("<ms>-<seq>" IDs);
 * NaN for unequal IDs of another form. */
export function compareIDs(a: string, b: string): number;
/** channel → ID pairs as a cursor "a=1-0;b=2-0". */
export function encodeCursor(positions: Map<string, string> | Record<string, string> | Iterable<[string, string]>): string;
/** A cursor as channel → ID; a bare ID needs exactly one channel. */
export function parseCursor(cursor: string, channels?: readonly string[]): Map<string, string>;
/** The full-jitter wait before retry number attempt (from 0), in ms. */
export function backoffDelay(attempt: number, backoff?: Backoff, random?: () => number): number;
/** Newline-separated JSON envelopes; blank lines are skipped. */
export function parseEnvelopes(text: string): object[];
/** POST /v1/publish with an API key or a token allowed to publish to the
 * channel; resolves with the message's ID. */
export function httpPublish(options: {
  url?: string | URL;
  token: TokenSource;
  channel: string;
  event?: string;
  data?: unknown;
  fetch?: typeof fetch;
}): Promise<string>;
