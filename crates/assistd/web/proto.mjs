// Pure functions of the helper page: relay frames, screen tiles, input events, modes and
// plain-words texts. No DOM here, so node can import this file for unit tests
// (tests/e2e/unit.test.mjs). The formats are in docs/protocol.md.

/** Relay channels. */
export const CHANNEL = Object.freeze({ control: 0, screen: 1, input: 2, chat: 3 });
/** Relay frame flags. */
export const FLAG_KEYFRAME = 0x01;
export const FLAG_FROM_RELAY = 0x80;
/** Bytes in a relay frame header: channel, flags, u32 payload length. */
export const HEADER_LEN = 6;

/** The modes, lowest first; each implies the ones before it. */
export const MODES = Object.freeze(['viewOnly', 'fullControl', 'elevation', 'unattended']);

/** Words for each mode, for people. */
export const MODE_LABELS = Object.freeze({
  viewOnly: 'View only',
  fullControl: 'Full control',
  elevation: 'Elevation',
  unattended: 'Unattended',
});

/** A mode's rank (0 for viewOnly…), or -1 for no or an unknown mode. */
export function modeRank(mode) {
  return MODES.indexOf(mode);
}

/** Whether input may be sent in `mode`: fullControl or higher. */
export function canControl(mode) {
  return modeRank(mode) >= modeRank('fullControl');
}

function bytesOf(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('expected bytes');
}

/**
 * Parses one relay frame (one WebSocket binary message). Returns
 * `{channel, flags, keyframe, fromRelay, payload}` (payload a Uint8Array view, no copy), or
 * throws an Error when the header is short or the length does not match.
 */
export function parseRelayFrame(data) {
  const b = bytesOf(data);
  if (b.length < HEADER_LEN) throw new Error(`relay frame of ${b.length} bytes is shorter than its header`);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const length = view.getUint32(2);
  if (length !== b.length - HEADER_LEN) {
    throw new Error(`relay frame says ${length} payload bytes but has ${b.length - HEADER_LEN}`);
  }
  const flags = b[1];
  return {
    channel: b[0],
    flags,
    keyframe: (flags & FLAG_KEYFRAME) !== 0,
    fromRelay: (flags & FLAG_FROM_RELAY) !== 0,
    payload: b.subarray(HEADER_LEN),
  };
}

/** Builds a relay frame: `payload` is a string (sent as UTF-8) or bytes. */
export function encodeRelayFrame(channel, payload, flags = 0) {
  const body = typeof payload === 'string' ? new TextEncoder().encode(payload) : bytesOf(payload);
  const out = new Uint8Array(HEADER_LEN + body.length);
  const view = new DataView(out.buffer);
  out[0] = channel;
  out[1] = flags;
  view.setUint32(2, body.length);
  out.set(body, HEADER_LEN);
  return out;
}

