// Pure functions of the browser sharer (/share/): the tile diff over captured pixels, the
// encoding of a frame within the relay's size limit, the adaptive frame rate, and the
// signalling messages and decisions of the sharer's side. No DOM and no clock here (time is
// passed in), so node imports this file for unit tests (tests/e2e/share-unit.test.mjs). The
// relay frame and screen frame codecs themselves are the helper page's (/helper/proto.mjs).
// Formats: docs/protocol.md; what the page does with them: docs/clients.md ("Browser sharer").

/** The tile grid's cell size in pixels, as the Linux agent uses (edge tiles are smaller). */
export const TILE_SIZE = 64;

/** The largest side of the picture sent: a larger capture is scaled down to fit (aspect kept). */
export const MAX_SIDE = 1920;

/** The relay's default payload limit (`relay.max_frame_bytes`, 4 MiB). */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;

/** JPEG qualities tried in turn until a frame fits the payload limit (as the agent does). */
export const QUALITIES = Object.freeze([0.8, 0.6, 0.4, 0.2, 0.1]);

/** Screen-frame header and per-tile header sizes (docs/protocol.md). */
const SCREEN_HEADER = 7;
const TILE_HEADER = 13;

/**
 * The size to send a `width` × `height` capture at: scaled down (never up) so that neither side
 * exceeds `maxSide`, each side at least 1 pixel and whole.
 */
export function fitWithin(width, height, maxSide = MAX_SIDE) {
  if (!(width > 0) || !(height > 0)) return { width: 0, height: 0 };
  const scale = Math.min(1, maxSide / Math.max(width, height));
  return {
    width: Math.max(1, Math.round(width * scale)),
    height: Math.max(1, Math.round(height * scale)),
  };
}

/** The tiles covering a `width` × `height` screen, row by row: `[{x, y, width, height}]`. */
export function tileGrid(width, height, size = TILE_SIZE) {
  const tiles = [];
  for (let y = 0; y < height; y += size) {
    for (let x = 0; x < width; x += size) {
      tiles.push({ x, y, width: Math.min(size, width - x), height: Math.min(size, height - y) });
    }
  }
  return tiles;
}

function aligned(data) {
  return data.byteOffset % 4 === 0 && data.byteLength % 4 === 0;
}

/**
 * Both pictures as one 32-bit word per pixel (4× fewer comparisons than bytes): views of the same
 * bytes when both are 4-byte aligned, else both packed the same way (a word must mean the same
 * pixel bytes in both).
 */
function pixels32(a, b) {
  if (aligned(a) && aligned(b)) {
    return [a, b].map((d) => new Uint32Array(d.buffer, d.byteOffset, d.byteLength / 4));
  }
  return [a, b].map((d) => Uint32Array.from({ length: d.byteLength / 4 }, (_, i) =>
    (d[4 * i] << 24 | d[4 * i + 1] << 16 | d[4 * i + 2] << 8 | d[4 * i + 3]) >>> 0));
}

/**
 * The tiles of the grid whose pixels differ between `previous` and `current`, both RGBA bytes
 * (`ImageData.data`) of a `width` × `height` picture. With no previous picture, or one of
 * another size (`previous.length` differs), every tile has changed.
 */
export function changedTiles(previous, current, width, height, size = TILE_SIZE) {
  const grid = tileGrid(width, height, size);
  if (current.length !== width * height * 4) {
    throw new Error(`expected ${width * height * 4} bytes of RGBA, got ${current.length}`);
  }
  if (!previous || previous.length !== current.length) return grid;
  const [a, b] = pixels32(previous, current);
  return grid.filter((t) => {
    for (let row = t.y; row < t.y + t.height; row++) {
      const start = row * width + t.x;
      for (let i = start; i < start + t.width; i++) {
        if (a[i] !== b[i]) return true;
      }
    }
    return false;
  });
}

/**
 * Merges tiles of the grid (as `tileGrid` and `changedTiles` return them, row by row) into fewer,
 * larger rectangles covering exactly the same pixels: first each run of side-by-side tiles in a
 * row, then runs of the same span in consecutive rows. Every tile of the screen becomes one
 * rectangle of the whole screen; one changed quadrant becomes the quadrant. Each rectangle is then
 * one JPEG, so the browser encodes (and the helper decodes) a few images instead of hundreds.
 */
