// Unit tests of the helper page's pure functions (crates/assistd/web/proto.mjs).
// Run: node --test tests/e2e/unit.test.mjs   (no dependencies needed)
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  CHANNEL, FLAG_FROM_RELAY, WheelAccumulator, canControl, closeText, encodeRelayFrame,
  encodeScreenFrame, endedText, errorText, formatCode, input, modeRank, parseControl,
  parseRelayFrame, parseScreenFrame, pointerButton, scaleToScreen,
} from '../../crates/assistd/web/proto.mjs';

const hex = (s) => Uint8Array.from(s.split(/\s+/).filter(Boolean).map((h) => parseInt(h, 16)));

test('relay frame: the doc example chat frame "hello"', () => {
  const f = parseRelayFrame(hex('03 00 00 00 00 05 68 65 6c 6c 6f').buffer);
  assert.equal(f.channel, CHANNEL.chat);
  assert.equal(f.flags, 0);
  assert.equal(new TextDecoder().decode(f.payload), 'hello');
  assert.deepEqual(encodeRelayFrame(CHANNEL.chat, 'hello'), hex('03 00 00 00 00 05 68 65 6c 6c 6f'));
});

test('relay frame: the doc example paired control frame', () => {
  const json = '{"type":"paired","mode":"fullControl","chat":true}';
  const bytes = encodeRelayFrame(CHANNEL.control, json, FLAG_FROM_RELAY);
  assert.deepEqual(bytes.subarray(0, 6), hex('00 80 00 00 00 32'));
  const f = parseRelayFrame(bytes);
  assert.equal(f.fromRelay, true);
  assert.equal(f.keyframe, false);
  assert.deepEqual(parseControl(f.payload), { type: 'paired', mode: 'fullControl', chat: true });
});

test('relay frame: short or mismatched lengths are refused', () => {
  assert.throws(() => parseRelayFrame(new Uint8Array(5)), /shorter than its header/);
  assert.throws(() => parseRelayFrame(hex('01 01 00 00 00 05 00')), /says 5 payload bytes but has 1/);
  const keyframe = parseRelayFrame(hex('01 01 00 00 00 00'));
  assert.equal(keyframe.keyframe, true);
  assert.equal(keyframe.payload.length, 0);
});

test('relay frame: a view into a larger buffer parses at its offset', () => {
  const big = new Uint8Array(20);
  big.set(hex('03 00 00 00 00 02 68 69'), 7);
  const f = parseRelayFrame(big.subarray(7, 15));
  assert.equal(new TextDecoder().decode(f.payload), 'hi');
});

test('control: non-objects are null', () => {
  const enc = (s) => new TextEncoder().encode(s);
  assert.equal(parseControl(enc('not json')), null);
  assert.equal(parseControl(enc('[1]')), null);
  assert.equal(parseControl(enc('null')), null);
  assert.deepEqual(parseControl(enc('{"type":"ended","reason":"x"}')), { type: 'ended', reason: 'x' });
});

const tile = (x, y, width, height, format = 2, data = [1, 2, 3]) => ({ x, y, width, height, format, data: Uint8Array.from(data) });

test('screen frame: the doc example header for 1024x768 in 192 tiles', () => {
  const tiles = [];
  for (let ty = 0; ty < 12; ty++) for (let tx = 0; tx < 16; tx++) tiles.push(tile(tx * 64, ty * 64, 64, 64, 1, [tx, ty]));
  const bytes = encodeScreenFrame({ width: 1024, height: 768, tiles });
  assert.deepEqual(bytes.subarray(0, 7), hex('01 04 00 03 00 00 c0'));
  const f = parseScreenFrame(bytes);
  assert.equal(f.width, 1024);
  assert.equal(f.height, 768);
  assert.equal(f.tiles.length, 192);
  assert.equal(f.tiles[17].x, 64);
  assert.equal(f.tiles[17].y, 64);
  assert.equal(f.tiles[17].type, 'image/jpeg');
  assert.deepEqual([...f.tiles[17].data], [1, 1]);
});

test('screen frame: tile fields and formats', () => {
  const bytes = encodeScreenFrame({ width: 640, height: 480, tiles: [tile(320, 240, 320, 240, 2, [9, 8, 7, 6])] });
  const f = parseScreenFrame(bytes);
  assert.deepEqual(
    { ...f.tiles[0], data: [...f.tiles[0].data] },
    { x: 320, y: 240, width: 320, height: 240, format: 2, type: 'image/png', data: [9, 8, 7, 6] },
  );
  // No tiles is a valid (empty) update.
  assert.equal(parseScreenFrame(encodeScreenFrame({ width: 10, height: 10, tiles: [] })).tiles.length, 0);
});

