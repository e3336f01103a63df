// herald.js — the browser client of Herald. An ES module: no dependencies,
// no build step. Types are in herald.d.ts; the wire protocol is
// docs/protocol.md.
//
//	import { Herald } from "/herald.js";
//
//	const herald = new Herald({
//	  transport: "ws", // or "sse" (EventSource), "stream" (fetch, HTTP/3 when the browser negotiates it),
//	                   // "webtransport" (HTTP/3; falls back to "ws" where the browser lacks it)
//	  token: () => fetch("/my-backend/herald-token").then((r) => r.text()),
//	  channels: ["news"],
//	});
//	herald.on("message", (m) => console.log(m.channel, m.id, m.data));
//	herald.on("state", (s) => console.log(s.state, s.delay, s.cause));
//	herald.on("presence", (p) => console.log(p.channel, p.count, p.members)); // channels the token grants presence on
//	herald.connect();
//
// Every transport has the same semantics: the token callback is called
// before every connection attempt (tokens may be single-use); a lost
// connection is retried for ever (until close) with exponential backoff and
// full jitter, or after the delay the server advises when it drains; every
// channel resumes from its position (the last message ID seen, or the
// position its subscription started at), so nothing is missed; messages not
// after a channel's position are dropped, so nothing is delivered twice; a
// `gap` event says when the server no longer held what was missed.

/** @typedef {"ws" | "sse" | "stream" | "webtransport"} Transport */
/** @typedef {"idle" | "connecting" | "connected" | "reconnecting" | "closed"} State */
/** @typedef {{min: number, max: number, factor: number}} Backoff */
/**
 * Why a connection ended or could not be made.
 * @typedef {object} Cause
 * @property {string} reason "failed", "closed", "ended", "refused", "network", "token", "advice", "error", "timeout", "resubscribe" or "expiring"
 * @property {string | number} [code] a WebSocket close code, a WebTransport session error code, or an error/advice code of the server
 * @property {number} [status] the HTTP status of a refused stream
 * @property {string} [message]
 * @property {number} [delay] the delay the server advised, or 0 for a resubscription or a fallback
 * @property {boolean} [fallback] a WebTransport session that could not open: the next connection uses WebSocket
 */

/** The transports, in the order the demo page shows them. */
export const TRANSPORTS = Object.freeze(/** @type {Transport[]} */ (["ws", "sse", "stream", "webtransport"]));

/** The default backoff: the first retry within 0.5 s, doubling up to 30 s. */
export const DEFAULT_BACKOFF = Object.freeze({ min: 500, max: 30_000, factor: 2 });

const PATHS = { ws: "v1/ws", sse: "v1/sse", stream: "v1/stream", webtransport: "v1/wt" };

// The transports that carry commands (subscribe, publish, refresh).
const DUPLEX = new Set(["ws", "webtransport"]);

// The position of a channel whose subscribed notice had no id: the channel
// had no message yet, and "0-0" precedes every ID.
const ZERO_ID = "0-0";

// Error codes of a channel that no retry can fix: the channel is dropped.
const PERMANENT = new Set(["forbidden", "invalid_channel", "invalid_position", "too_many_channels", "invalid_command"]);

const CLOSE_TEXT = {
  1000: "normal closure",
  1001: "the server is going away",
  1003: "the server refused a binary frame",
  1006: "the connection was lost or refused",
  1009: "a command exceeded the size limit",
  1011: "internal server error",
  1013: "the broker is unavailable; try again later",
  4000: "lagged: the client fell too far behind",
  4001: "heartbeat timeout",
  4002: "the token expired",
  4003: "no stream was opened on the WebTransport session",
};

/**
 * The transport a connection uses when transport was asked for: a
 * "webtransport" client uses WebSocket where the browser has no
 * WebTransport, and once a session failed to open before any had opened
 * (a network or proxy without HTTP/3, a page not served over https). Once a
 * session has opened, failures are retried on WebTransport like any lost
 * connection.
 * @param {Transport} transport
 * @param {{hasWebTransport: boolean, failed: boolean, opened: boolean}} history
 * @returns {Transport}
 */
export function chooseTransport(transport, { hasWebTransport, failed, opened }) {
  if (transport !== "webtransport") return transport;
  if (!hasWebTransport || (failed && !opened)) return "ws";
  return "webtransport";
}

/** An error of the server (its code and message) or of the client. */
export class HeraldError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{status?: number, channel?: string, ref?: string}} [details]
   */
  constructor(code, message, details = {}) {
    super(message);
    this.name = "HeraldError";
    /** @type {string} */
    this.code = code;
    /** @type {number | undefined} */
    this.status = details.status;
    /** @type {string | undefined} */
    this.channel = details.channel;
    /** @type {string | undefined} */
    this.ref = details.ref;
  }
}

const ID_PATTERN = /^(\d+)-(\d+)$/;