export function mergeRects(tiles) {
  const runs = [];
  for (const t of tiles) {
    const last = runs[runs.length - 1];
    if (last && last.y === t.y && last.height === t.height && last.x + last.width === t.x) {
      last.width += t.width;
    } else {
      runs.push({ x: t.x, y: t.y, width: t.width, height: t.height });
    }
  }
  // Stack runs of one span: a run continues the open rectangle whose bottom edge it touches.
  const open = new Map(); // "x,width" -> the rectangle whose bottom edge is the latest row
  const out = [];
  for (const r of runs) {
    const key = `${r.x},${r.width}`;
    const above = open.get(key);
    if (above && above.y + above.height === r.y) {
      above.height += r.height;
    } else {
      const rect = { ...r };
      open.set(key, rect);
      out.push(rect);
    }
  }
  return out;
}

/** The bytes a screen frame of these encoded tiles takes (header included). */
export function screenFrameSize(tiles) {
  return tiles.reduce((n, t) => n + TILE_HEADER + t.data.length, SCREEN_HEADER);
}

/** Thrown when a frame exceeds the payload limit even at the lowest quality. */
export class FrameTooLargeError extends Error {
  constructor(bytes, limit) {
    super(`a screen frame of ${bytes} bytes does not fit the relay's limit of ${limit} bytes even at the lowest quality`);
    this.name = 'FrameTooLargeError';
    this.bytes = bytes;
    this.limit = limit;
  }
}

/**
 * Encodes the `rects` (tiles of the grid) with `encodeTile(rect, quality)` (which resolves to a
 * JPEG's bytes), at each of `qualities` in turn until the frame's payload fits `limit` bytes.
 * Resolves to `{tiles: [{x, y, width, height, format: 1, data}], quality, bytes}`; rejects with
 * `FrameTooLargeError` when even the last quality is too large.
 */
export async function encodeTiles(rects, encodeTile, { limit = MAX_FRAME_BYTES, qualities = QUALITIES } = {}) {
  let bytes = 0;
  for (const quality of qualities) {
    const data = await Promise.all(rects.map((r) => encodeTile(r, quality)));
    const tiles = rects.map((r, i) => ({ x: r.x, y: r.y, width: r.width, height: r.height, format: 1, data: data[i] }));
    bytes = screenFrameSize(tiles);
    if (bytes <= limit) return { tiles, quality, bytes };
  }
  throw new FrameTooLargeError(bytes, limit);
}

/**
 * The adaptive frame rate, with the rules of the Linux agent (`assist_screen::FrameRate`): it
 * starts at 10 frames per second; each `keyframeRequest` with reason `congestion` halves it
 * (down to 1); every 2 s without congestion raises it by one (up to 15). Time is milliseconds
 * from any fixed origin, passed in.
 */
export class FrameRate {
  static START_FPS = 10;
  static MAX_FPS = 15;
  static MIN_FPS = 1;
  static RAISE_AFTER_MS = 2000;

  constructor(nowMs) {
    this.rate = FrameRate.START_FPS;
    this.calmSince = nowMs;
    this.lastCapture = null;
  }

  /** The current rate, after the raises due by `nowMs`. */
  fps(nowMs) {
    this.catchUp(nowMs);
    return this.rate;
  }

  /** The relay sent `keyframeRequest` with `reason`: only `congestion` slows down. */
  keyframeRequested(reason, nowMs) {
    if (reason !== 'congestion') return;
    this.catchUp(nowMs);
    this.rate = Math.max(FrameRate.MIN_FPS, Math.floor(this.rate / 2));
    this.calmSince = nowMs;
  }

  /** A capture started at `nowMs`. */
  captureStarted(nowMs) {
    this.catchUp(nowMs);
    this.lastCapture = nowMs;
  }

  /** When the next capture is due: one interval after the last one started, or now if none has. */
  nextDeadline(nowMs) {
    this.catchUp(nowMs);
    return this.lastCapture === null ? nowMs : this.lastCapture + this.intervalMs();
  }

  /** Milliseconds between two captures at the current rate. */
  intervalMs() {
    return Math.floor(1000 / Math.max(1, this.rate));
  }