test('screen frame: broken frames are refused', () => {
  const ok = { width: 100, height: 100, tiles: [tile(0, 0, 50, 50)] };
  const good = encodeScreenFrame(ok);
  const other = good.slice();
  other[0] = 2;
  assert.throws(() => parseScreenFrame(other), /version 2/);
  assert.throws(() => parseScreenFrame(good.subarray(0, 5)), /shorter than its header/);
  assert.throws(() => parseScreenFrame(good.subarray(0, 10)), /header is truncated/);
  assert.throws(() => parseScreenFrame(good.subarray(0, good.length - 1)), /data is truncated/);
  const trailing = new Uint8Array(good.length + 1);
  trailing.set(good);
  assert.throws(() => parseScreenFrame(trailing), /after the last tile/);
  assert.throws(() => parseScreenFrame(encodeScreenFrame({ ...ok, tiles: [tile(0, 0, 50, 50, 3)] })), /unknown format 3/);
  assert.throws(() => parseScreenFrame(encodeScreenFrame({ ...ok, tiles: [tile(60, 0, 50, 50)] })), /outside the screen/);
  assert.throws(() => parseScreenFrame(encodeScreenFrame({ ...ok, tiles: [tile(0, 99, 1, 2)] })), /outside the screen/);
  assert.throws(() => parseScreenFrame(encodeScreenFrame({ ...ok, tiles: [tile(0, 0, 0, 5)] })), /empty/);
  assert.throws(() => parseScreenFrame(encodeScreenFrame({ width: 0, height: 5, tiles: [] })), /zero size/);
  assert.throws(
    () => parseScreenFrame(encodeScreenFrame({ ...ok, tiles: [tile(0, 0, 50, 50), tile(49, 49, 10, 10)] })),
    /overlap/,
  );
  // Touching edges are not an overlap.
  parseScreenFrame(encodeScreenFrame({ ...ok, tiles: [tile(0, 0, 50, 50), tile(50, 0, 50, 50), tile(0, 50, 100, 50)] }));
});

test('coordinates: CSS pixels scale to screen pixels and clamp', () => {
  const rect = { left: 10, top: 20, width: 320, height: 240 };
  assert.deepEqual(scaleToScreen(10, 20, rect, 640, 480), { x: 0, y: 0 });
  assert.deepEqual(scaleToScreen(170, 140, rect, 640, 480), { x: 320, y: 240 });
  assert.deepEqual(scaleToScreen(330, 260, rect, 640, 480), { x: 639, y: 479 });
  assert.deepEqual(scaleToScreen(0, 0, rect, 640, 480), { x: 0, y: 0 });
  assert.deepEqual(scaleToScreen(1000, 1000, rect, 640, 480), { x: 639, y: 479 });
  // 1:1 and fractional positions.
  assert.deepEqual(scaleToScreen(99.7, 50.2, { left: 0, top: 0, width: 640, height: 480 }, 640, 480), { x: 99, y: 50 });
  assert.deepEqual(scaleToScreen(5, 5, { left: 0, top: 0, width: 0, height: 0 }, 640, 480), { x: 0, y: 0 });
});

test('modes: rank and control', () => {
  assert.deepEqual(['viewOnly', 'fullControl', 'elevation', 'unattended'].map(modeRank), [0, 1, 2, 3]);
  assert.equal(modeRank(null), -1);
  assert.equal(modeRank('bogus'), -1);
  assert.equal(canControl('viewOnly'), false);
  assert.equal(canControl(null), false);
  assert.equal(canControl('fullControl'), true);
  assert.equal(canControl('elevation'), true);
  assert.equal(canControl('unattended'), true);
});

test('input: buttons, wheel steps and JSON shapes', () => {
  assert.deepEqual([0, 1, 2, 3, 4].map(pointerButton), [1, 2, 3, null, null]);
  const w = new WheelAccumulator();
  assert.deepEqual(w.add(0, 100, 0), { dx: 0, dy: 1 });
  assert.deepEqual(w.add(0, 40, 0), { dx: 0, dy: 0 });
  assert.deepEqual(w.add(0, 70, 0), { dx: 0, dy: 1 });
  assert.deepEqual(w.add(0, -300, 0), { dx: 0, dy: -2 });
  assert.deepEqual(new WheelAccumulator().add(6, 3, 1), { dx: 2, dy: 1 });
  assert.deepEqual(JSON.parse(input.pointerMove(512, 384)), { type: 'pointerMove', x: 512, y: 384 });
  assert.deepEqual(JSON.parse(input.pointerButton(512, 384, 1, true)), { type: 'pointerButton', x: 512, y: 384, button: 1, down: true });
  assert.deepEqual(JSON.parse(input.wheel(512, 384, 0, 2)), { type: 'wheel', x: 512, y: 384, dx: 0, dy: 2 });
  assert.deepEqual(JSON.parse(input.key('Enter', true)), { type: 'key', key: 'Enter', down: true });
});

test('texts: codes, close codes, endings and errors in plain words', () => {
  assert.equal(formatCode('7KQ4MZ2P'), '7KQ4-MZ2P');
  assert.equal(formatCode('7kq4 mz2p'), '7KQ4-MZ2P');
  assert.match(closeText('signal', 4401), /token was refused.*\[4401\]/);
  assert.match(closeText('relay', 4004), /other side left.*\[4004\]/);
  assert.match(closeText('relay', 4999, 'odd'), /code 4999: odd/);
  assert.equal(endedText('ended', 'sharer'), 'The user ended the session.');
  assert.equal(endedText('ended', 'helper'), 'You ended the session.');
  assert.match(endedText('somethingNew', 'broker'), /somethingNew/);
  assert.match(errorText('notInScope', 'denied by policy: notInScope'), /do not cover/);
  assert.match(errorText('brandNew', 'msg'), /msg \(brandNew\)/);
});
