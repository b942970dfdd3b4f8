// The helper page's mode selector, screen sizes (Fit, 1:1, Full screen) and the sharer's pointer,
// in headless Chromium against a real assistd and the scripted sharer (fake-sharer.mjs).
// Started by tests/e2e/run.sh (same environment as e2e.test.mjs). Screenshot: target/e2e/helper-view.png.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { HEIGHT, WIDTH, startFakeSharer } from './fake-sharer.mjs';

const env = process.env;
const URL_BASE = env.ASSIST_URL;
const OUT = env.E2E_OUT || 'target/e2e';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--ignore-certificate-errors',
];

if (!URL_BASE || !env.SHARER_TOKEN) {
  throw new Error('run this through tests/e2e/run.sh (ASSIST_URL and SHARER_TOKEN are not set)');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, timeoutMs = 15_000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Chooses `mode`, presses Request, acknowledges the unenrolled-device warning, waits for the grant. */
async function requestMode(page, mode) {
  await page.selectOption('#mode', mode);
  await page.click('#request-mode');
  await until(`mode ${mode}`, async () => {
    if (await page.isVisible('#ack-warnings')) await page.click('#ack-warnings');
    return (await page.getAttribute('body', 'data-mode')) === mode;
  }, 20_000, 200);
}

/** Where the pointer arrow's tip is, as a screen pixel of the sharer, from the page's geometry. */
async function pointerAsScreenPixel(page) {
  const canvas = await page.locator('#screen').boundingBox();
  const arrow = await page.locator('#remote-pointer').boundingBox();
  return {
    x: Math.round(((arrow.x - canvas.x) * WIDTH) / canvas.width),
    y: Math.round(((arrow.y - canvas.y) * HEIGHT) / canvas.height),
  };
}

const close = (a, b, d = 3) => Math.abs(a - b) <= d;

/** The size the screen is shown at, in CSS pixels (without the canvas border). */
const shownSize = (page) => page.evaluate(() => {
  const c = document.getElementById('screen');
  return { width: c.clientWidth, height: c.clientHeight };
});

test('helper page: the mode selector keeps its choice, Fit / 1:1 / Full screen, the sharer\'s pointer', async () => {
  const browser = await chromium.launch({ executablePath: env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS });
  // Narrow enough that Fit scales the 640-pixel screen down.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 600, height: 800 } });
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  let sharer = null;
  try {
    // Sign in as Helen on the dev issuer's sign-in page.
    await page.goto(`${URL_BASE}/helper/`);
    await page.waitForURL((u) => u.pathname === '/dev-issuer/authorize', { timeout: 10_000 });
    await page.getByRole('button', { name: 'helen@contoso.com' }).click();
    await page.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
    await page.click('#get-code');
    await page.waitForSelector('body[data-phase="code"]');
    const code = (await page.textContent('#code')).trim().replace('-', '');
    sharer = await startFakeSharer({ server: URL_BASE, token: env.SHARER_TOKEN, code });
    await page.waitForSelector('body[data-phase="joined"]', { timeout: 20_000 });

    // After a grant the selector stays on the granted mode, and Request cannot ask for it again.
    await requestMode(page, 'viewOnly');
    await page.waitForSelector('#screen[data-frames]:not([data-frames="0"])', { timeout: 20_000 });
    assert.equal(await page.inputValue('#mode'), 'viewOnly', 'the selector did not move to the next mode');
    assert.equal(await page.isEnabled('#request-mode'), false, 'Request is off for the mode in force');
    await page.selectOption('#mode', 'fullControl');
    assert.equal(await page.isEnabled('#request-mode'), true, 'another mode may be asked for');
    await requestMode(page, 'fullControl');
    assert.equal(await page.inputValue('#mode'), 'fullControl');
    assert.equal(await page.isEnabled('#request-mode'), false);

    // The sharer's pointer is drawn where the agent says, and follows it.
    assert.equal(await page.isVisible('#remote-pointer'), false, 'no pointer before the sharer sends one');
    await until('the relay leg', () => sharer.relay && sharer.relay.readyState === WebSocket.OPEN);
    sharer.sendPointer(480, 120);
    await page.waitForSelector('#remote-pointer[data-x="480"]', { state: 'visible', timeout: 10_000 });
    let p = await pointerAsScreenPixel(page);
    assert.ok(close(p.x, 480) && close(p.y, 120), `pointer drawn at ${JSON.stringify(p)}`);

    // Fit: scaled down to the column.
    const fit = await shownSize(page);
    assert.ok(fit.width < WIDTH, `Fit scales down: ${fit.width}`);
    assert.ok(close(fit.width / fit.height, WIDTH / HEIGHT, 0.02), 'aspect ratio kept');

    // 1:1: one screen pixel per CSS pixel, and the pointer moves with the picture.
    await page.click('#scale-actual');
    assert.equal(await page.getAttribute('#scale-actual', 'aria-pressed'), 'true');
    const actual = await shownSize(page);
    assert.ok(close(actual.width, WIDTH, 1) && close(actual.height, HEIGHT, 1), `1:1 is ${actual.width}×${actual.height}`);
    p = await pointerAsScreenPixel(page);
    assert.ok(close(p.x, 480) && close(p.y, 120), `pointer at 1:1 drawn at ${JSON.stringify(p)}`);
    sharer.sendPointer(10, 400);
    await page.waitForSelector('#remote-pointer[data-x="10"]', { timeout: 10_000 });
    p = await pointerAsScreenPixel(page);
    assert.ok(close(p.x, 10) && close(p.y, 400), `moved pointer drawn at ${JSON.stringify(p)}`);
    fs.mkdirSync(OUT, { recursive: true });
    await page.screenshot({ path: path.join(OUT, 'helper-view.png') });
    await page.click('#scale-fit');
    const back = await shownSize(page);
    assert.ok(close(back.width, fit.width, 1), 'Fit again');

    // Full screen: the screen fills the display, scaled to fit it, aspect ratio kept.
    await page.click('#fullscreen');
    await until('full screen', () => page.evaluate(() => document.fullscreenElement?.id === 'screen-area'), 5_000);
    const full = await shownSize(page);
    const view = page.viewportSize();
    assert.ok(full.width <= view.width + 1 && full.height <= view.height + 1, `fits: ${full.width}×${full.height}`);
    assert.ok(close(full.width / full.height, WIDTH / HEIGHT, 0.02), 'aspect ratio kept in full screen');
    p = await pointerAsScreenPixel(page);
    assert.ok(close(p.x, 10) && close(p.y, 400), `pointer in full screen drawn at ${JSON.stringify(p)}`);
    assert.equal(await page.textContent('#fullscreen'), 'Exit full screen');
    await page.click('#fullscreen');
    await until('full screen to end', () => page.evaluate(() => document.fullscreenElement === null), 5_000);

    await page.click('#end');
    await page.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
    assert.equal(await page.isVisible('#remote-pointer'), false, 'the pointer goes with the session');
  } catch (e) {
    fs.mkdirSync(OUT, { recursive: true });
    await page.screenshot({ path: path.join(OUT, 'helper-view-failed.png'), fullPage: true }).catch(() => {});
    console.error(`helper-view failed; browser console:\n${consoleLines.join('\n') || '(empty)'}`);
    throw e;
  } finally {
    sharer?.close();
    await browser.close();
  }
});