/** Decodes a control frame's JSON payload; null when it is not a JSON object. */
export function parseControl(payload) {
  try {
    const v = JSON.parse(new TextDecoder().decode(payload));
    return v && typeof v === 'object' && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/** Tile image formats. */
export const TILE_FORMATS = Object.freeze({ 1: 'image/jpeg', 2: 'image/png' });

const SCREEN_HEADER = 7;
const TILE_HEADER = 13;

/**
 * Parses a screen frame payload (channel 1): version 1, screen size, tiles. Returns
 * `{width, height, tiles: [{x, y, width, height, format, type, data}]}` (data a Uint8Array
 * view into `payload`), or throws an Error for a frame the helper must ignore: another
 * version, truncated, trailing bytes, an empty screen or tile, an unknown format, a tile
 * outside the screen, or overlapping tiles.
 */
export function parseScreenFrame(payload) {
  const b = bytesOf(payload);
  if (b.length < SCREEN_HEADER) throw new Error('screen frame shorter than its header');
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const version = b[0];
  if (version !== 1) throw new Error(`screen frame version ${version} is not 1`);
  const width = view.getUint16(1);
  const height = view.getUint16(3);
  const count = view.getUint16(5);
  if (width === 0 || height === 0) throw new Error('screen of zero size');
  const tiles = [];
  let at = SCREEN_HEADER;
  for (let i = 0; i < count; i++) {
    if (at + TILE_HEADER > b.length) throw new Error(`tile ${i} header is truncated`);
    const x = view.getUint16(at);
    const y = view.getUint16(at + 2);
    const w = view.getUint16(at + 4);
    const h = view.getUint16(at + 6);
    const format = b[at + 8];
    const length = view.getUint32(at + 9);
    at += TILE_HEADER;
    if (at + length > b.length) throw new Error(`tile ${i} data is truncated`);
    const type = TILE_FORMATS[format];
    if (!type) throw new Error(`tile ${i} has unknown format ${format}`);
    if (w === 0 || h === 0) throw new Error(`tile ${i} is empty`);
    if (x + w > width || y + h > height) throw new Error(`tile ${i} lies outside the screen`);
    tiles.push({ x, y, width: w, height: h, format, type, data: b.subarray(at, at + length) });
    at += length;
  }
  if (at !== b.length) throw new Error(`${b.length - at} bytes after the last tile`);
  if (overlapping(tiles)) throw new Error('tiles overlap');
  return { width, height, tiles };
}

function overlapping(tiles) {
  // Sweep by x: sorted by left edge, a tile can only overlap those that start before it ends.
  const sorted = tiles.slice().sort((a, b) => a.x - b.x);
  for (let i = 0; i < sorted.length; i++) {
    const a = sorted[i];
    for (let j = i + 1; j < sorted.length && sorted[j].x < a.x + a.width; j++) {
      const c = sorted[j];
      if (c.y < a.y + a.height && a.y < c.y + c.height) return true;
    }
  }
  return false;
}

/** Builds a screen frame payload from `{width, height, tiles: [{x, y, width, height, format, data}]}` (tests). */
export function encodeScreenFrame({ width, height, tiles }) {
  const size = SCREEN_HEADER + tiles.reduce((n, t) => n + TILE_HEADER + t.data.length, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out[0] = 1;
  view.setUint16(1, width);
  view.setUint16(3, height);
  view.setUint16(5, tiles.length);
  let at = SCREEN_HEADER;
  for (const t of tiles) {
    view.setUint16(at, t.x);
    view.setUint16(at + 2, t.y);
    view.setUint16(at + 4, t.width);
    view.setUint16(at + 6, t.height);
    out[at + 8] = t.format;
    view.setUint32(at + 9, t.data.length);
    out.set(t.data, at + TILE_HEADER);
    at += TILE_HEADER + t.data.length;
  }
  return out;
}

/**
 * Maps a point in CSS pixels (clientX/clientY) over an element whose bounding rectangle is
 * `rect` (`{left, top, width, height}`) to a whole pixel of a `screenWidth` × `screenHeight`
 * screen, clamped to the screen.
 */
export function scaleToScreen(clientX, clientY, rect, screenWidth, screenHeight) {
  const fx = rect.width > 0 ? (clientX - rect.left) / rect.width : 0;
  const fy = rect.height > 0 ? (clientY - rect.top) / rect.height : 0;
  const clamp = (v, max) => Math.min(Math.max(v, 0), max - 1);
  return {
    x: clamp(Math.floor(fx * screenWidth), screenWidth),
    y: clamp(Math.floor(fy * screenHeight), screenHeight),
  };
}

/**
 * The inverse of scaleToScreen: where screen pixel (x, y) of a `screenWidth` × `screenHeight`
 * screen is shown, in CSS pixels from the top left of a `boxWidth` × `boxHeight` picture; null
 * for a point outside the screen or an empty picture. Used to draw the sharer's pointer.
 */
export function screenToBox(x, y, screenWidth, screenHeight, boxWidth, boxHeight) {
  if (!(screenWidth > 0 && screenHeight > 0 && boxWidth > 0 && boxHeight > 0)) return null;
  if (!Number.isInteger(x) || !Number.isInteger(y) || x < 0 || y < 0 || x >= screenWidth || y >= screenHeight) {
    return null;
  }
  return { x: (x * boxWidth) / screenWidth, y: (y * boxHeight) / screenHeight };
}

/** DOM `PointerEvent.button` (0 main, 1 auxiliary, 2 secondary) to the wire's 1 left, 2 middle, 3 right; null for others. */
export function pointerButton(domButton) {
  return { 0: 1, 1: 2, 2: 3 }[domButton] ?? null;
}

/**
 * Turns wheel deltas into whole steps, keeping the remainder for the next event (trackpads
 * send many small deltas). deltaMode 0 is pixels (100 per step), 1 lines (3 per step), 2 pages.
 */
export class WheelAccumulator {
  constructor() {
    this.x = 0;
    this.y = 0;
  }

  add(deltaX, deltaY, deltaMode = 0) {
    const per = deltaMode === 1 ? 3 : deltaMode === 2 ? 1 : 100;
    this.x += deltaX / per;
    this.y += deltaY / per;
    const dx = Math.trunc(this.x);
    const dy = Math.trunc(this.y);
    this.x -= dx;
    this.y -= dy;
    return { dx, dy };
  }
}

/** Input event JSON texts (channel 2), as in docs/protocol.md. */
export const input = Object.freeze({
  pointerMove: (x, y) => JSON.stringify({ type: 'pointerMove', x, y }),
  pointerButton: (x, y, button, down) => JSON.stringify({ type: 'pointerButton', x, y, button, down }),
  wheel: (x, y, dx, dy) => JSON.stringify({ type: 'wheel', x, y, dx, dy }),
  key: (key, down) => JSON.stringify({ type: 'key', key, down }),
});

/** Shows a code in two groups of four, as people read it out: `7KQ4-MZ2P`. */
export function formatCode(code) {
  const c = String(code).replace(/[\s-]/g, '').toUpperCase();
  return c.length === 8 ? `${c.slice(0, 4)}-${c.slice(4)}` : c;
}

const SIGNAL_CLOSE = {
  1000: 'The connection was closed.',
  1001: 'The server is going away (restarting or shutting down).',
  1006: 'The connection was lost (network error, or the server is not reachable or its certificate is not trusted).',
  1009: 'A message was too large, so the server closed the connection.',
  1011: 'The server had an internal error.',
  4401: 'The token was refused: it is missing, expired or not valid. Sign in again.',
  4408: 'The connection was idle for too long and the server closed it.',
  4429: 'Too many bad or too fast requests: the server closed the connection.',
};

const RELAY_CLOSE = {
  1000: 'The screen connection was closed.',
  1006: 'The screen connection was lost (network error, or the relay is not reachable).',
  4000: 'The session was ended.',
  4001: 'The relay refused the ticket (invalid or expired).',
  4002: 'The relay ticket was already used.',
  4003: 'The other side did not join the screen connection in time.',
  4004: 'The other side left the screen connection.',
  4005: 'A screen frame was too large.',
  4006: 'Protocol error on the screen connection.',
  4007: 'This page did not keep up with the screen connection.',
  4008: 'The screen connection was idle for too long.',
  4009: 'The session used more bandwidth than allowed.',
  4010: 'The relay is full; try again later.',
  4011: 'The relay is shutting down.',
};

/** A close code of the signalling (`signal`) or relay (`relay`) WebSocket in plain words. */
export function closeText(kind, code, reason = '') {
  const table = kind === 'relay' ? RELAY_CLOSE : SIGNAL_CLOSE;
  const text = table[code] ?? `The connection closed (code ${code}${reason ? `: ${reason}` : ''}).`;
  return `${text} [${code}]`;
}

const ENDED = {
  ended: (by) => `${by === 'helper' ? 'You' : 'The user'} ended the session.`,
  disconnected: (by) => (by === 'helper' ? 'Your connection dropped, so the session ended.' : "The user's app disconnected, so the session ended."),
  declined: () => 'The user declined the session.',
  consentTimedOut: () => 'The user did not answer in time.',
  codeExpired: () => 'Nobody used the code in time; it has expired.',
  launchTimedOut: () => 'The device did not answer in time.',
  launchDeclined: () => 'The device declined the session.',
  joinTimedOut: () => 'No mode was granted in time after joining.',
  relayUnavailable: () => 'No relay was available for the screen.',
  remoteHelpDisabled: () => 'An administrator turned Remote Help off.',
  shuttingDown: () => 'The server was restarting, so the session ended; start a new one.',
};

/** `sessionEnded {reason, by}` in plain words. */
export function endedText(reason, by) {
  const f = ENDED[reason];
  return f ? f(by) : `The session ended (${reason}${by ? `, by ${by}` : ''}).`;
}

const WARNINGS = {
  deviceNotCompliant: 'The device is not compliant with the organisation’s policies.',
  deviceUnenrolled: 'The device is not enrolled in device management.',
};

/** A policy warning in plain words. */
export function warningText(w) {
  return WARNINGS[w] ?? w;
}

const ERRORS = {
  remoteHelpDisabled: 'Remote Help is turned off for your organisation.',
  crossTenant: 'You and the user (or device) are not in the same organisation.',
  unenrolledDeviceNotAllowed: 'Sessions to unenrolled devices are not allowed.',
  unattendedRequiresEnrolledDevice: 'Unattended sessions need an enrolled device.',
  noRoleAssignment: 'You have no Remote Help role assignment.',
  notInScope: 'Your role assignments do not cover this user or device.',
  permissionMissing: 'Your role does not allow this mode.',
  chatBlocked: 'Chat is blocked for your organisation.',
  notFound: 'No such session (it may have ended).',
  notAllowed: 'That is not possible right now.',
  deviceOffline: 'The device is not connected.',
  deviceBusy: 'The device is already in a session.',
  rateLimited: 'Too many requests; wait a moment.',
  unavailable: 'The policy could not be checked in time; try again.',
  tooLarge: 'The message is too long.',
};

/** A signalling `error` in plain words (the server's message is added for detail). */
export function errorText(code, message = '') {
  const base = ERRORS[code];
  if (!base) return message ? `${message} (${code})` : `Error: ${code}`;
  return message ? `${base} (${code}: ${message})` : `${base} (${code})`;
}
