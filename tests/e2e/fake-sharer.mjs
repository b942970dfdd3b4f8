// A scripted sharer for testing the helper page without X: it redeems a code, allows every
// consent, joins the relay and shows a 640×480 screen of four solid quadrants (top-left red,
// top-right green, bottom-left blue, bottom-right white) as PNG tiles. Like the X test app,
// a button press (applied only in fullControl or higher, as the reference sharer does) repaints
// the pressed quadrant yellow and is recorded in `clicks`. Every input event is kept in `inputs`.
// Needs node's WebSocket (node 20: --experimental-websocket) and NODE_EXTRA_CA_CERTS for a
// self-signed server.
import zlib from 'node:zlib';
import {
  CHANNEL, FLAG_KEYFRAME, canControl, encodeRelayFrame, encodeScreenFrame, parseControl, parseRelayFrame,
} from '../../crates/assistd/web/proto.mjs';

export const WIDTH = 640;
export const HEIGHT = 480;
export const COLORS = Object.freeze({
  red: [255, 0, 0], green: [0, 255, 0], blue: [0, 0, 255], white: [255, 255, 255], yellow: [255, 255, 0],
});
/** The quadrants: name, rectangle and first colour. */
export const QUADRANTS = Object.freeze([
  { name: 'topLeft', x: 0, y: 0, color: 'red' },
  { name: 'topRight', x: 320, y: 0, color: 'green' },
  { name: 'bottomLeft', x: 0, y: 240, color: 'blue' },
  { name: 'bottomRight', x: 320, y: 240, color: 'white' },
].map((q) => ({ ...q, width: 320, height: 240 })));

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  Buffer.from(data).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** A PNG file of `width` × `height` pixels of one RGB colour. */
export function solidPng(width, height, [r, g, b]) {
  const row = Buffer.alloc(1 + width * 3);
  for (let i = 0; i < width; i++) row.set([r, g, b], 1 + i * 3);
  const raw = Buffer.concat(Array.from({ length: height }, () => row));
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

function once(ws, type) {
  return new Promise((resolve, reject) => {
    ws.addEventListener(type, resolve, { once: true });
    ws.addEventListener('error', (e) => reject(new Error(`WebSocket error: ${e.message || 'failed'}`)), { once: true });
  });
}

/**
 * Starts the scripted sharer: `server` like https://localhost:8443, `token` the sharer's
 * bearer token, `code` the helper's code; without a code (a token with a device id) it waits
 * for a launch and accepts it. Returns an object with `inputs`, `clicks`, `colors` (the current
 * colour of each quadrant), `mode`, `relayMode`, `ended`, `log`, `end()` and `close()`.
 */
export async function startFakeSharer({ server, token, code }) {
  const state = {
    inputs: [], clicks: [], log: [], mode: null, relayMode: null, sessionId: null,
    colors: Object.fromEntries(QUADRANTS.map((q) => [q.name, q.color])),
    ended: null, relay: null, signal: null,
  };
  const log = (s) => state.log.push(s);
  const url = new URL('/v1/signal', server.replace(/^http/, 'ws'));
  const ws = new WebSocket(url);
  state.signal = ws;
  await once(ws, 'open');
  let id = 1;
  const send = (m) => ws.send(JSON.stringify({ id: id++, ...m }));
  ws.send(JSON.stringify({ type: 'authenticate', token }));
  if (code) send({ type: 'redeemCode', code });

  const tileOf = (q) => ({ x: q.x, y: q.y, width: q.width, height: q.height, format: 2, data: solidPng(q.width, q.height, COLORS[state.colors[q.name]]) });
  const sendScreen = (quadrants, keyframe) => {
    const r = state.relay;
    if (!r || r.readyState !== WebSocket.OPEN) return;
    const payload = encodeScreenFrame({ width: WIDTH, height: HEIGHT, tiles: quadrants.map(tileOf) });
    r.send(encodeRelayFrame(CHANNEL.screen, payload, keyframe ? FLAG_KEYFRAME : 0));
  };

  const onInput = (ev) => {
    state.inputs.push(ev);
    if (!canControl(state.relayMode)) return; // view only: apply nothing
    if (ev.type === 'pointerButton' && ev.down) {
      state.clicks.push({ x: ev.x, y: ev.y, button: ev.button });
      const q = QUADRANTS.find((c) => ev.x >= c.x && ev.x < c.x + c.width && ev.y >= c.y && ev.y < c.y + c.height);
      if (q) {
        state.colors[q.name] = 'yellow';
        sendScreen([q], false);
      }
    }
  };

  const joinRelay = (relay) => {
    const r = new WebSocket(`${relay.wssUrl}?ticket=${encodeURIComponent(relay.ticket)}`);
    r.binaryType = 'arraybuffer';
    state.relay = r;
    r.onmessage = (e) => {
      let f;
      try {
        f = parseRelayFrame(e.data);
      } catch (err) {
        log(`bad frame: ${err.message}`);
        return;
      }
      if (f.channel === CHANNEL.control) {
        const c = parseControl(f.payload) || {};
        log(`relay ${c.type}`);
        if (c.type === 'paired' || c.type === 'modeChanged') state.relayMode = c.mode;
        if (c.type === 'paired' || c.type === 'keyframeRequest') sendScreen(QUADRANTS, true);
      } else if (f.channel === CHANNEL.input) {
        try {
          onInput(JSON.parse(new TextDecoder().decode(f.payload)));
        } catch {
          log('malformed input');
        }
      }
    };
    r.onclose = (e) => log(`relay closed ${e.code}`);
  };

  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    log(`signal ${m.type}${m.mode ? ` ${m.mode}` : ''}`);
    switch (m.type) {
      case 'launchRequested':
        send({ type: 'answerLaunch', sessionId: m.sessionId, accept: true });
        break;
      case 'sessionJoined':
        state.sessionId = m.sessionId;
        break;
      case 'consentRequested':
        send({ type: 'consent', sessionId: m.sessionId, allow: true });
        break;
      case 'sessionActive':
        state.mode = m.mode;
        joinRelay(m.relay);
        break;
      case 'modeChanged':
        state.mode = m.mode;
        break;
      case 'sessionEnded':
        state.ended = m;
        break;
      case 'error':
        log(`error ${m.code}: ${m.message}`);
        break;
      default:
        break;
    }
  };
  state.end = () => send({ type: 'endSession', sessionId: state.sessionId });
  // The agent's pointer message (docs/protocol.md, "Pointer position").
  state.sendPointer = (x, y) => {
    const r = state.relay;
    if (r && r.readyState === WebSocket.OPEN) {
      r.send(encodeRelayFrame(CHANNEL.control, JSON.stringify({ type: 'pointer', x, y })));
    }
  };
  state.close = () => {
    try { state.relay?.close(1000); } catch { /* closed */ }
    try { ws.close(1000); } catch { /* closed */ }
  };
  return state;
}
