// Unit tests of the browser sharer's pure functions (crates/assistd/web/share/capture.mjs) and
// of the screen frames it builds with the helper page's codec (proto.mjs): what the sharer
// sends must parse as the helper parses it. Run: node --test tests/e2e/share-unit.test.mjs
import test from 'node:test';
import assert from 'node:assert/strict';
import { encodeScreenFrame, parseScreenFrame } from '../../crates/assistd/web/proto.mjs';
import {
  CONTROL_NEEDS_AGENT, FrameRate, FrameTooLargeError, MAX_SIDE, TILE_SIZE, changedTiles, consentAction,
  describeProfile, encodeTiles, endedTextForSharer, fitWithin, mergeRects, needsKeyframe, normaliseCode, request,
  screenFrameSize, tileGrid,
} from '../../crates/assistd/web/share/capture.mjs';

/** RGBA bytes of a `w` × `h` picture of one colour. */
function solid(w, h, [r, g, b]) {
  const d = new Uint8ClampedArray(w * h * 4);
  for (let i = 0; i < w * h; i++) d.set([r, g, b, 255], i * 4);
  return d;
}

function setPixel(d, w, x, y, [r, g, b]) {
  d.set([r, g, b, 255], (y * w + x) * 4);
}

/** A small deterministic pseudo-random generator, so failures can be replayed. */
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test('tileGrid covers the screen exactly once, edge tiles smaller', () => {
  for (const [w, h] of [[1, 1], [64, 64], [65, 64], [640, 480], [1280, 720], [1919, 1079]]) {
    const tiles = tileGrid(w, h);
    assert.equal(tiles.length, Math.ceil(w / TILE_SIZE) * Math.ceil(h / TILE_SIZE), `${w}x${h}`);
    const area = tiles.reduce((n, t) => n + t.width * t.height, 0);
    assert.equal(area, w * h);
    for (const t of tiles) {
      assert.ok(t.width >= 1 && t.width <= TILE_SIZE && t.height >= 1 && t.height <= TILE_SIZE);
      assert.ok(t.x + t.width <= w && t.y + t.height <= h);
    }
  }
  // A keyframe of them is a frame the helper accepts (inside the screen, no overlap).
  const tiles = tileGrid(130, 70).map((t) => ({ ...t, format: 1, data: new Uint8Array([1]) }));
  assert.equal(parseScreenFrame(encodeScreenFrame({ width: 130, height: 70, tiles })).tiles.length, 6);
});

test('changedTiles: no previous picture or a new size means every tile', () => {
  const cur = solid(130, 70, [1, 2, 3]);
  assert.equal(changedTiles(null, cur, 130, 70).length, 6);
  assert.equal(changedTiles(solid(10, 10, [1, 2, 3]), cur, 130, 70).length, 6);
  assert.throws(() => changedTiles(null, cur, 131, 70), /RGBA/);
});

test('changedTiles: an unchanged picture sends nothing; one pixel changes one tile', () => {
  const w = 200;
  const h = 150;
  const before = solid(w, h, [10, 20, 30]);
  assert.deepEqual(changedTiles(before, before.slice(), w, h), []);
  const after = before.slice();
  setPixel(after, w, 130, 70, [10, 20, 31]); // only the blue byte differs, by one
  assert.deepEqual(changedTiles(before, after, w, h), [{ x: 128, y: 64, width: 64, height: 64 }]);
  // The last pixel of the screen is in the bottom-right edge tile (8 × 22 pixels).
  const corner = before.slice();
  setPixel(corner, w, w - 1, h - 1, [0, 0, 0]);
  assert.deepEqual(changedTiles(before, corner, w, h), [{ x: 192, y: 128, width: 8, height: 22 }]);
});

test('changedTiles finds exactly the tiles with a changed pixel (random pictures)', () => {
  const rand = rng(42);
  for (let round = 0; round < 50; round++) {
    const w = 1 + Math.floor(rand() * 300);
    const h = 1 + Math.floor(rand() * 200);
    const before = solid(w, h, [0, 0, 0]);
    const after = before.slice();
    const expected = new Set();
    const changes = Math.floor(rand() * 6);
    for (let i = 0; i < changes; i++) {
      const x = Math.floor(rand() * w);
      const y = Math.floor(rand() * h);
      setPixel(after, w, x, y, [1 + Math.floor(rand() * 254), 0, 0]);
      expected.add(`${Math.floor(x / TILE_SIZE) * TILE_SIZE},${Math.floor(y / TILE_SIZE) * TILE_SIZE}`);
    }
    const got = changedTiles(before, after, w, h).map((t) => `${t.x},${t.y}`);
    assert.deepEqual(new Set(got), expected, `round ${round}: ${w}x${h}`);
    assert.equal(got.length, expected.size);
  }
});

