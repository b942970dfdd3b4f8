// Unit tests of the pages' signalling connection (crates/assistd/web/assets/signal.mjs) with a
// scripted WebSocket and timers: what it sends, how it matches answers to requests, when it calls
// the page back. The real connection is covered by e2e.test.mjs and share.test.mjs.
// Run: node --test tests/e2e/signal-unit.test.mjs
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  PING_EVERY_MS, SignalConnection, parseSignal, signalUrl,
} from '../../crates/assistd/web/assets/signal.mjs';

/** A WebSocket the test drives: records what is sent and closed. */
class ScriptedSocket {
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    ScriptedSocket.last = this;
  }
  send(text) {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(text));
  }
  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }
  // The test's side:
  async open() {
    this.readyState = 1;
    await this.onopen();
  }
  receive(data) {
    this.onmessage({ data: typeof data === 'string' ? data : JSON.stringify(data) });
  }
  serverClose(code, reason = '') {
    this.readyState = 3;
    this.onclose({ code, reason });
  }
}

/** A connection on a scripted socket with recorded callbacks and a manual ping timer. */
function connection(extra = {}) {
  const calls = [];
  const timers = { every: null, tick: null, cleared: [] };
  const conn = new SignalConnection({
    url: signalUrl('localhost:8443'),
    token: 'tok-1',
    WebSocket: ScriptedSocket,
    setInterval: (fn, ms) => {
      timers.tick = fn;
      timers.every = ms;
      return 42;
    },
    clearInterval: (h) => timers.cleared.push(h),
    onOpen: () => calls.push(['open']),
    onSignedIn: () => calls.push(['signedIn']),
    onMessage: (msg, req) => calls.push(['message', msg, req]),
    onClose: (ev, wasSignedIn) => calls.push(['close', ev.code, wasSignedIn]),
    ...extra,
  });
  return { conn, socket: ScriptedSocket.last, calls, timers };
}

test('signalUrl is the /v1/signal endpoint of the page host', () => {
  assert.equal(signalUrl('example.org:8443'), 'wss://example.org:8443/v1/signal');
});

test('parseSignal keeps JSON objects only', () => {
  assert.deepEqual(parseSignal('{"type":"pong","id":1}'), { type: 'pong', id: 1 });
  for (const bad of ['null', '[1]', '3', '"x"', 'not json', '', new ArrayBuffer(2), undefined]) {
    assert.equal(parseSignal(bad), null, String(bad));
  }
});

test('on open it authenticates first, then pings, and starts the ping timer', async () => {
  const { socket, calls, timers } = connection();
  assert.equal(socket.url, 'wss://localhost:8443/v1/signal');
  await socket.open();
  assert.deepEqual(socket.sent, [{ type: 'authenticate', token: 'tok-1' }, { id: 1, type: 'ping' }]);
  assert.deepEqual(calls, [['open']]);
  assert.equal(timers.every, PING_EVERY_MS);
  timers.tick();
  assert.deepEqual(socket.sent.at(-1), { id: 2, type: 'ping' });
});

test('a token function is asked for a fresh token when the socket opens', async () => {
  let asked = 0;
  const { socket } = connection({ token: async () => `fresh-${++asked}` });
  assert.equal(asked, 0);
  await socket.open();
  assert.equal(asked, 1);
  assert.deepEqual(socket.sent[0], { type: 'authenticate', token: 'fresh-1' });
});

test('a failing token function sends nothing', async () => {
  const { socket, calls } = connection({ token: async () => { throw new Error('no session'); } });
  await socket.open();
  assert.deepEqual(socket.sent, []);
  assert.deepEqual(calls, []);
});

test('the first pong signs in once; every message reaches the page', async () => {
  const { socket, calls } = connection();
  await socket.open();
  socket.receive({ id: 1, type: 'pong' });
  socket.receive({ id: 7, type: 'pong' });
  assert.deepEqual(calls.map((c) => c[0]), ['open', 'signedIn', 'message', 'message']);
  assert.deepEqual(calls[2], ['message', { id: 1, type: 'pong' }, { type: 'ping' }]);
});

test('answers are matched to their request by id, once', async () => {
  const { conn, socket, calls } = connection();
  await socket.open();
  const id = conn.send({ type: 'redeemCode', code: 'ABCD2345' });
  assert.equal(id, 2);
  assert.deepEqual(socket.sent.at(-1), { id: 2, type: 'redeemCode', code: 'ABCD2345' });
  socket.receive({ id, type: 'error', code: 'invalidCode' });
  socket.receive({ id, type: 'error', code: 'invalidCode' });
  socket.receive({ id: '2', type: 'ack' });
  socket.receive({ type: 'sessionEnded' });
  const reqs = calls.filter((c) => c[0] === 'message').map((c) => c[2]);
  assert.deepEqual(reqs, [{ type: 'redeemCode', code: 'ABCD2345' }, undefined, undefined, undefined]);
});

test('messages that are not JSON objects are dropped', async () => {
  const { socket, calls } = connection();
  await socket.open();
  socket.onmessage({ data: new ArrayBuffer(4) });
  socket.receive('null');
  socket.receive('{oops');
  assert.deepEqual(calls, [['open']]);
});

test('send and authenticate do nothing before the socket opens', () => {
  const { conn, socket } = connection();
  assert.equal(conn.isOpen, false);
  assert.equal(conn.send({ type: 'ping' }), null);
  assert.equal(conn.authenticate('tok-2'), false);
  assert.deepEqual(socket.sent, []);
});

test('authenticate re-sends a refreshed token on the open connection', async () => {
  const { conn, socket } = connection();
  await socket.open();
  assert.equal(conn.authenticate('tok-2'), true);
  assert.deepEqual(socket.sent.at(-1), { type: 'authenticate', token: 'tok-2' });
});

test('a close by the server reports the code and whether the token had been accepted', async () => {
  for (const [pong, code, signedIn] of [[true, 4401, true], [false, 1008, false]]) {
    const { conn, socket, calls, timers } = connection();
    await socket.open();
    if (pong) socket.receive({ id: 1, type: 'pong' });
    conn.send({ type: 'requestCode' });
    socket.serverClose(code);
    assert.deepEqual(calls.at(-1), ['close', code, signedIn]);
    assert.deepEqual(timers.cleared, [42]);
    assert.equal(conn.pending.size, 0);
    assert.equal(conn.signedIn, false);
    assert.equal(conn.send({ type: 'ping' }), null);
  }
});

test('close from the page closes the socket and calls nothing back', async () => {
  const { conn, socket, calls, timers } = connection();
  await socket.open();
  socket.receive({ id: 1, type: 'pong' });
  conn.close(1000, 'page closed');
  assert.deepEqual(socket.closedWith, { code: 1000, reason: 'page closed' });
  assert.deepEqual(timers.cleared, [42]);
  socket.onclose({ code: 1000, reason: 'page closed' });
  socket.onmessage({ data: '{"type":"chat"}' });
  assert.deepEqual(calls.map((c) => c[0]), ['open', 'signedIn', 'message']);
  conn.close(); // twice is harmless
});

test('a socket closed while the token was being fetched gets no authenticate', async () => {
  let release;
  const { conn, socket } = connection({ token: () => new Promise((r) => { release = r; }) });
  socket.readyState = 1;
  const opened = socket.onopen();
  conn.close();
  release('late');
  await opened;
  assert.deepEqual(socket.sent, []);
});