  catchUp(nowMs) {
    if (this.rate >= FrameRate.MAX_FPS) {
      // Calm time at the top does not bank raises for after the next congestion.
      this.calmSince = Math.max(this.calmSince, nowMs);
      return;
    }
    const steps = Math.floor(Math.max(0, nowMs - this.calmSince) / FrameRate.RAISE_AFTER_MS);
    if (steps === 0) return;
    const raise = Math.min(steps, FrameRate.MAX_FPS - this.rate);
    this.rate += raise;
    this.calmSince += raise * FrameRate.RAISE_AFTER_MS;
  }
}

/**
 * Whether the next frame must be a keyframe: the first one, after a `keyframeRequest`, or when the
 * picture's size changed. `state` is `{sentAny, requested, width, height}` of the sharer.
 */
export function needsKeyframe(state, width, height) {
  return !state.sentAny || state.requested || state.width !== width || state.height !== height;
}

const CODE_SYMBOLS = /^[23456789ABCDEFGHJKLMNPQRSTUVWXYZ]{8}$/;

/**
 * A security code as typed (spaces and `-` ignored, any case) in its wire form (`7KQ4MZ2P`),
 * or null when it is not 8 symbols of the code alphabet (no 0, 1, I, O).
 */
export function normaliseCode(text) {
  const c = String(text).replace(/[\s-]/g, '').toUpperCase();
  return CODE_SYMBOLS.test(c) ? c : null;
}

/** Why this page cannot give control, in plain words (shown to the sharer, sent to the helper). */
export const CONTROL_NEEDS_AGENT =
  'This person is sharing from a web browser, which can only show the screen (view only). ' +
  'A web page cannot move the pointer or type on the computer: for control, they need the Assist app (agent) installed.';

/**
 * How the browser sharer answers a mode request: `viewOnly` is asked of the person (`ask`);
 * anything higher is declined at once (`decline`), because a browser page can neither apply
 * input nor elevate, so the session stays view only. An unknown mode is declined too.
 */
export function consentAction(mode) {
  return mode === 'viewOnly' ? 'ask' : 'decline';
}

/** Signalling requests of the sharer (without `id`, which the connection adds). */
export const request = Object.freeze({
  authenticate: (token) => ({ type: 'authenticate', token }),
  ping: () => ({ type: 'ping' }),
  redeemCode: (code) => ({ type: 'redeemCode', code }),
  answerLaunch: (sessionId, accept) => ({ type: 'answerLaunch', sessionId, accept }),
  consent: (sessionId, allow) => ({ type: 'consent', sessionId, allow }),
  chat: (sessionId, text) => ({ type: 'chat', sessionId, text }),
  endSession: (sessionId) => ({ type: 'endSession', sessionId }),
});

/**
 * The helper's profile lines for the trust screen: `{name, details: [string], domain, verified}`.
 * An absent `verifiedDomain` means the broker vouches for no domain of theirs.
 */
export function describeProfile(profile) {
  const p = profile && typeof profile === 'object' ? profile : {};
  const details = [p.jobTitle, p.companyName].filter((s) => typeof s === 'string' && s);
  return {
    name: typeof p.displayName === 'string' && p.displayName ? p.displayName : '(no name)',
    details,
    domain: typeof p.verifiedDomain === 'string' ? p.verifiedDomain : '',
    verified: typeof p.verifiedDomain === 'string' && p.verifiedDomain !== '',
  };
}

const ENDED = {
  ended: (by) => (by === 'sharer' ? 'You ended the session.' : 'Your helper ended the session.'),
  disconnected: (by) => (by === 'sharer' ? 'Your connection dropped, so the session ended.' : "Your helper's connection dropped, so the session ended."),
  declined: () => 'You declined, so the session ended.',
  consentTimedOut: () => 'The request was not answered in time, so the session ended.',
  joinTimedOut: () => 'Your helper did not ask to see your screen in time, so the session ended.',
  launchTimedOut: () => 'The request was not answered in time.',
  launchDeclined: () => 'You declined the request.',
  relayUnavailable: () => 'No relay was available to carry the screen, so the session ended.',
  remoteHelpDisabled: () => 'An administrator turned Remote Help off.',
  shuttingDown: () => 'The server was restarting, so the session ended.',
};

/** `sessionEnded {reason, by}` in plain words, from the sharer's side. */
export function endedTextForSharer(reason, by) {
  const f = ENDED[reason];
  return f ? f(by) : `The session ended (${reason}${by ? `, by ${by}` : ''}).`;
}