test('changedTiles works on views that do not start on a 4-byte boundary', () => {
  const buf = new Uint8ClampedArray(1 + 8 * 8 * 4);
  const view = buf.subarray(1);
  const before = solid(8, 8, [5, 5, 5]);
  view.set(before);
  setPixel(view, 8, 3, 3, [6, 5, 5]);
  assert.deepEqual(changedTiles(before, view, 8, 8), [{ x: 0, y: 0, width: 8, height: 8 }]);
  view.set(before);
  assert.deepEqual(changedTiles(before, view, 8, 8), []);
});

/** The set of pixels ("x,y") that rectangles cover, and whether any pixel is covered twice. */
function coverage(rects) {
  const seen = new Set();
  let twice = false;
  for (const r of rects) {
    for (let y = r.y; y < r.y + r.height; y++) {
      for (let x = r.x; x < r.x + r.width; x++) {
        const k = `${x},${y}`;
        if (seen.has(k)) twice = true;
        seen.add(k);
      }
    }
  }
  return { seen, twice };
}

test('mergeRects: the whole grid is one rectangle, a changed quadrant is the quadrant', () => {
  assert.deepEqual(mergeRects(tileGrid(1280, 800)), [{ x: 0, y: 0, width: 1280, height: 800 }]);
  assert.deepEqual(mergeRects(tileGrid(130, 70)), [{ x: 0, y: 0, width: 130, height: 70 }]);
  const w = 256;
  const h = 256;
  const before = solid(w, h, [0, 0, 0]);
  const after = before.slice();
  for (let y = 0; y < 128; y++) for (let x = 128; x < 256; x++) setPixel(after, w, x, y, [0, 255, 0]);
  assert.deepEqual(mergeRects(changedTiles(before, after, w, h)), [{ x: 128, y: 0, width: 128, height: 128 }]);
  assert.deepEqual(mergeRects([]), []);
});

test('mergeRects covers exactly the changed tiles, without overlap, as a frame the helper accepts', () => {
  const rand = rng(99);
  for (let round = 0; round < 100; round++) {
    const w = 1 + Math.floor(rand() * 400);
    const h = 1 + Math.floor(rand() * 300);
    const tiles = tileGrid(w, h).filter(() => rand() < 0.4);
    const merged = mergeRects(tiles);
    assert.ok(merged.length <= tiles.length);
    const a = coverage(tiles);
    const b = coverage(merged);
    assert.equal(b.twice, false, `round ${round}: overlap`);
    assert.equal(b.seen.size, a.seen.size, `round ${round}: ${w}x${h}`);
    for (const k of a.seen) assert.ok(b.seen.has(k), `round ${round}: ${k} lost`);
    const frame = { width: w, height: h, tiles: merged.map((r) => ({ ...r, format: 1, data: new Uint8Array([0]) })) };
    assert.equal(parseScreenFrame(encodeScreenFrame(frame)).tiles.length, merged.length);
  }
});

test('fitWithin scales large captures down, keeps the aspect, never scales up', () => {
  assert.deepEqual(fitWithin(1280, 720), { width: 1280, height: 720 });
  assert.deepEqual(fitWithin(3840, 2160), { width: 1920, height: 1080 });
  assert.deepEqual(fitWithin(2160, 3840), { width: 1080, height: 1920 });
  assert.deepEqual(fitWithin(5000, 1), { width: MAX_SIDE, height: 1 });
  assert.deepEqual(fitWithin(0, 720), { width: 0, height: 0 });
  assert.deepEqual(fitWithin(NaN, 720), { width: 0, height: 0 });
});

test('encodeTiles lowers the quality until the frame fits, and says when it cannot', async () => {
  const rects = tileGrid(128, 64);
  // A fake encoder whose output shrinks with the quality: 1000 bytes at 0.8, 100 at 0.1.
  const encoder = (r, q) => Promise.resolve(new Uint8Array(Math.round(q * 1250)));
  const all = await encodeTiles(rects, encoder);
  assert.equal(all.quality, 0.8);
  assert.equal(all.bytes, screenFrameSize(all.tiles));
  assert.equal(all.bytes, 7 + 2 * (13 + 1000));
  const payload = encodeScreenFrame({ width: 128, height: 64, tiles: all.tiles });
  assert.equal(payload.length, all.bytes);
  const parsed = parseScreenFrame(payload);
  assert.deepEqual(parsed.tiles.map((t) => [t.x, t.y, t.width, t.height, t.format]), [[0, 0, 64, 64, 1], [64, 0, 64, 64, 1]]);

  const fit = await encodeTiles(rects, encoder, { limit: 7 + 2 * (13 + 500) });
  assert.equal(fit.quality, 0.4);
  await assert.rejects(encodeTiles(rects, encoder, { limit: 100 }), (e) => e instanceof FrameTooLargeError && e.limit === 100);
});