/** @param {string} a @param {string} b */
function compareDecimal(a, b) {
  a = a.replace(/^0+(?=\d)/, "");
  b = b.replace(/^0+(?=\d)/, "");
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Compares two message IDs ("<ms>-<seq>", each part up to 64 bits, so not
 * as numbers): -1, 0 or 1 as a is before, equal to or after b. IDs not of
 * that form can only be equal (0) or unordered (NaN).
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
export function compareIDs(a, b) {
  const x = ID_PATTERN.exec(a);
  const y = ID_PATTERN.exec(b);
  if (!x || !y) return a === b ? 0 : NaN;
  return compareDecimal(x[1], y[1]) || compareDecimal(x[2], y[2]);
}

/** Whether id comes after position; an unordered id does unless it is equal. */
function isAfter(/** @type {string} */ id, /** @type {string} */ position) {
  const c = compareIDs(id, position);
  return Number.isNaN(c) ? id !== position : c > 0;
}

/**
 * Packs positions into a cursor, "news=1700000000000-0;user:42=1699999999999-3",
 * the value of the since parameter that resumes every channel at once.
 * @param {Map<string, string> | Record<string, string> | Iterable<[string, string]>} positions
 * @returns {string}
 */
export function encodeCursor(positions) {
  const entries = Symbol.iterator in Object(positions)
    ? /** @type {Iterable<[string, string]>} */ (positions)
    : Object.entries(positions);
  const parts = [];
  for (const [channel, id] of entries) {
    if (/[=;]/.test(channel) || /[=;]/.test(id) || channel === "" || id === "") {
      throw new HeraldError("invalid_position", `cannot put ${JSON.stringify(channel)}=${JSON.stringify(id)} in a cursor`);
    }
    parts.push(`${channel}=${id}`);
  }
  return parts.join(";");
}

/**
 * Unpacks a cursor into positions. A bare ID (no "=") is the position of a
 * connection's only channel, so it needs channels to hold exactly one.
 * @param {string} cursor
 * @param {readonly string[]} [channels]
 * @returns {Map<string, string>}
 */
export function parseCursor(cursor, channels = []) {
  const positions = new Map();
  if (cursor === "") return positions;
  if (!cursor.includes("=")) {
    if (channels.length !== 1) {
      throw new HeraldError("invalid_position", `a bare position needs exactly one channel, not ${channels.length}`);
    }
    positions.set(channels[0], cursor);
    return positions;
  }
  for (const part of cursor.split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0 || eq === part.length - 1) {
      throw new HeraldError("invalid_position", `cursor entry ${JSON.stringify(part)} is not <channel>=<id>`);
    }
    positions.set(part.slice(0, eq), part.slice(eq + 1));
  }
  return positions;
}

/**
 * The wait before reconnection attempt number attempt (0 for the first
 * retry), with full jitter: uniform in [0, min(max, min × factor^attempt)).
 * @param {number} attempt
 * @param {Backoff} [backoff]
 * @param {() => number} [random] uniform in [0, 1)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, backoff = DEFAULT_BACKOFF, random = Math.random) {
  const ceiling = Math.min(backoff.max, backoff.min * Math.pow(backoff.factor, Math.max(0, attempt)));
  return Math.floor(random() * ceiling);
}

/**
 * Parses newline-separated envelopes: a WebSocket frame may hold several,
 * an NDJSON stream holds one per line. Blank lines are skipped.
 * @param {string} text
 * @returns {object[]}
 * @throws {SyntaxError} on a line that is not JSON
 */
export function parseEnvelopes(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (line.trim() !== "") out.push(JSON.parse(line));
  }
  return out;
}

/** @param {string | URL | undefined} url */
function baseURL(url) {
  const given = url ?? globalThis.location?.origin;
  if (given === undefined) throw new TypeError("Herald: url is required outside a web page");
  const u = new URL(given, globalThis.location?.href);
  if (!u.pathname.endsWith("/")) u.pathname += "/";
  u.search = "";
  u.hash = "";
  return u;
}

/** @param {string | (() => string | Promise<string>)} source */
async function resolveToken(source) {
  const token = typeof source === "function" ? await source() : source;
  if (typeof token !== "string" || token === "") {
    throw new HeraldError("unauthorized", "the token callback returned no token");
  }
  return token;
}

/** @param {unknown} err */
function report(err) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(err);
  else console.error(err);
}

