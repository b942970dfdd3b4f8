// Unit tests of the helper page's screen-view arithmetic (crates/assistd/web/proto.mjs):
// where the sharer's pointer is drawn, the inverse of the input scaling.
// Run: node --test tests/e2e/view-unit.test.mjs   (no dependencies needed)
import test from 'node:test';
import assert from 'node:assert/strict';
import { scaleToScreen, screenToBox } from '../../crates/assistd/web/proto.mjs';

test('screenToBox scales screen pixels to the picture shown', () => {
  assert.deepEqual(screenToBox(0, 0, 640, 480, 320, 240), { x: 0, y: 0 });
  assert.deepEqual(screenToBox(480, 120, 640, 480, 320, 240), { x: 240, y: 60 });
  assert.deepEqual(screenToBox(480, 120, 640, 480, 640, 480), { x: 480, y: 120 }); // 1:1
  assert.deepEqual(screenToBox(639, 479, 640, 480, 1280, 960), { x: 1278, y: 958 });
});

test('screenToBox refuses points off the screen and empty pictures', () => {
  for (const [x, y] of [[-1, 0], [0, -1], [640, 0], [0, 480], [1.5, 2], [NaN, 0]]) {
    assert.equal(screenToBox(x, y, 640, 480, 320, 240), null, `${x},${y}`);
  }
  assert.equal(screenToBox(1, 1, 0, 0, 320, 240), null);
  assert.equal(screenToBox(1, 1, 640, 480, 0, 0), null);
});

test('a pointer drawn with screenToBox maps back to the same screen pixel', () => {
  const rect = { left: 17, top: 40, width: 533, height: 400 };
  for (const [x, y] of [[0, 0], [1, 1], [320, 240], [639, 479], [101, 377]]) {
    const at = screenToBox(x, y, 640, 480, rect.width, rect.height);
    // The middle of the shown pixel, as a click there would be.
    const back = scaleToScreen(rect.left + at.x + rect.width / 1280, rect.top + at.y + rect.height / 960,
      rect, 640, 480);
    assert.deepEqual(back, { x, y });
  }
});
