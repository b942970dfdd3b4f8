// The signalling connection of the browser pages (the helper page and the browser sharer): one
// WebSocket to /v1/signal that authenticates with the token of /assets/auth.mjs in its first
// message, pings to learn that the token was accepted and to keep the connection alive, numbers
// requests and matches answers to them by id. The pages keep their own UI and message handling.
// No DOM here and no absolute imports, so node imports this file for unit tests
// (tests/e2e/signal-unit.test.mjs) with a scripted WebSocket. Protocol: docs/protocol.md.

/** How often a connection pings (the server closes idle connections). */
export const PING_EVERY_MS = 20_000;

/** `WebSocket.OPEN`. */
const OPEN = 1;

/** The signalling endpoint of the server at `host` (`location.host`). */
export function signalUrl(host) {
  return `wss://${host}/v1/signal`;
}

/** A signalling message from a WebSocket message's data: the JSON object, or null for anything else. */
export function parseSignal(data) {
  if (typeof data !== 'string') return null;
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return null;
  }
  return msg && typeof msg === 'object' && !Array.isArray(msg) ? msg : null;
}

/**
 * One signalling connection, opened by the constructor (which throws when the browser cannot
 * open the WebSocket). Options:
 * - `url`: the endpoint (see {@link signalUrl});
 * - `token`: the access token, or an async function giving a fresh one when the socket opens;
 * - `onOpen()`: the socket opened and `authenticate` was sent;
 * - `onSignedIn()`: the first pong came back, so the server accepted the token;
 * - `onMessage(msg, req)`: every message (the first pong too, after `onSignedIn`), with the
 *   request it answers (`req`, what was passed to {@link SignalConnection#send}) or undefined;
 * - `onClose(ev, wasSignedIn)`: the server or the network closed it (not called after
 *   {@link SignalConnection#close}); `ev.code` and `ev.reason` are the close code and reason;
 * - `WebSocket`, `setInterval`, `clearInterval`, `pingEveryMs`: for tests.
 */
export class SignalConnection {
  constructor(opts) {
    this.opts = opts;
    this.signedIn = false;
    this.closed = false;
    this.nextId = 1;
    /** Request id → the request, until its answer comes. */
    this.pending = new Map();
    this.pingTimer = null;
    const Socket = opts.WebSocket ?? globalThis.WebSocket;
    const socket = new Socket(opts.url);
    this.ws = socket;
    socket.onopen = () => this.onOpen();
    socket.onmessage = (ev) => this.onMessage(ev);
    socket.onclose = (ev) => this.onClose(ev);
  }

  /** Whether the socket is open (requests can be sent). */
  get isOpen() {
    return !this.closed && this.ws.readyState === OPEN;
  }

  async onOpen() {
    const { token } = this.opts;
    let value;
    try {
      value = typeof token === 'function' ? await token() : token;
    } catch (e) {
      console.warn('no token for the signalling connection:', e?.message ?? e);
      return; // the server closes a connection that does not authenticate
    }
    if (!this.isOpen) return;
    // Browsers cannot set headers: the token goes in the first message.
    this.authenticate(value);
    this.opts.onOpen?.();
    // The server answers nothing to a good token; the first pong shows it was accepted.
    this.send({ type: 'ping' });
    const every = this.opts.pingEveryMs ?? PING_EVERY_MS;
    this.pingTimer = (this.opts.setInterval ?? setInterval)(() => this.send({ type: 'ping' }), every);
  }

  onMessage(ev) {
    if (this.closed) return;
    const msg = parseSignal(ev.data);
    if (!msg) return;
    const req = typeof msg.id === 'number' ? this.pending.get(msg.id) : undefined;
    if (req) this.pending.delete(msg.id);
    if (msg.type === 'pong' && !this.signedIn) {
      this.signedIn = true;
      this.opts.onSignedIn?.();
    }
    this.opts.onMessage?.(msg, req);
  }

  onClose(ev) {
    if (this.closed) return;
    const wasSignedIn = this.signedIn;
    this.cleanup();
    this.opts.onClose?.(ev, wasSignedIn);
  }

  /** Sends a request with the next id and remembers it; returns the id, or null when not open. */
  send(msg) {
    if (!this.isOpen) return null;
    const id = this.nextId++;
    this.pending.set(id, msg);
    this.ws.send(JSON.stringify({ id, ...msg }));
    return id;
  }

  /**
   * Sends `authenticate` with `token` (a refreshed token must reach the server before the old
   * one expires, else it closes the connection with 4401). Returns whether it was sent.
   */
  authenticate(token) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify({ type: 'authenticate', token }));
    return true;
  }

  /** Closes the connection from this side; `onClose` is not called. */
  close(code = 1000, reason = 'signed out') {
    if (this.closed) return;
    this.cleanup();
    try {
      this.ws.close(code, reason);
    } catch {
      // already closing
    }
  }

  cleanup() {
    (this.opts.clearInterval ?? clearInterval)(this.pingTimer);
    this.pingTimer = null;
    this.signedIn = false;
    this.closed = true;
    this.pending.clear();
  }
}