test('FrameRate: starts at 10, halves on congestion, one more every 2 s, within 1..15', () => {
  const r = new FrameRate(0);
  assert.equal(r.fps(0), 10);
  assert.equal(r.nextDeadline(0), 0, 'the first capture is due at once');
  r.captureStarted(0);
  assert.equal(r.nextDeadline(0), 100);
  r.keyframeRequested('dropped', 10);
  assert.equal(r.fps(10), 10, 'dropped only asks for a keyframe');
  r.keyframeRequested('congestion', 20);
  assert.equal(r.fps(20), 5);
  assert.equal(r.intervalMs(), 200);
  for (let i = 0; i < 10; i++) r.keyframeRequested('congestion', 30);
  assert.equal(r.fps(30), 1);
  assert.equal(r.fps(2029), 1);
  assert.equal(r.fps(2030), 2);
  assert.equal(r.fps(2030 + 2000 * 100), 15, 'never above 15');
  // Calm time at the top banks nothing: after congestion it climbs from half again.
  r.keyframeRequested('congestion', 2030 + 2000 * 200);
  assert.equal(r.fps(2030 + 2000 * 200), 7);
  assert.equal(r.fps(2030 + 2000 * 200 + 1999), 7);
});

test('FrameRate stays within bounds under any sequence of events', () => {
  const rand = rng(7);
  for (let round = 0; round < 200; round++) {
    let now = 0;
    const r = new FrameRate(now);
    for (let i = 0; i < 50; i++) {
      now += Math.floor(rand() * 5000);
      const e = rand();
      if (e < 0.3) r.keyframeRequested('congestion', now);
      else if (e < 0.4) r.keyframeRequested('dropped', now);
      else r.captureStarted(now);
      const fps = r.fps(now);
      assert.ok(fps >= FrameRate.MIN_FPS && fps <= FrameRate.MAX_FPS, `fps ${fps}`);
      assert.ok(r.nextDeadline(now) <= now + 1000);
    }
  }
});

test('needsKeyframe: the first frame, on request, and when the size changes', () => {
  const s = { sentAny: false, requested: false, width: 0, height: 0 };
  assert.equal(needsKeyframe(s, 640, 480), true);
  Object.assign(s, { sentAny: true, width: 640, height: 480 });
  assert.equal(needsKeyframe(s, 640, 480), false);
  assert.equal(needsKeyframe(s, 641, 480), true);
  assert.equal(needsKeyframe({ ...s, requested: true }, 640, 480), true);
});

test('normaliseCode accepts what people type and refuses what cannot be a code', () => {
  assert.equal(normaliseCode('7kq4-mz2p'), '7KQ4MZ2P');
  assert.equal(normaliseCode(' 7KQ4 MZ2P '), '7KQ4MZ2P');
  for (const bad of ['', '7KQ4-MZ2', '7KQ4-MZ2PX', '0KQ4MZ2P', '1KQ4MZ2P', 'IKQ4MZ2P', 'OKQ4MZ2P', '7KQ4_MZ2P']) {
    assert.equal(normaliseCode(bad), null, bad);
  }
});

test('consent: view only is asked, every mode with control is declined', () => {
  assert.equal(consentAction('viewOnly'), 'ask');
  for (const m of ['fullControl', 'elevation', 'unattended', 'somethingNew', undefined]) {
    assert.equal(consentAction(m), 'decline', String(m));
  }
  assert.match(CONTROL_NEEDS_AGENT, /view only/);
  assert.match(CONTROL_NEEDS_AGENT, /Assist app/);
});

test('requests are the documented signalling messages', () => {
  const sid = '5f1d3a9c0b7e4d2a8c6b1e0f9a3d7c5b';
  assert.deepEqual(request.redeemCode('7KQ4MZ2P'), { type: 'redeemCode', code: '7KQ4MZ2P' });
  assert.deepEqual(request.consent(sid, false), { type: 'consent', sessionId: sid, allow: false });
  assert.deepEqual(request.answerLaunch(sid, true), { type: 'answerLaunch', sessionId: sid, accept: true });
  assert.deepEqual(request.chat(sid, 'hi'), { type: 'chat', sessionId: sid, text: 'hi' });
  assert.deepEqual(request.endSession(sid), { type: 'endSession', sessionId: sid });
  assert.deepEqual(request.authenticate('t'), { type: 'authenticate', token: 't' });
});

test('the helper profile and end reasons in plain words', () => {
  assert.deepEqual(describeProfile({ displayName: 'Helen Helper', jobTitle: 'Service desk', companyName: 'Contoso', verifiedDomain: 'contoso.com' }),
    { name: 'Helen Helper', details: ['Service desk', 'Contoso'], domain: 'contoso.com', verified: true });
  assert.deepEqual(describeProfile({ displayName: 'Mallory' }), { name: 'Mallory', details: [], domain: '', verified: false });
  assert.equal(describeProfile(null).name, '(no name)');
  assert.equal(describeProfile({ displayName: 5, verifiedDomain: 7 }).verified, false);
  assert.equal(endedTextForSharer('ended', 'sharer'), 'You ended the session.');
  assert.equal(endedTextForSharer('ended', 'helper'), 'Your helper ended the session.');
  assert.match(endedTextForSharer('declined', 'sharer'), /declined/);
  assert.equal(endedTextForSharer('newReason', 'broker'), 'The session ended (newReason, by broker).');
});
