// Unit tests of herald.js with Node's test runner (node --test), run by
// TestHeraldJS in browser_test.go. The transports are fakes of WebSocket,
// EventSource and fetch that the tests drive by hand; the real browser and
// server are exercised by cmd/herald/browser_test.go.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Herald, HeraldError, backoffDelay, compareIDs, encodeCursor, parseCursor, parseEnvelopes, httpPublish, DEFAULT_BACKOFF,
  chooseTransport,
} from "../static/herald.js";

const fast = { min: 1, max: 4, factor: 2 };

test("compareIDs orders <ms>-<seq> IDs beyond 2^53", () => {
  assert.equal(compareIDs("1-0", "1-0"), 0);
  assert.equal(compareIDs("1-1", "1-0"), 1);
  assert.equal(compareIDs("2-0", "1-9"), 1);
  assert.equal(compareIDs("9-0", "10-0"), -1);
  assert.equal(compareIDs("18446744073709551615-1", "18446744073709551615-0"), 1);
  assert.equal(compareIDs("18446744073709551614-9", "18446744073709551615-0"), -1);
  assert.equal(compareIDs("0-0", "1700000000000-0"), -1);
  assert.ok(Number.isNaN(compareIDs("a", "b")));
  assert.equal(compareIDs("a", "a"), 0);
});

test("cursors round-trip", () => {
  const positions = new Map([["news", "1700000000000-0"], ["user:42", "1699999999999-3"]]);
  const cursor = encodeCursor(positions);
  assert.equal(cursor, "news=1700000000000-0;user:42=1699999999999-3");
  assert.deepEqual(parseCursor(cursor), positions);
  assert.equal(encodeCursor({ a: "1-0" }), "a=1-0");
  assert.equal(encodeCursor([]), "");
  assert.deepEqual(parseCursor("5-1", ["only"]), new Map([["only", "5-1"]]));
  assert.deepEqual(parseCursor(""), new Map());
  assert.throws(() => parseCursor("5-1", ["a", "b"]), HeraldError);
  assert.throws(() => parseCursor("a=1-0;b"), HeraldError);
  assert.throws(() => parseCursor("=1-0"), HeraldError);
  assert.throws(() => encodeCursor({ "a;b": "1-0" }), HeraldError);
});

test("backoffDelay: full jitter below an exponential ceiling capped at max", () => {
  const b = { min: 100, max: 1000, factor: 2 };
  assert.equal(backoffDelay(0, b, () => 0), 0);
  assert.equal(backoffDelay(0, b, () => 0.999999), 99);
  assert.equal(backoffDelay(1, b, () => 0.5), 100);
  assert.equal(backoffDelay(3, b, () => 0.999999), 799);
  assert.equal(backoffDelay(4, b, () => 0.999999), 999);
  assert.equal(backoffDelay(1e6, b, () => 0.999999), 999);
  for (let attempt = 0; attempt < 50; attempt++) {
    const d = backoffDelay(attempt, DEFAULT_BACKOFF);
    assert.ok(d >= 0 && d < DEFAULT_BACKOFF.max, `attempt ${attempt}: ${d}`);
  }
});

test("parseEnvelopes splits lines and skips blank ones", () => {
  assert.deepEqual(parseEnvelopes('{"type":"pong"}\n\n{"type":"ack","id":"1-0"}\n'), [{ type: "pong" }, { type: "ack", id: "1-0" }]);
  assert.throws(() => parseEnvelopes("{"), SyntaxError);
});

test("options are checked", () => {
  assert.throws(() => new Herald({ url: "http://h", transport: "carrier-pigeon", token: "t" }), TypeError);
  assert.throws(() => new Herald({ url: "http://h" }), TypeError);
  assert.throws(() => new Herald({ url: "http://h", token: "t", backoff: { factor: 0.5 } }), RangeError);
  assert.throws(() => new Herald({ url: "http://h", token: "t", channels: ["a;b"] }), TypeError);
});

// ---- fakes ----