/** @param {unknown} err */
function messageOf(err) {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Publishes through the REST API (POST /v1/publish), with an API key or a
 * token allowed to publish to the channel. Works whatever the transport,
 * connected or not.
 * @param {{url?: string | URL, token: string | (() => string | Promise<string>), channel: string,
 *   event?: string, data?: unknown, fetch?: typeof fetch}} options
 * @returns {Promise<string>} the message's ID
 */
export async function httpPublish({ url, token, channel, event, data, fetch: doFetch = globalThis.fetch }) {
  /** @type {Record<string, unknown>} */
  const body = { channel, data: data === undefined ? null : data };
  if (event) body.event = event;
  const res = await doFetch(new URL("v1/publish", baseURL(url)), {
    method: "POST",
    headers: { Authorization: `Bearer ${await resolveToken(token)}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const reply = await res.json().catch(() => null);
  if (!res.ok || typeof reply?.id !== "string") {
    throw new HeraldError(reply?.error?.code ?? `http_${res.status}`, reply?.error?.message ?? res.statusText, { status: res.status, channel });
  }
  return reply.id;
}

/**
 * One connection attempt. Owned by the run loop that made it; the other
 * methods only send through it or abort it.
 * @typedef {object} Connection
 * @property {Set<string>} channels what this connection subscribes (asked for)
 * @property {boolean} open
 * @property {boolean} dead aborted or ended: its envelopes are ignored
 * @property {(command: object) => boolean} send
 * @property {(cause: Cause) => void} abort
 * @property {Cause | null} advice the server's reconnect advice
 * @property {Cause | null} endCause an error notice that ends the stream (lagged)
 */

/**
 * A Herald client: one connection at a time over one transport, reconnected
 * and resumed until close().
 */
export class Herald {
  /** @type {Transport} */ #transport;
  /** @type {URL} */ #url;
  /** @type {string | (() => string | Promise<string>)} */ #token;
  /** @type {Backoff} */ #backoff;
  /** @type {number} */ #heartbeat;
  /** @type {number} */ #publishTimeout;
  /** @type {typeof WebSocket} */ #WebSocket;
  /** @type {typeof EventSource} */ #EventSource;
  /** @type {typeof fetch} */ #fetch;
  /** @type {any} the WebTransport constructor, if the browser has one */ #WebTransport;
  /** @type {object | undefined} options of new WebTransport (serverCertificateHashes) */ #wtOptions;
  /** WebTransport history, for chooseTransport. */
  #wt = { failed: false, opened: false };
  /** @type {Transport} the transport of the current (or last) connection */
  #active;

  /** Channels asked for, by the options or subscribe(). */
  #channels = new Set();
  /** Channels the server subscribed unasked: the user's own. */
  #auto = new Set();
  /** Server-chosen channels the application unsubscribed: their messages are hidden. */
  #muted = new Set();
  /** @type {Map<string, string>} channel → last message ID, or its subscription's start */
  #positions = new Map();
  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map();
  /** @type {State} */
  #state = "idle";
  /** Bumped by connect() and close(): a run loop of another generation stops. */
  #generation = 0;
  /** @type {Connection | null} */
  #conn = null;
  /** @type {(() => void) | null} ends the current backoff wait early */
  #wake = null;
  /** @type {Map<string, {resolve: (id: string) => void, reject: (err: Error) => void, conn: Connection}>} */
  #pending = new Map();
  #refs = 0;
  #stats = { messages: 0, duplicates: 0, connects: 0 };
  /** @type {Map<string, {count: number, members: Map<string, {user: string, conn: string}>}>} channel → its members, for subscriptions with presence */
  #presence = new Map();

  /** @param {import("./herald.d.ts").HeraldOptions} options */
  constructor(options) {
    if (options === null || typeof options !== "object") throw new TypeError("Herald: options are required");
    const transport = options.transport ?? "ws";
    if (!TRANSPORTS.includes(transport)) {
      throw new TypeError(`Herald: transport ${JSON.stringify(transport)} is not one of ${TRANSPORTS.join(", ")}`);
    }
    if (typeof options.token !== "string" && typeof options.token !== "function") {
      throw new TypeError("Herald: token is required: a token, or a function that returns one (called before every connection)");
    }
    const backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    if (!(backoff.min >= 0 && backoff.max >= backoff.min && backoff.factor >= 1)) {
      throw new RangeError("Herald: backoff needs 0 <= min <= max and factor >= 1");
    }
    this.#transport = transport;
    this.#url = baseURL(options.url);
    this.#token = options.token;
    this.#backoff = backoff;
    this.#heartbeat = options.heartbeat ?? 30_000;
    this.#publishTimeout = options.publishTimeout ?? 10_000;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.#EventSource = options.EventSource ?? globalThis.EventSource;
    this.#fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.#WebTransport = options.WebTransport ?? globalThis.WebTransport;
    if (options.serverCertificateHashes) this.#wtOptions = { serverCertificateHashes: options.serverCertificateHashes };
    this.#active = this.#choose();
    for (const ch of options.channels ?? []) this.#channels.add(checkChannel(ch));
    let positions = options.positions ?? new Map();
    if (typeof positions === "string") positions = parseCursor(positions, [...this.#channels]);
    for (const [ch, id] of positions instanceof Map ? positions : Object.entries(positions)) {
      if (this.#channels.has(ch)) this.#positions.set(ch, checkPosition(id));
      else if (ch.startsWith("user:")) {
        // The user's own channel, which the server subscribes unasked.
        this.#auto.add(ch);
        this.#positions.set(ch, checkPosition(id));
      }
    }
  }

  /** @returns {Transport} */
  get transport() { return this.#transport; }
  /** The transport of the current (or last) connection: transport, or "ws" for a "webtransport" client that fell back. @returns {Transport} */
  get activeTransport() { return this.#active; }
  /** @returns {State} */
  get state() { return this.#state; }
  /** The channels asked for (the user's own channel is subscribed as well). */
  get channels() { return [...this.#channels]; }
  /** Each channel's position: the last message ID received, or where its subscription started. */
  get positions() { return Object.fromEntries(this.#positions); }
  /** The positions as a cursor, to store and pass back as the positions option. */
  get cursor() { return encodeCursor(this.#positions); }
  /**
   * A channel's members as this client knows them — the last subscribed
   * notice's snapshot with every presence change since applied, in order —
   * or undefined if its subscription takes no part in the channel's
   * presence (the token grants none on it).
   * @param {string} channel
   * @returns {import("./herald.d.ts").Presence | undefined}
   */
  presence(channel) {
    const view = this.#presence.get(channel);
    return view && presenceOf(channel, view, [], []);
  }

  /** Messages delivered, duplicates dropped, connections made. */
  get stats() { return { ...this.#stats }; }

  /**
   * Calls listener for each event of the type; returns a function that
   * removes it.
   * @param {string} type
   * @param {Function} listener
   * @returns {() => void}
   */
  on(type, listener) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /**
   * Starts connecting, unless already started. After close(), connects
   * again and resumes from the positions.
   * @returns {this}
   */
  connect() {
    if (this.#state !== "idle" && this.#state !== "closed") return this;
    this.#run(++this.#generation).catch(report);
    return this;
  }

  /** Closes the connection and stops reconnecting. Positions are kept. */
  close() {
    if (this.#state === "closed") return;
    this.#generation++;
    this.#conn?.abort({ reason: "closed", message: "closed by the application" });
    this.#conn = null;
    this.#wake?.();
    this.#failPending(null, new HeraldError("closed", "the client was closed before the server acknowledged"));
    this.#setState("closed", {});
  }

  /**
   * Subscribes to channel, from position since if given, else from now.
   * WebSocket sends a subscribe command; SSE and stream reconnect with the
   * new channel set. A channel subscribed already is left as it is.
   * @param {string} channel
   * @param {{since?: string}} [options]
   */
  subscribe(channel, { since } = {}) {
    checkChannel(channel);
    if (since !== undefined) checkPosition(since);
    this.#muted.delete(channel);
    if (this.#channels.has(channel)) return;
    if (since !== undefined) this.#positions.set(channel, since);
    this.#channels.add(channel);
    if (this.#auto.delete(channel)) {
      this.#conn?.channels.add(channel); // subscribed already
      return;
    }
    this.#reconcile();
  }

  /**
   * Unsubscribes from channel and forgets its position. No message of it
   * is delivered afterwards.
   * @param {string} channel
   */
  unsubscribe(channel) {
    if (this.#auto.delete(channel)) {
      // The server subscribes the user's own channel at every connection;
      // mute it so that it stays hidden.
      this.#muted.add(channel);
      this.#positions.delete(channel);
      if (this.#duplex() && this.#conn?.open) this.#conn.send({ type: "unsubscribe", channel });
      return;
    }
    if (!this.#channels.delete(channel)) return;
    this.#positions.delete(channel);
    this.#presence.delete(channel);
    this.#reconcile();
  }

  /**
   * Publishes a message over the WebSocket or WebTransport connection (the
   * duplex transports in browsers; see httpPublish for the others). Resolves with
   * the message's ID once the server acknowledges it.
   * @param {string} channel
   * @param {unknown} data any JSON value
   * @param {{event?: string, timeout?: number}} [options]
   * @returns {Promise<string>}
   */
  publish(channel, data, { event, timeout = this.#publishTimeout } = {}) {
    if (!this.#duplex()) {
      return Promise.reject(new HeraldError("unsupported", `publish needs the WebSocket or WebTransport transport; ${this.#transport} is one-way (use httpPublish)`));
    }
    const conn = this.#conn;
    if (!conn || !conn.open || conn.dead) {
      return Promise.reject(new HeraldError("not_connected", "not connected; publish once the state is connected"));
    }
    const ref = `p${++this.#refs}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(ref);
        reject(new HeraldError("timeout", `no acknowledgement within ${timeout} ms; the message may have been published`, { channel, ref }));
      }, timeout);
      this.#pending.set(ref, {
        resolve: (id) => { clearTimeout(timer); resolve(id); },
        reject: (err) => { clearTimeout(timer); reject(err); },
        conn,
      });
      /** @type {Record<string, unknown>} */
      const cmd = { type: "publish", channel, data: data === undefined ? null : data, ref };
      if (event) cmd.event = event;
      if (!conn.send(cmd)) this.#settle(ref, new HeraldError("not_connected", "the connection is closing"));
    });
  }

  // ---- the run loop ----

  /** Connects, waits for the end, backs off, and again, while gen is current. */
  async #run(/** @type {number} */ gen) {
    let attempt = 0;
    while (gen === this.#generation) {
      this.#setState("connecting", { attempt });
      /** @type {Cause} */
      let cause;
      try {
        const token = await resolveToken(this.#token);
        if (gen !== this.#generation) return;
        cause = await this.#open(token, () => { attempt = 0; });
      } catch (err) {
        // Only the token callback throws here: the transports resolve with a cause.
        cause = { reason: "token", code: err instanceof HeraldError ? err.code : undefined, message: messageOf(err) };
      }
      if (gen !== this.#generation) return;
      const ended = this.#conn;
      this.#conn = null;
      if (ended) {
        ended.dead = true;
        this.#failPending(ended, new HeraldError("disconnected", "the connection ended before the server acknowledged; the message may have been published"));
      }
      if (cause.fallback) this.#wt.failed = true;
      const delay = cause.delay ?? backoffDelay(attempt++, this.#backoff);
      this.#setState("reconnecting", { attempt, delay, cause });
      await this.#sleep(delay);
    }
  }

  /** Waits ms, or less if close() is called or the browser comes back online. @param {number} ms */
  #sleep(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        globalThis.removeEventListener?.("online", done);
        this.#wake = null;
        resolve(undefined);
      };
      const timer = setTimeout(done, ms);
      globalThis.addEventListener?.("online", done);
      this.#wake = done;
    });
  }

  /**
   * Makes one connection and resolves with why it ended.
   * @param {string} token
   * @param {() => void} resetBackoff
   * @returns {Promise<Cause>}
   */
  #open(token, resetBackoff) {
    /** @type {Connection} */
    const conn = {
      channels: new Set(this.#channels), open: false, dead: false, advice: null, endCause: null,
      send: () => false, abort: () => {},
    };
    this.#conn = conn;
    const opened = () => {
      if (conn.open || conn.dead) return;
      conn.open = true;
      this.#stats.connects++;
      resetBackoff();
      this.#setState("connected", {});
      this.#reconcile();
    };
    this.#active = this.#choose();
    const url = new URL(PATHS[this.#active], this.#url);
    for (const ch of conn.channels) url.searchParams.append("channel", ch);
    // A cursor may only name the connection's channels: those asked for
    // and the user's own.
    const cursor = encodeCursor([...this.#positions].filter(([ch]) => conn.channels.has(ch) || this.#auto.has(ch)));
    if (cursor !== "") url.searchParams.set("since", cursor);
    switch (this.#active) {
      case "webtransport":
        return this.#openWT(url, token, conn, opened);
      case "stream":
        return this.#openStream(url, token, conn, opened);
      case "sse":
        // EventSource cannot send headers: the token goes in the URL.
        url.searchParams.set("token", token);
        return this.#openSSE(url, conn, opened);
      default:
        url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
        return this.#openWS(url, token, conn, opened);
    }
  }

  /**
   * @param {URL} url @param {string} token @param {Connection} conn @param {() => void} opened
   * @returns {Promise<Cause>}
   */
  #openWS(url, token, conn, opened) {
    return new Promise((resolve) => {
      /** @type {WebSocket} */
      let ws;
      try {
        // The token rides in a subprotocol, out of the URL (and so out of
        // access logs); the server answers "herald.v1".
        ws = new this.#WebSocket(url.href, ["herald.v1", `herald.token.${token}`]);
      } catch (err) {
        resolve({ reason: "failed", message: messageOf(err) });
        return;
      }
      let lastFrame = Date.now();
      /** @type {ReturnType<typeof setInterval> | undefined} */
      let beat;
      let settled = false;
      const finish = (/** @type {Cause} */ cause) => {
        if (settled) return;
        settled = true;
        conn.dead = true;
        clearInterval(beat);
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        resolve(cause);
      };
      conn.send = (cmd) => {
        if (ws.readyState !== 1) return false;
        ws.send(JSON.stringify(cmd));
        return true;
      };
      conn.abort = (cause) => {
        try { ws.close(1000); } catch { /* already closing */ }
        finish(cause);
      };
      ws.onopen = () => {
        lastFrame = Date.now();
        opened();
        if (this.#heartbeat > 0) {
          // A browser answers the server's pings but cannot see them: ping
          // the server when idle, to find a connection that died silently.
          // A ping is judged at the next tick, however late a background
          // tab's throttled timers run it.
          let pingedAt = 0;
          beat = setInterval(() => {
            const now = Date.now();
            if (pingedAt > lastFrame) {
              conn.abort({ reason: "timeout", message: `no answer to a ping in ${now - pingedAt} ms` });
            } else if (now - lastFrame >= this.#heartbeat) {
              pingedAt = now;
              conn.send({ type: "ping" });
            }
          }, this.#heartbeat);
        }
      };
      ws.onmessage = (ev) => {
        lastFrame = Date.now();
        if (typeof ev.data === "string") this.#receiveText(ev.data, conn);
      };
      ws.onclose = (ev) => finish(conn.advice ?? {
        reason: conn.open ? "closed" : "failed",
        code: ev.code,
        message: ev.reason || CLOSE_TEXT[/** @type {keyof CLOSE_TEXT} */ (ev.code)] || "",
      });
    });
  }

  /** @param {URL} url @param {Connection} conn @param {() => void} opened @returns {Promise<Cause>} */
  #openSSE(url, conn, opened) {
    return new Promise((resolve) => {
      /** @type {EventSource} */
      let es;
      try {
        es = new this.#EventSource(url.href);
      } catch (err) {
        resolve({ reason: "failed", message: messageOf(err) });
        return;
      }
      let settled = false;
      const finish = (/** @type {Cause} */ cause) => {
        if (settled) return;
        settled = true;
        conn.dead = true;
        es.onopen = es.onmessage = es.onerror = null;
        es.close();
        resolve(cause);
      };
      conn.abort = finish;
      es.onopen = opened;
      es.onmessage = (ev) => this.#receiveText(ev.data, conn);
      // EventSource would reconnect by itself, with the token of its URL
      // (perhaps single-use, perhaps expired): close it and reconnect with
      // a fresh token and the cursor instead.
      es.onerror = () => finish(conn.advice ?? conn.endCause ?? (conn.open
        ? { reason: "ended", message: "the event stream ended" }
        : { reason: "failed", message: "could not open the event stream (network error or refused)" }));
    });
  }

  /**
   * @param {URL} url @param {string} token @param {Connection} conn @param {() => void} opened
   * @returns {Promise<Cause>}
   */
  async #openStream(url, token, conn, opened) {
    const ctrl = new AbortController();
    /** @type {Cause | null} */
    let aborted = null;
    conn.abort = (cause) => {
      aborted ??= cause;
      conn.dead = true;
      ctrl.abort();
    };
    try {
      const res = await this.#fetch(url.href, {
        headers: { Authorization: `Bearer ${token}`, Accept: "application/x-ndjson" },
        signal: ctrl.signal,
        cache: "no-store",
      });
      if (!res.ok) {
        const body = await res.json().catch(() => null);
        return aborted ?? {
          reason: "refused", status: res.status,
          code: body?.error?.code ?? `http_${res.status}`, message: body?.error?.message ?? res.statusText,
        };
      }
      if (!res.body) return { reason: "failed", message: "this browser cannot stream a response body" };
      opened();
      await this.#readLines(res.body, conn);
      return aborted ?? conn.advice ?? conn.endCause ?? { reason: "ended", message: "the stream ended" };
    } catch (err) {
      return aborted ?? conn.advice ?? { reason: "network", message: messageOf(err) };
    } finally {
      conn.dead = true;
    }
  }

  /**
   * A WebTransport session (CONNECT /v1/wt, the token in the URL: the API
   * sets no headers) and the one bidirectional stream it opens, carrying
   * NDJSON commands and envelopes. A session that cannot open resolves
   * with a fallback cause when no session has opened before.
   * @param {URL} url @param {string} token @param {Connection} conn @param {() => void} opened
   * @returns {Promise<Cause>}
   */
  async #openWT(url, token, conn, opened) {
    url.searchParams.set("token", token);
    /** @type {Cause | null} */
    let aborted = null;
    /** @type {any} */
    let wt;
    const fail = (/** @type {unknown} */ err) => ({
      reason: "failed", fallback: !this.#wt.opened, delay: this.#wt.opened ? undefined : 0,
      message: `could not open a WebTransport session: ${messageOf(err)}`,
    });
    try {
      wt = new this.#WebTransport(url.href, this.#wtOptions);
      wt.closed.catch(() => {}); // read below, or never
      await wt.ready;
    } catch (err) {
      return fail(err);
    }
    this.#wt.opened = true;
    conn.abort = (cause) => {
      aborted ??= cause;
      conn.dead = true;
      try { wt.close({ closeCode: 0, reason: "" }); } catch { /* closed already */ }
    };
    try {
      const stream = await wt.createBidirectionalStream();
      const writer = stream.writable.getWriter();
      const encoder = new TextEncoder();
      const write = (/** @type {string} */ line) => writer.write(encoder.encode(line)).catch(() => {});
      conn.send = (cmd) => {
        if (conn.dead) return false;
        write(JSON.stringify(cmd) + "\n");
        return true;
      };
      write("\n"); // the server sees the stream at once
      opened();
      await this.#readLines(stream.readable, conn);
    } catch (err) {
      const info = await settled(wt.closed, 1000);
      if (aborted) return aborted;
      if (info && info.closeCode) {
        return conn.advice ?? conn.endCause ?? {
          reason: "closed", code: info.closeCode,
          message: info.reason || CLOSE_TEXT[/** @type {keyof CLOSE_TEXT} */ (info.closeCode)] || "",
        };
      }
      return conn.advice ?? conn.endCause ?? { reason: "network", message: messageOf(err) };
    } finally {
      conn.dead = true;
    }
    // The server ended the stream after its last line: close the session,
    // which the server waits for.
    try { wt.close({ closeCode: 0, reason: "" }); } catch { /* closed already */ }
    return aborted ?? conn.advice ?? conn.endCause ?? { reason: "ended", message: "the WebTransport stream ended" };
  }

  /** Reads NDJSON envelopes from a byte stream until it ends. @param {ReadableStream} body @param {Connection} conn */
  async #readLines(body, conn) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += value;
      const end = buffered.lastIndexOf("\n");
      if (end < 0) continue;
      this.#receiveText(buffered.slice(0, end), conn);
      buffered = buffered.slice(end + 1);
    }
  }

  /** The transport the next connection uses. @returns {Transport} */
  #choose() {
    return chooseTransport(this.#transport, { hasWebTransport: typeof this.#WebTransport === "function", ...this.#wt });
  }

  /** Whether the current connection carries commands. */
  #duplex() { return DUPLEX.has(this.#active); }

  // ---- receiving ----

  /** @param {string} text @param {Connection} conn */
  #receiveText(text, conn) {
    let envelopes;
    try {
      envelopes = parseEnvelopes(text);
    } catch (err) {
      this.#emit("error", new HeraldError("invalid_envelope", `the server sent something that is not JSON: ${messageOf(err)}`));
      return;
    }
    for (const env of envelopes) {
      if (conn.dead) return;
      this.#receive(env, conn);
    }
  }

  /** @param {any} env @param {Connection} conn */
  #receive(env, conn) {
    const ch = env?.channel;
    switch (env?.type) {
      case "message": {
        if (!this.#wanted(ch)) return; // unsubscribed meanwhile
        const position = this.#positions.get(ch);
        if (position !== undefined && !isAfter(env.id, position)) {
          this.#stats.duplicates++;
          return;
        }
        this.#positions.set(ch, env.id);
        this.#stats.messages++;
        this.#emit("message", env);
        return;
      }
      case "subscribed": {
        if (!this.#channels.has(ch)) {
          // Unasked at connect: the user's own channel. Anything else is
          // the late reply to a subscription since withdrawn.
          if (env.ref !== undefined || conn.channels.has(ch) || this.#muted.has(ch)) return;
          this.#auto.add(ch);
        }
        const id = env.id ?? ZERO_ID;
        const position = this.#positions.get(ch);
        if (position === undefined || isAfter(id, position)) this.#positions.set(ch, id);
        this.#emit("subscribed", env);
        this.#receivePresence(env);
        return;
      }
      case "presence":
        if (this.#wanted(ch)) this.#receivePresence(env);
        return;
      case "unsubscribed":
        if (!this.#wanted(ch)) this.#positions.delete(ch);
        this.#emit("unsubscribed", env);
        return;
      case "gap":
        if (this.#wanted(ch)) this.#emit("gap", env);
        return;
      case "ack":
        this.#settle(env.ref, env.id);
        return;
      case "error":
        this.#receiveError(env, conn);
        return;
      case "reconnect":
        conn.advice = { reason: "advice", code: env.code, delay: Math.max(0, Number(env.delay) || 0), message: "the server advised reconnecting" };
        return;
      case "expiring":
        this.#expiring(conn);
        return;
      case "refreshed":
      case "pong":
        return;
    }
  }

  /**
   * Updates a channel's members from a subscribed notice (its snapshot
   * replaces them; none means the subscription has no presence) or a
   * presence envelope (its joins and leaves, keyed by connection, applied
   * on top: the view converges on the channel's members; a reset with
   * members replaces the view), and emits a
   * "presence" event.
   * @param {any} env
   */
  #receivePresence(env) {
    const ch = env.channel;
    const p = env.presence;
    const snapshot = env.type === "subscribed";
    if (p === null || typeof p !== "object") {
      if (snapshot) this.#presence.delete(ch);
      return;
    }
    let view = this.#presence.get(ch);
    if (!snapshot && !view) return; // a change without a snapshot is not this subscription's
    // A reset with members (the server may have missed changes and read
    // them again) replaces the view like a snapshot.
    if (snapshot || (p.reset === true && Array.isArray(p.members))) this.#presence.set(ch, (view = { count: 0, members: new Map() }));
    const joins = arrayOf(p.joins), leaves = arrayOf(p.leaves);
    for (const m of [...arrayOf(p.members), ...joins]) view.members.set(m.conn, { user: m.user, conn: m.conn });
    for (const m of leaves) view.members.delete(m.conn);
    view.count = Number(p.count) || 0;
    this.#emit("presence", presenceOf(ch, view, joins, leaves));
  }

  /** The token expires soon (docs/protocol.md, "Token expiry and refresh"):
   * a WebSocket sends a refresh with a token from the token callback; a
   * one-way stream reconnects at once with a new token and resumes.
   * @param {Connection} conn */
  #expiring(conn) {
    if (!this.#duplex()) {
      conn.abort({ reason: "expiring", delay: 0, message: "the token is expiring" });
      return;
    }
    resolveToken(this.#token).then(
      (token) => { if (!conn.dead) conn.send({ type: "refresh", token, ref: "refresh" }); },
      () => { /* the server ends the connection at expiry; the next one gets a new token */ },
    );
  }

  /** @param {any} env @param {Connection} conn */
  #receiveError(env, conn) {
    const err = new HeraldError(env.code ?? "error", env.message ?? "", { channel: env.channel, ref: env.ref });
    if (env.ref === "refresh") return; // refused: the connection ends at expiry, then reconnects
    if (env.ref !== undefined && this.#pending.has(env.ref)) {
      this.#settle(env.ref, err); // a publish failed; subscriptions are unaffected
      return;
    }
    const ch = env.channel;
    if (ch === undefined) {
      conn.endCause = { reason: "error", code: err.code, message: err.message }; // lagged: the stream ends next
    } else if (err.code === "unknown_position") {
      // The position is after the channel's last message: the server lost
      // what we saw (a Redis that lost its data). Say so, and go on live.
      const since = this.#positions.get(ch);
      this.#positions.delete(ch);
      this.#emit("gap", { type: "gap", channel: ch, since, code: err.code, message: err.message });
      if (this.#duplex()) conn.send({ type: "subscribe", channel: ch });
      else conn.abort({ reason: "resubscribe", delay: 0, message: err.message });
      return;
    } else if (PERMANENT.has(err.code)) {
      this.#channels.delete(ch);
      this.#positions.delete(ch);
      conn.channels.delete(ch);
    } else if (conn.open) {
      // The channel could not be subscribed (broker unavailable): start
      // again, with backoff, so that every channel resumes.
      conn.abort({ reason: "error", code: err.code, message: err.message });
    }
    this.#emit("error", err);
  }

  /** @param {string} ch */
  #wanted(ch) {
    return this.#channels.has(ch) || (this.#auto.has(ch) && !this.#muted.has(ch));
  }

  /** Brings the connection's channel set to the wanted one. */
  #reconcile() {
    const conn = this.#conn;
    if (!conn || !conn.open || conn.dead) return; // the next connection asks for the new set
    if (!this.#duplex()) {
      if (!sameSet(conn.channels, this.#channels)) conn.abort({ reason: "resubscribe", delay: 0, message: "the channels changed" });
      return;
    }
    for (const ch of this.#channels) {
      if (conn.channels.has(ch)) continue;
      conn.channels.add(ch);
      /** @type {Record<string, string>} */
      const cmd = { type: "subscribe", channel: ch, ref: `s${++this.#refs}` };
      const since = this.#positions.get(ch);
      if (since !== undefined) cmd.since = since;
      conn.send(cmd);
    }
    for (const ch of conn.channels) {
      if (this.#channels.has(ch)) continue;
      conn.channels.delete(ch);
      conn.send({ type: "unsubscribe", channel: ch, ref: `u${++this.#refs}` });
    }
  }

  /** @param {string} ref @param {string | Error} outcome */
  #settle(ref, outcome) {
    const p = this.#pending.get(ref);
    if (!p) return;
    this.#pending.delete(ref);
    if (outcome instanceof Error) p.reject(outcome);
    else p.resolve(outcome);
  }

  /** @param {Connection | null} conn null: every pending publish @param {Error} err */
  #failPending(conn, err) {
    for (const [ref, p] of this.#pending) {
      if (conn === null || p.conn === conn) this.#settle(ref, err);
    }
  }

  /** @param {State} state @param {object} detail */
  #setState(state, detail) {
    if (state === this.#state && (state === "connected" || state === "closed")) return;
    this.#state = state;
    this.#emit("state", { state, ...detail });
  }

  /** @param {string} type @param {unknown} detail */
  #emit(type, detail) {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        listener(detail);
      } catch (err) {
        report(err); // a listener's bug must not break the client
      }
    }
  }
}

