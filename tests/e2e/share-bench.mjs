// What one frame of the browser sharer costs in headless Chromium: reading the pixels, the tile
// diff, and JPEG encoding of a keyframe as merged rectangles (what the page sends) and as 64×64
// tiles (what it would cost without merging), on a desktop-like 1920×1080 picture. A measurement,
// not a test (docs/benchmarks.md, "Browser sharer"). Needs a running assistd (any data dir):
//   ASSIST_URL=https://localhost:8443 node tests/e2e/share-bench.mjs
import { chromium } from 'playwright-core';

const base = process.env.ASSIST_URL || 'https://localhost:8443';
const runs = Number(process.env.RUNS || 5);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--ignore-certificate-errors'],
});
try {
  const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
  await page.goto(`${base}/share/`);
  const result = await page.evaluate(async (n) => {
    const m = await import('/share/capture.mjs');
    const W = 1920;
    const H = 1080;
    const canvas = document.createElement('canvas');
    canvas.width = W;
    canvas.height = H;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    for (let i = 0; i < 200; i++) {
      ctx.fillStyle = `hsl(${(i * 37) % 360},60%,${30 + (i % 50)}%)`;
      ctx.fillRect((i * 97) % W, (i * 53) % H, 200, 120);
    }
    ctx.fillStyle = '#000';
    ctx.font = '14px sans-serif';
    for (let y = 20; y < H; y += 18) ctx.fillText('The quick brown fox jumps over the lazy dog 0123456789 '.repeat(4), 10, y);
    const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const time = async (f) => {
      const ms = [];
      let v;
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        v = await f();
        ms.push(performance.now() - t);
      }
      return { ms: Math.round(median(ms)), v };
    };
    const read = await time(() => ctx.getImageData(0, 0, W, H));
    const img = read.v;
    const changed = new ImageData(img.data.slice(), W, H);
    changed.data[(500 * W + 700) * 4] ^= 1;
    const diff = await time(() => m.changedTiles(img.data, changed.data, W, H).length);
    const same = await time(() => m.changedTiles(img.data, img.data, W, H).length);
    const tile = document.createElement('canvas');
    const tctx = tile.getContext('2d');
    const encodeTile = (r, q) => {
      tile.width = r.width;
      tile.height = r.height;
      tctx.putImageData(img, -r.x, -r.y, r.x, r.y, r.width, r.height);
      return new Promise((resolve) => tile.toBlob((b) => b.arrayBuffer().then((a) => resolve(new Uint8Array(a))), 'image/jpeg', q));
    };
    const grid = m.tileGrid(W, H);
    const merged = m.mergeRects(grid);
    const key = await time(() => m.encodeTiles(merged, encodeTile));
    const keyTiles = await time(() => m.encodeTiles(grid, encodeTile));
    return {
      picture: `${W}x${H}`,
      getImageDataMs: read.ms,
      diffOnePixelChangedMs: diff.ms,
      diffUnchangedMs: same.ms,
      keyframe: { images: merged.length, kib: Math.round(key.v.bytes / 1024), ms: key.ms },
      keyframeAs64pxTiles: { images: grid.length, kib: Math.round(keyTiles.v.bytes / 1024), ms: keyTiles.ms },
    };
  }, runs);
  console.log(JSON.stringify(result, null, 2));
} finally {
  await browser.close();
}