/** A WebSocket the test plays the server of. */
class FakeWebSocket {
  static all = [];
  readyState = 0;
  sent = [];
  constructor(url, protocols) {
    this.url = new URL(url);
    this.protocols = protocols;
    FakeWebSocket.all.push(this);
  }
  get token() {
    return this.protocols.find((p) => p.startsWith("herald.token."))?.slice("herald.token.".length);
  }
  send(text) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason: "" }));
  }
  // server side
  accept() {
    this.readyState = 1;
    this.onopen?.({});
  }
  frame(...envelopes) {
    this.onmessage?.({ data: envelopes.map((e) => JSON.stringify(e)).join("\n") });
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

class FakeEventSource {
  static all = [];
  closed = false;
  constructor(url) {
    this.url = new URL(url);
    FakeEventSource.all.push(this);
  }
  close() {
    this.closed = true;
  }
  accept() {
    this.onopen?.({});
  }
  event(envelope) {
    this.onmessage?.({ data: JSON.stringify(envelope) });
  }
  fail() {
    this.onerror?.({});
  }
}

/** fetch whose responses the test writes. */
function fakeFetch() {
  const calls = [];
  const f = (url, init) => new Promise((resolve, reject) => {
    const call = { url: new URL(url), init, resolve, reject };
    init.signal?.addEventListener("abort", () => {
      reject(new DOMException("aborted", "AbortError"));
      call.controller?.error(new DOMException("aborted", "AbortError"));
    });
    call.stream = (status = 200) => {
      const body = new ReadableStream({ start: (c) => { call.controller = c; } });
      resolve(new Response(body, { status, headers: { "Content-Type": "application/x-ndjson" } }));
    };
    call.write = (text) => call.controller.enqueue(new TextEncoder().encode(text));
    call.end = () => call.controller.close();
    call.refuse = (status, code) => resolve(new Response(JSON.stringify({ error: { code, message: code } }), { status }));
    calls.push(call);
  });
  f.calls = calls;
  return f;
}

/** Resolves once cond() holds, polling; fails after a second. */
async function until(cond, what = "condition") {
  const deadline = Date.now() + 1000;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

function record(client) {
  const log = { messages: [], states: [], gaps: [], errors: [] };
  client.on("message", (m) => log.messages.push(m.id));
  client.on("state", (s) => log.states.push(s));
  client.on("gap", (g) => log.gaps.push(g));
  client.on("error", (e) => log.errors.push(e));
  return log;
}

function tokens() {
  let n = 0;
  const source = async () => `tok${++n}`;
  source.count = () => n;
  return source;
}

// ---- WebSocket ----

test("ws: frames split, positions tracked, duplicates dropped, resume with a fresh token", async () => {
  FakeWebSocket.all = [];
  const token = tokens();
  const c = new Herald({ url: "https://h.example/", transport: "ws", token, channels: ["news"], backoff: fast, WebSocket: FakeWebSocket });
  const log = record(c);
  c.connect();
  await until(() => FakeWebSocket.all.length === 1);
  let ws = FakeWebSocket.all[0];
  assert.equal(ws.url.protocol, "wss:");
  assert.equal(ws.url.pathname, "/v1/ws");
  assert.equal(ws.url.searchParams.get("token"), null, "the token is not in the URL");
  assert.deepEqual(ws.protocols, ["herald.v1", "herald.token.tok1"]);
  assert.deepEqual(ws.url.searchParams.getAll("channel"), ["news"]);
  assert.equal(ws.url.searchParams.get("since"), null);
  ws.accept();
  assert.equal(c.state, "connected");
  ws.frame(
    { type: "subscribed", channel: "user:7", id: "5-0" },
    { type: "subscribed", channel: "news" }, // an empty channel: no id
    { type: "message", channel: "news", id: "6-0", data: 1, ts: 6 },
  );
  ws.frame({ type: "message", channel: "news", id: "6-0", data: 1, ts: 6 }, { type: "message", channel: "user:7", id: "6-1", data: 2, ts: 6 });
  assert.deepEqual(log.messages, ["6-0", "6-1"]);
  assert.equal(c.stats.duplicates, 1);
  assert.deepEqual(c.positions, { "user:7": "6-1", news: "6-0" });

  ws.drop(1006);
  await until(() => FakeWebSocket.all.length === 2, "a reconnection");
  ws = FakeWebSocket.all[1];
  assert.equal(ws.token, "tok2");
  assert.deepEqual(parseCursor(ws.url.searchParams.get("since")), new Map([["user:7", "6-1"], ["news", "6-0"]]));
  const reconnecting = log.states.find((s) => s.state === "reconnecting");
  assert.equal(reconnecting.cause.reason, "closed");
  assert.equal(reconnecting.cause.code, 1006);
  assert.ok(reconnecting.delay >= 0 && reconnecting.delay < fast.min);
  ws.accept();
  // The resumed connection replays what the first one already delivered.
  ws.frame(
    { type: "subscribed", channel: "user:7", id: "6-1" },
    { type: "subscribed", channel: "news", id: "6-0" },
    { type: "message", channel: "news", id: "6-0", data: 1, ts: 6 },
    { type: "message", channel: "news", id: "7-0", data: 3, ts: 7 },
  );
  assert.deepEqual(log.messages, ["6-0", "6-1", "7-0"]);
  assert.equal(c.stats.duplicates, 2);
  c.close();
  assert.equal(c.state, "closed");
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(FakeWebSocket.all.length, 2, "no reconnection after close");
});

test("ws: the server's reconnect advice sets the delay", async () => {
  FakeWebSocket.all = [];
  const c = new Herald({ url: "http://h/", transport: "ws", token: tokens(), backoff: { min: 10_000, max: 10_000, factor: 2 }, WebSocket: FakeWebSocket });
  const log = record(c);
  c.connect();
  await until(() => FakeWebSocket.all.length === 1);
  const ws = FakeWebSocket.all[0];
  assert.equal(ws.url.protocol, "ws:");
  ws.accept();
  ws.frame({ type: "reconnect", code: "shutdown", delay: 7 });
  ws.drop(1001);
  await until(() => log.states.some((s) => s.state === "reconnecting"));
  const s = log.states.find((s) => s.state === "reconnecting");
  assert.equal(s.delay, 7);
  assert.deepEqual([s.cause.reason, s.cause.code], ["advice", "shutdown"]);
  await until(() => FakeWebSocket.all.length === 2, "reconnection after the advised delay, not the backoff");
  c.close();
});

test("ws: backoff grows while the server is down and resets once connected", async () => {
  FakeWebSocket.all = [];
  const token = tokens();
  const c = new Herald({ url: "http://h/", transport: "ws", token, backoff: { min: 2, max: 8, factor: 2 }, WebSocket: FakeWebSocket });
  const log = record(c);
  c.connect();
  for (let i = 1; i <= 5; i++) {
    await until(() => FakeWebSocket.all.length === i);
    FakeWebSocket.all[i - 1].drop(1006);
  }
  await until(() => FakeWebSocket.all.length === 6);
  const waits = log.states.filter((s) => s.state === "reconnecting");
  assert.deepEqual(waits.map((s) => s.attempt), [1, 2, 3, 4, 5]);
  assert.ok(waits.every((s, i) => s.delay < Math.min(8, 2 * 2 ** i) && s.cause.reason === "failed"));
  assert.equal(token.count(), 6, "a token per attempt");
  FakeWebSocket.all[5].accept();
  FakeWebSocket.all[5].drop(1006);
  await until(() => log.states.filter((s) => s.state === "reconnecting").length === 6);
  assert.equal(log.states.at(-1).attempt, 1, "attempts count from the last connection");
  c.close();
});

test("ws: publish resolves with the ack matched by ref, and rejects on error or disconnect", async () => {
  FakeWebSocket.all = [];
  const c = new Herald({ url: "http://h/", transport: "ws", token: "t", backoff: fast, WebSocket: FakeWebSocket });
  await assert.rejects(c.publish("room", 1), { code: "not_connected" });
  c.connect();
  await until(() => FakeWebSocket.all.length === 1);
  const ws = FakeWebSocket.all[0];
  ws.accept();
  const a = c.publish("room", { text: "a" }, { event: "chat" });
  const b = c.publish("room", { text: "b" });
  const d = c.publish("room", { text: "d" });
  const [ca, cb, cd] = ws.sent;
  assert.deepEqual({ ...ca, ref: undefined }, { type: "publish", channel: "room", event: "chat", data: { text: "a" }, ref: undefined });
  ws.frame({ type: "ack", channel: "room", id: "9-1", ref: cb.ref }, { type: "ack", channel: "room", id: "9-0", ref: ca.ref });
  assert.equal(await a, "9-0");
  assert.equal(await b, "9-1");
  ws.frame({ type: "error", channel: "room", code: "forbidden", message: "no", ref: cd.ref });
  await assert.rejects(d, { code: "forbidden", channel: "room" });
  const e = c.publish("room", 2);
  ws.drop(1006);
  await assert.rejects(e, { code: "disconnected" });
  c.close();
  await assert.rejects(new Herald({ url: "http://h/", transport: "sse", token: "t" }).publish("x", 1), { code: "unsupported" });
});

test("ws: subscribe and unsubscribe at runtime send commands", async () => {
  FakeWebSocket.all = [];
  const c = new Herald({ url: "http://h/", transport: "ws", token: "t", channels: ["a"], backoff: fast, WebSocket: FakeWebSocket });
  const log = record(c);
  c.connect();
  await until(() => FakeWebSocket.all.length === 1);
  const ws = FakeWebSocket.all[0];
  ws.accept();
  c.subscribe("b", { since: "3-0" });
  c.subscribe("c");
  assert.deepEqual(ws.sent.map(({ type, channel, since }) => ({ type, channel, since })), [
    { type: "subscribe", channel: "b", since: "3-0" },
    { type: "subscribe", channel: "c", since: undefined },
  ]);
  ws.frame({ type: "subscribed", channel: "c", id: "8-0", ref: ws.sent[1].ref }, { type: "message", channel: "c", id: "9-0", data: 0, ts: 9 });
  c.unsubscribe("c");
  assert.deepEqual(ws.sent.at(-1).type, "unsubscribe");
  // In flight before the unsubscribed notice: not delivered.
  ws.frame({ type: "message", channel: "c", id: "10-0", data: 0, ts: 10 }, { type: "unsubscribed", channel: "c" });
  assert.deepEqual(log.messages, ["9-0"]);
  assert.equal(c.positions.c, undefined);
  // A forbidden channel is dropped, so that reconnecting does not fail for ever.
  ws.frame({ type: "error", channel: "b", code: "forbidden", message: "no", ref: ws.sent[0].ref });
  assert.deepEqual(c.channels, ["a"]);
  assert.equal(log.errors[0].code, "forbidden");
  c.close();
});

test("ws: unknown_position surfaces a gap and resubscribes live", async () => {
  FakeWebSocket.all = [];
  const c = new Herald({ url: "http://h/", transport: "ws", token: "t", channels: ["a"], positions: { a: "99-0" }, backoff: fast, WebSocket: FakeWebSocket });
  const log = record(c);
  c.connect();
  await until(() => FakeWebSocket.all.length === 1);
  const ws = FakeWebSocket.all[0];
  assert.equal(ws.url.searchParams.get("since"), "a=99-0");
  ws.accept();
  ws.frame({ type: "error", channel: "a", code: "unknown_position", message: "after the last" });
  assert.deepEqual(log.gaps, [{ type: "gap", channel: "a", since: "99-0", code: "unknown_position", message: "after the last" }]);
  assert.deepEqual(ws.sent, [{ type: "subscribe", channel: "a" }]);
  ws.frame({ type: "subscribed", channel: "a", id: "3-0" }, { type: "message", channel: "a", id: "4-0", data: 0, ts: 4 });
  assert.deepEqual(log.messages, ["4-0"]);
  c.close();
});

test("ws: an idle connection is pinged, and one that does not answer is replaced", async () => {
  FakeWebSocket.all = [];
  const c = new Herald({ url: "http://h/", transport: "ws", token: "t", heartbeat: 15, backoff: fast, WebSocket: FakeWebSocket });
  const log = record(c);
  c.connect();
  await until(() => FakeWebSocket.all.length === 1);
  const ws = FakeWebSocket.all[0];
  ws.accept();
  await until(() => ws.sent.length === 1, "a ping");
  assert.deepEqual(ws.sent[0], { type: "ping" });
  ws.frame({ type: "pong" });
  await until(() => ws.sent.length === 2, "another ping once idle again");
  await until(() => FakeWebSocket.all.length === 2, "a new connection after the unanswered ping");
  assert.equal(log.states.find((s) => s.state === "reconnecting").cause.reason, "timeout");
  c.close();
});

// ---- EventSource ----

test("sse: closes the EventSource on error and reconnects with a fresh token and the cursor", async () => {
  FakeEventSource.all = [];
  const token = tokens();
  const c = new Herald({ url: "http://h:8080", transport: "sse", token, channels: ["news"], backoff: fast, EventSource: FakeEventSource });
  const log = record(c);
  c.connect();
  await until(() => FakeEventSource.all.length === 1);
  let es = FakeEventSource.all[0];
  assert.equal(es.url.pathname, "/v1/sse");
  assert.equal(es.url.searchParams.get("token"), "tok1");
  es.accept();
  es.event({ type: "subscribed", channel: "user:1", id: "1-0" });
  es.event({ type: "subscribed", channel: "news", id: "2-0" });
  es.event({ type: "message", channel: "news", id: "3-0", data: "x", ts: 3 });
  es.event({ type: "gap", channel: "news", since: "2-0" });
  es.fail();
  assert.ok(es.closed, "the browser's own reconnect (with a stale token) is stopped");
  await until(() => FakeEventSource.all.length === 2);
  es = FakeEventSource.all[1];
  assert.equal(es.url.searchParams.get("token"), "tok2");
  assert.equal(es.url.searchParams.get("since"), "user:1=1-0;news=3-0");
  assert.deepEqual(log.messages, ["3-0"]);
  assert.equal(log.gaps.length, 1);
  assert.equal(log.states.find((s) => s.state === "reconnecting").cause.reason, "ended");

  // A new channel: SSE cannot send commands, so it reconnects at once.
  es.accept();
  c.subscribe("sport");
  assert.ok(es.closed);
  await until(() => FakeEventSource.all.length === 3);
  es = FakeEventSource.all[2];
  assert.deepEqual(es.url.searchParams.getAll("channel"), ["news", "sport"]);
  const resub = log.states.filter((s) => s.state === "reconnecting").at(-1);
  assert.deepEqual([resub.cause.reason, resub.delay], ["resubscribe", 0]);
  c.close();
  assert.ok(es.closed);
});

test("sse: a lagged error notice is the cause of the end", async () => {
  FakeEventSource.all = [];
  const c = new Herald({ url: "http://h/", transport: "sse", token: "t", backoff: fast, EventSource: FakeEventSource });
  const log = record(c);
  c.connect();
  await until(() => FakeEventSource.all.length === 1);
  const es = FakeEventSource.all[0];
  es.accept();
  es.event({ type: "error", code: "lagged", message: "too slow" });
  es.fail();
  await until(() => log.states.some((s) => s.state === "reconnecting"));
  assert.deepEqual(log.states.find((s) => s.state === "reconnecting").cause, { reason: "error", code: "lagged", message: "too slow" });
  c.close();
});

// ---- fetch stream ----

test("stream: NDJSON split across chunks, Authorization header, HTTP errors, resume", async () => {
  const f = fakeFetch();
  const c = new Herald({ url: "https://h:8443/base", transport: "stream", token: tokens(), channels: ["news"], backoff: fast, fetch: f });
  const log = record(c);
  c.connect();
  await until(() => f.calls.length === 1);
  let call = f.calls[0];
  assert.equal(call.url.pathname, "/base/v1/stream");
  assert.equal(call.url.searchParams.get("token"), null, "the token is in a header, not in the URL");
  assert.equal(call.init.headers.Authorization, "Bearer tok1");
  call.refuse(401, "unauthorized");
  await until(() => f.calls.length === 2);
  assert.deepEqual(log.states.find((s) => s.state === "reconnecting").cause,
    { reason: "refused", status: 401, code: "unauthorized", message: "unauthorized" });
  call = f.calls[1];
  assert.equal(call.init.headers.Authorization, "Bearer tok2");
  call.stream();
  await until(() => c.state === "connected");
  call.write('{"type":"subscribed","channel":"news","id":"1-0"}\n{"type":"mess');
  call.write('age","channel":"news","id":"2-0","data":{"a":1},"ts":2}\n{"type":"message","channel":"news","id":"3-0","data":2,"ts":3}');
  await until(() => log.messages.length === 1);
  call.write("\n");
  await until(() => log.messages.length === 2);
  call.end();
  await until(() => f.calls.length === 3);
  assert.equal(f.calls[2].url.searchParams.get("since"), "news=3-0");
  assert.equal(log.states.filter((s) => s.state === "reconnecting").at(-1).cause.reason, "ended");
  c.close();
  await until(() => f.calls[2].init.signal.aborted, "the fetch aborted by close");
});

test("stream: unsubscribe reconnects without the channel; connect after close resumes", async () => {
  const f = fakeFetch();
  const c = new Herald({ url: "http://h/", transport: "stream", token: "t", channels: ["a", "b"], backoff: fast, fetch: f });
  c.connect();
  await until(() => f.calls.length === 1);
  f.calls[0].stream();
  await until(() => c.state === "connected");
  f.calls[0].write('{"type":"subscribed","channel":"a","id":"1-0"}\n{"type":"subscribed","channel":"b","id":"1-0"}\n');
  await until(() => Object.keys(c.positions).length === 2);
  c.unsubscribe("b");
  await until(() => f.calls.length === 2);
  assert.deepEqual(f.calls[1].url.searchParams.getAll("channel"), ["a"]);
  assert.equal(f.calls[1].url.searchParams.get("since"), "a=1-0");
  c.close();
  c.connect();
  await until(() => f.calls.length === 3);
  assert.equal(f.calls[2].url.searchParams.get("since"), "a=1-0");
  c.close();
});

test("a failing token callback is retried with backoff", async () => {
  FakeWebSocket.all = [];
  let n = 0;
  const c = new Herald({
    url: "http://h/", transport: "ws", backoff: fast, WebSocket: FakeWebSocket,
    token: async () => { if (++n < 3) throw new Error("token service down"); return "ok"; },
  });
  const log = record(c);
  c.connect();
  await until(() => FakeWebSocket.all.length === 1);
  assert.equal(FakeWebSocket.all[0].token, "ok");
  assert.deepEqual(log.states.filter((s) => s.state === "reconnecting").map((s) => s.cause.reason), ["token", "token"]);
  c.close();
});

test("httpPublish posts with the token and returns the ID or a HeraldError", async () => {
  const seen = [];
  const ok = async (url, init) => { seen.push([String(url), init]); return new Response('{"id":"5-0"}', { status: 200 }); };
  assert.equal(await httpPublish({ url: "http://h:8080", token: async () => "k", channel: "news", event: "e", data: { a: 1 }, fetch: ok }), "5-0");
  assert.equal(seen[0][0], "http://h:8080/v1/publish");
  assert.equal(seen[0][1].headers.Authorization, "Bearer k");
  assert.deepEqual(JSON.parse(seen[0][1].body), { channel: "news", event: "e", data: { a: 1 } });
  const refused = async () => new Response('{"error":{"code":"forbidden","message":"no"}}', { status: 403 });
  await assert.rejects(httpPublish({ url: "http://h", token: "t", channel: "x", data: 1, fetch: refused }), { code: "forbidden", status: 403 });
});

// ---- WebTransport ----

/** A WebTransport session the test plays the server of: open() or
 * refuse() it; its first bidirectional stream carries NDJSON. */
class FakeWebTransport {
  static all = [];
  constructor(url, options) {
    this.url = new URL(url);
    this.options = options;
    this.lines = []; // what the client wrote, parsed, blank lines skipped
    this.ready = new Promise((resolve, reject) => { this.open = resolve; this.refuse = () => reject(new Error("WebTransportError: opening handshake failed")); });
    this.closed = new Promise((resolve) => { this.markClosed = resolve; });
    this.closedWith = null;
    FakeWebTransport.all.push(this);
  }
  async createBidirectionalStream() {
    let buffered = "";
    const decoder = new TextDecoder();
    const writable = new WritableStream({
      write: (chunk) => {
        buffered += decoder.decode(chunk);
        let i;
        while ((i = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, i);
          buffered = buffered.slice(i + 1);
          if (line.trim() !== "") this.lines.push(JSON.parse(line));
        }
      },
    });
    const readable = new ReadableStream({ start: (c) => { this.controller = c; } });
    this.streamOpened = true;
    return { readable, writable };
  }
  close(info) {
    if (this.closedWith) return;
    this.closedWith = info;
    this.markClosed(info);
    try { this.controller?.error(new Error("session closed")); } catch { /* ended */ }
  }
  // server side
  write(...envelopes) { this.controller.enqueue(new TextEncoder().encode(envelopes.map((e) => JSON.stringify(e) + "\n").join(""))); }
  end() { this.controller.close(); }
  closeSession(closeCode, reason) {
    this.closedWith = { closeCode, reason };
    this.markClosed({ closeCode, reason });
    this.controller.error(new Error("WebTransportError: session closed"));
  }
}

test("chooseTransport: webtransport falls back to ws without the API or when a first session fails", () => {
  const t = (transport, hasWebTransport, failed, opened) => chooseTransport(transport, { hasWebTransport, failed, opened });
  assert.equal(t("webtransport", true, false, false), "webtransport");
  assert.equal(t("webtransport", false, false, false), "ws", "typeof WebTransport === 'undefined'");
  assert.equal(t("webtransport", true, true, false), "ws", "the first session failed to open");
  assert.equal(t("webtransport", true, true, true), "webtransport", "a session opened before: retried on WebTransport");
  for (const other of ["ws", "sse", "stream"]) assert.equal(t(other, false, true, false), other);
});

test("webtransport: without the API the client uses WebSocket", async () => {
  FakeWebSocket.all = [];
  const c = new Herald({ url: "https://h:8443/", transport: "webtransport", token: tokens(), channels: ["news"], backoff: fast, WebSocket: FakeWebSocket, WebTransport: undefined });
  // Node has no WebTransport global, so none is found there either.
  assert.equal(typeof globalThis.WebTransport, "undefined");
  assert.equal(c.activeTransport, "ws");
  c.connect();
  await until(() => FakeWebSocket.all.length === 1);
  assert.equal(FakeWebSocket.all[0].url.pathname, "/v1/ws");
  assert.equal(c.transport, "webtransport");
  c.close();
});

test("webtransport: a session that fails to open falls back to WebSocket at once; commands go over the stream", async () => {
  FakeWebSocket.all = [];
  FakeWebTransport.all = [];
  const hashes = [{ algorithm: "sha-256", value: new Uint8Array(32) }];
  const c = new Herald({ url: "https://h:8443/", transport: "webtransport", token: tokens(), channels: ["news"], backoff: { min: 5000, max: 5000, factor: 1 },
    WebSocket: FakeWebSocket, WebTransport: FakeWebTransport, serverCertificateHashes: hashes });
  const log = record(c);
  c.connect();
  await until(() => FakeWebTransport.all.length === 1);
  const wt = FakeWebTransport.all[0];
  assert.equal(wt.url.pathname, "/v1/wt");
  assert.equal(wt.url.protocol, "https:");
  assert.equal(wt.url.searchParams.get("token"), "tok1", "the WebTransport API sets no headers: the token is in the URL");
  assert.deepEqual(wt.url.searchParams.getAll("channel"), ["news"]);
  assert.deepEqual(wt.options, { serverCertificateHashes: hashes });
  wt.refuse();
  // No backoff wait (5 s here): the fallback is immediate, with a new token.
  await until(() => FakeWebSocket.all.length === 1, "the WebSocket fallback");
  const ws = FakeWebSocket.all[0];
  assert.equal(ws.token, "tok2");
  assert.equal(c.activeTransport, "ws");
  const cause = log.states.find((s) => s.state === "reconnecting").cause;
  assert.equal(cause.fallback, true);
  assert.equal(cause.delay, 0);
  ws.accept();
  ws.frame({ type: "subscribed", channel: "news", id: "1-0" });
  c.subscribe("room.1");
  assert.equal(ws.sent.at(-1).type, "subscribe", "WebSocket is duplex: a command");
  c.close();
});

test("webtransport: NDJSON over the stream, commands, publish ack, resume on WebTransport after a session opened", async () => {
  FakeWebSocket.all = [];
  FakeWebTransport.all = [];
  const c = new Herald({ url: "https://h:8443/", transport: "webtransport", token: tokens(), channels: ["news"], backoff: fast, WebSocket: FakeWebSocket, WebTransport: FakeWebTransport });
  const log = record(c);
  c.connect();
  await until(() => FakeWebTransport.all.length === 1);
  let wt = FakeWebTransport.all[0];
  wt.open();
  await until(() => c.state === "connected");
  assert.equal(c.activeTransport, "webtransport");
  wt.write({ type: "subscribed", channel: "news", id: "1-0" }, { type: "message", channel: "news", id: "2-0", data: 1, ts: 2 });
  await until(() => log.messages.length === 1);
  c.subscribe("room.1");
  await until(() => wt.lines.some((l) => l.type === "subscribe" && l.channel === "room.1"), "a subscribe command on the stream");
  const published = c.publish("room.1", { a: 1 });
  await until(() => wt.lines.some((l) => l.type === "publish"));
  const ref = wt.lines.find((l) => l.type === "publish").ref;
  wt.write({ type: "ack", channel: "room.1", id: "3-0", ref });
  assert.equal(await published, "3-0");

  // The server closes the session as lagged: reconnect, on WebTransport
  // again (one opened), resuming from the position.
  wt.closeSession(4000, "lagged");
  await until(() => FakeWebTransport.all.length === 2, "a reconnection");
  const cause = log.states.filter((s) => s.state === "reconnecting").at(-1).cause;
  assert.deepEqual([cause.reason, cause.code, cause.message], ["closed", 4000, "lagged"]);
  wt = FakeWebTransport.all[1];
  assert.equal(FakeWebSocket.all.length, 0, "no fallback once a session opened");
  assert.match(wt.url.searchParams.get("since"), /news=2-0/);
  wt.refuse(); // the server is down: backoff, still WebTransport
  await until(() => FakeWebTransport.all.length === 3, "a retry");
  assert.equal(FakeWebSocket.all.length, 0);
  wt = FakeWebTransport.all[2];
  wt.open();
  await until(() => c.state === "connected");
  // A drain: advice, then the end of the stream; the client closes the session.
  wt.write({ type: "reconnect", code: "shutdown", delay: 1 });
  wt.end();
  await until(() => wt.closedWith !== null, "the client closing the ended session");
  await until(() => FakeWebTransport.all.length === 4);
  assert.equal(log.states.filter((s) => s.state === "reconnecting").at(-1).cause.reason, "advice");
  c.close();
  assert.ok(FakeWebTransport.all[3].closedWith === null || FakeWebTransport.all[3].closedWith.closeCode === 0);
});

// ---- presence ----

test("presence: the snapshot, then joins and leaves applied in order; a reconnection's snapshot replaces the view", async () => {
  FakeEventSource.all = [];
  const c = new Herald({ url: "http://h/", transport: "sse", token: tokens(), channels: ["room.1", "news"], backoff: fast, EventSource: FakeEventSource });
  const events = [];
  c.on("presence", (p) => events.push(p));
  c.connect();
  await until(() => FakeEventSource.all.length === 1);
  let es = FakeEventSource.all[0];
  es.accept();
  const ann = { user: "ann", conn: "a1" }, ben = { user: "ben", conn: "b1" }, ben2 = { user: "ben", conn: "b2" };
  es.event({ type: "subscribed", channel: "news", id: "1-0" }); // no presence on news
  es.event({ type: "subscribed", channel: "room.1", id: "1-0", presence: { count: 1, members: [ben] } });
  assert.equal(c.presence("news"), undefined);
  assert.deepEqual(c.presence("room.1"), { channel: "room.1", count: 1, members: [ben], joins: [], leaves: [] });
  // A diff the snapshot already reflects changes nothing; then ann joins,
  // ben opens a second connection and closes the first.
  es.event({ type: "presence", channel: "room.1", presence: { count: 1, joins: [ben] } });
  es.event({ type: "presence", channel: "room.1", presence: { count: 3, joins: [ann, ben2] } });
  es.event({ type: "presence", channel: "room.1", presence: { count: 2, leaves: [ben] } });
  es.event({ type: "presence", channel: "news", presence: { count: 9, joins: [ann] } }); // not a presence subscription: ignored
  es.event({ type: "presence", channel: "elsewhere", presence: { count: 1, joins: [ann] } }); // not subscribed: ignored
  assert.deepEqual(c.presence("room.1").members, [ann, ben2]);
  assert.equal(c.presence("room.1").count, 2);
  assert.deepEqual(events.map((e) => e.count), [1, 1, 3, 2], "one event per snapshot or change of room.1");
  assert.deepEqual(events[2].joins, [ann, ben2]);
  assert.deepEqual(events[3].leaves, [ben]);
  assert.deepEqual(events[3].members, [ann, ben2]);
  assert.equal(c.presence("news"), undefined);
  // Malformed presence fields break nothing.
  es.event({ type: "presence", channel: "room.1", presence: { count: 2, joins: [null, 7, { user: "x" }] } });
  assert.deepEqual(c.presence("room.1").members, [ann, ben2]);
  // A bare reset keeps the view; a reset with members replaces it.
  es.event({ type: "presence", channel: "room.1", presence: { count: 2, reset: true } });
  assert.deepEqual(c.presence("room.1").members, [ann, ben2]);
  const zed = { user: "zed", conn: "z1" };
  es.event({ type: "presence", channel: "room.1", presence: { count: 2, reset: true, members: [ann, zed] } });
  assert.deepEqual(c.presence("room.1").members, [ann, zed], "a reset's members replace the view");
  es.event({ type: "presence", channel: "room.1", presence: { count: 2, joins: [ben2], leaves: [zed] } });
  assert.deepEqual(c.presence("room.1").members, [ann, ben2]);

  es.fail();
  await until(() => FakeEventSource.all.length === 2, "a reconnection");
  es = FakeEventSource.all[1];
  es.accept();
  es.event({ type: "subscribed", channel: "room.1", id: "1-0", presence: { count: 1, members: [ann] } });
  assert.deepEqual(c.presence("room.1").members, [ann], "the new snapshot replaces the view");
  es.event({ type: "subscribed", channel: "news", id: "1-0" });
  c.unsubscribe("room.1");
  assert.equal(c.presence("room.1"), undefined);
  c.close();
});