/** @param {unknown} channel */
function checkChannel(channel) {
  if (typeof channel !== "string" || channel === "" || /[=;]/.test(channel)) {
    throw new TypeError(`Herald: ${JSON.stringify(channel)} is not a channel name`);
  }
  return channel;
}

/** @param {unknown} id */
function checkPosition(id) {
  if (typeof id !== "string" || id === "" || /[=;]/.test(id)) {
    throw new TypeError(`Herald: ${JSON.stringify(id)} is not a position (a message ID)`);
  }
  return id;
}

/**
 * Resolves with what promise resolves with, or null if it rejects or takes
 * longer than ms.
 * @param {Promise<any>} promise @param {number} ms
 */
function settled(promise, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), ms);
    promise.then((v) => { clearTimeout(timer); resolve(v); }, () => { clearTimeout(timer); resolve(null); });
  });
}

/** @param {unknown} v @returns {{user: string, conn: string}[]} the members of a presence field's list */
function arrayOf(v) {
  return Array.isArray(v) ? v.filter((m) => m !== null && typeof m === "object" && typeof m.conn === "string") : [];
}

/**
 * @param {string} channel
 * @param {{count: number, members: Map<string, {user: string, conn: string}>}} view
 * @param {{user: string, conn: string}[]} joins
 * @param {{user: string, conn: string}[]} leaves
 */
function presenceOf(channel, view, joins, leaves) {
  const members = [...view.members.values()].sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : a.conn < b.conn ? -1 : a.conn > b.conn ? 1 : 0));
  return { channel, count: view.count, members, joins, leaves };
}

/** @param {Set<string>} a @param {Set<string>} b */
function sameSet(a, b) {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}
