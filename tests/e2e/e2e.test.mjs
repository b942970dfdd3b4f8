// End-to-end tests of the browser helper page in headless Chromium against a real assistd.
// Started by tests/e2e/run.sh, which provides (environment):
//   ASSIST_URL        https://localhost:PORT of a running assistd with the demo tenant
//   HELPER_TOKEN, SHARER_TOKEN   tokens of helen@contoso.com and sam@contoso.com (the helper
//                     page itself signs in as helen through the dev issuer's sign-in page)
//   DEVICE_TOKEN, DEVICE_ID      sam@contoso.com signed in on an unenrolled device (launch flow)
//   ASSIST_CA         the server's certificate (PEM)
//   ASSIST_BIN_DIR    target/debug (the `assist` binary)
//   E2E_DISPLAY, E2E_APP_LOG     the Xvfb display with assist-xtest-app and its click log;
//                     unset: the test with the real sharer agent is skipped
//   E2E_OUT           where screenshots of failures go (target/e2e)
// The page against a scripted sharer (fake-sharer.mjs: no X needed), by code and by launch, and
// against the real sharer agent sharing an X display.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { COLORS, QUADRANTS, startFakeSharer } from './fake-sharer.mjs';

const env = process.env;
const URL_BASE = env.ASSIST_URL;
const OUT = env.E2E_OUT || 'target/e2e';
const TOLERANCE = 40; // per channel: JPEG tiles are not exact
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--ignore-certificate-errors',
];

if (!URL_BASE || !env.HELPER_TOKEN || !env.SHARER_TOKEN) {
  throw new Error('run this through tests/e2e/run.sh (ASSIST_URL, HELPER_TOKEN and SHARER_TOKEN are not set)');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, timeoutMs = 15_000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

async function withBrowser(name, fn) {
  const browser = await chromium.launch({ executablePath: env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS });
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  try {
    await fn(page);
  } catch (e) {
    fs.mkdirSync(OUT, { recursive: true });
    const shot = path.join(OUT, `${name}.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    const state = await page.evaluate(() => ({
      phase: document.body.dataset.phase, mode: document.body.dataset.mode,
      error: document.getElementById('error')?.textContent,
      status: document.getElementById('session-status')?.textContent,
      screen: document.getElementById('screen-status')?.textContent,
      stats: document.getElementById('screen-stats')?.textContent,
    })).catch(() => ({}));
    console.error(`${name} failed; page state: ${JSON.stringify(state)}\nscreenshot: ${shot}\n` +
      `browser console:\n${consoleLines.join('\n') || '(empty)'}`);
    throw e;
  } finally {
    await browser.close();
  }
}

/**
 * Opens `path`, which sends the browser to the dev issuer's sign-in page; picks `upn` there
 * and waits until the helper page is back, signed in and connected.
 */
async function signInAsHelper(page, path = '/helper/', upn = 'helen@contoso.com') {
  await page.goto(`${URL_BASE}${path}`);
  await page.waitForURL((u) => u.pathname === '/dev-issuer/authorize', { timeout: 10_000 });
  await page.getByRole('button', { name: upn }).click();
  await page.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
  assert.equal(new URL(page.url()).pathname, '/helper/');
  assert.equal(new URL(page.url()).search, '', 'the authorization response left the URL');
  assert.match(await page.textContent('#conn-status'), /Connected as Helen Helper/);
  // Tokens stay in memory: nothing in either storage.
  assert.deepEqual(await page.evaluate(() => [localStorage.length, sessionStorage.length]), [0, 0]);
}

/** Opens the page, signs in as the helper and gets a code. */
async function signInAndGetCode(page) {
  await signInAsHelper(page, '/'); // / redirects to /helper/
  await page.click('#get-code');
  await page.waitForSelector('body[data-phase="code"]');
  const shown = (await page.textContent('#code')).trim();
  assert.match(shown, /^[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}$/);
  assert.equal(await page.getAttribute('#code', 'aria-live'), 'polite');
  return shown.replace('-', '');
}

/** Requests `mode` (acknowledging warnings if the policy has any) and waits until it applies. */
async function requestMode(page, mode) {
  await page.selectOption('#mode', mode);
  await page.click('#request-mode');
  await until(`mode ${mode}`, async () => {
    if (await page.isVisible('#ack-warnings')) await page.click('#ack-warnings');
    return (await page.getAttribute('body', 'data-mode')) === mode;
  }, 20_000, 200);
}

/** The canvas pixel at screen coordinates (the canvas has the sharer's screen size). */
function pixel(page, x, y) {
  return page.evaluate(([px, py]) => {
    const c = document.getElementById('screen');
    if (!c.width) return null;
    return Array.from(c.getContext('2d').getImageData(px, py, 1, 1).data.slice(0, 3));
  }, [x, y]);
}

const near = (got, want) => got && got.every((v, i) => Math.abs(v - want[i]) <= TOLERANCE);
const centre = (q) => ({ x: q.x + q.width / 2, y: q.y + q.height / 2 });

async function waitForColour(page, q, colour, timeoutMs = 20_000) {
  const { x, y } = centre(q);
  let got;
  await until(`${q.name} to be ${colour} (last ${JSON.stringify(got)})`, async () => {
    got = await pixel(page, x, y);
    return near(got, COLORS[colour]);
  }, timeoutMs, 150);
}

/** Clicks the canvas where screen pixel (x, y) is shown. */
async function clickScreen(page, x, y) {
  const box = await page.locator('#screen').boundingBox();
  const size = await page.evaluate(() => [document.getElementById('screen').width, document.getElementById('screen').height]);
  await page.mouse.click(box.x + ((x + 0.5) * box.width) / size[0], box.y + ((y + 0.5) * box.height) / size[1]);
}

async function checkProfile(page) {
  await page.waitForSelector('body[data-phase="joined"]', { timeout: 20_000 });
  assert.equal(await page.textContent('#peer-name'), 'Sam Sharer');
  assert.equal(await page.textContent('#peer-company'), 'Contoso');
  assert.match(await page.textContent('#peer-domain'), /contoso\.com \(verified\)/);
}

async function endSession(page) {
  await page.click('#end');
  await page.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
  assert.match(await page.textContent('#start-status'), /You ended the session/);
}

test('helper page against a scripted sharer: screen, view-only, full control, keys, wheel, chat, end', async () => {
  await withBrowser('scripted-sharer', async (page) => {
    const code = await signInAndGetCode(page);
    const sharer = await startFakeSharer({ server: URL_BASE, token: env.SHARER_TOKEN, code });
    try {
      await checkProfile(page);
      await requestMode(page, 'viewOnly');
      for (const q of QUADRANTS) await waitForColour(page, q, q.color);

      // View only: the page sends nothing and the picture stays.
      const tl = QUADRANTS[0];
      await clickScreen(page, centre(tl).x, centre(tl).y);
      await page.keyboard.press('a');
      await sleep(700);
      assert.deepEqual(sharer.inputs, [], 'no input in view only');
      await waitForColour(page, tl, 'red', 1000);

      await requestMode(page, 'fullControl');
      await page.waitForSelector('body[data-relay-mode="fullControl"]', { timeout: 10_000 });
      await until('the relay to announce fullControl', () => sharer.relayMode === 'fullControl');
      const tr = QUADRANTS[1];
      await clickScreen(page, centre(tr).x, centre(tr).y);
      await until('a click at the sharer', () => sharer.clicks.length > 0);
      const c = sharer.clicks[0];
      assert.equal(c.button, 1);
      assert.ok(Math.abs(c.x - centre(tr).x) <= 2 && Math.abs(c.y - centre(tr).y) <= 2, `click at ${c.x},${c.y}`);
      await waitForColour(page, tr, 'yellow');
      await waitForColour(page, QUADRANTS[3], 'white', 1000);
      fs.mkdirSync(OUT, { recursive: true });
      await page.screenshot({ path: path.join(OUT, 'scripted-sharer-active.png') });
      const up = sharer.inputs.find((e) => e.type === 'pointerButton' && !e.down);
      assert.ok(up && up.button === 1, 'button released');

      // Keys go to the focused canvas, with the key value of the keydown.
      await page.keyboard.down('Shift');
      await page.keyboard.press('KeyB');
      await page.keyboard.up('Shift');
      await until('key events', () => sharer.inputs.filter((e) => e.type === 'key').length >= 4);
      const keys = sharer.inputs.filter((e) => e.type === 'key').map((e) => `${e.key}${e.down ? '↓' : '↑'}`);
      assert.deepEqual(keys, ['Shift↓', 'B↓', 'B↑', 'Shift↑']);

      // Wheel: whole steps at the pointer.
      await page.mouse.wheel(0, 300);
      await until('a wheel event', () => sharer.inputs.some((e) => e.type === 'wheel'));
      const wheel = sharer.inputs.filter((e) => e.type === 'wheel').reduce((n, e) => n + e.dy, 0);
      assert.ok(wheel >= 1, `wheel dy ${wheel}`);

      // Right button maps to 3.
      await page.mouse.click(10 + (await page.locator('#screen').boundingBox()).x, 10 + (await page.locator('#screen').boundingBox()).y, { button: 'right' });
      await until('a right click', () => sharer.clicks.some((k) => k.button === 3));

      // Chat goes through signalling.
      await page.fill('#chat-text', 'Can you see my pointer?');
      await page.click('#chat-send');
      await page.waitForSelector('#chat-log >> text=Can you see my pointer?');

      await endSession(page);
      await until('the sharer to hear the end', () => sharer.ended);
      assert.equal(sharer.ended.reason, 'ended');
      assert.equal(sharer.ended.by, 'helper');
    } finally {
      sharer.close();
    }
  });
});

test('helper page, launch flow: help a device, acknowledge the warning, the sharer ends', { skip: env.DEVICE_TOKEN ? false : 'no DEVICE_TOKEN' }, async () => {
  await withBrowser('launch', async (page) => {
    const sharer = await startFakeSharer({ server: URL_BASE, token: env.DEVICE_TOKEN });
    try {
      await signInAsHelper(page);
      // An unknown device is offline, in plain words.
      await page.fill('#device-id', 'no-such-device');
      await page.click('#help-device');
      await until('the offline message', async () => /not connected/.test(await page.textContent('#start-status')));
      await page.fill('#device-id', env.DEVICE_ID);
      await page.click('#help-device');
      await checkProfile(page);
      // The device is unenrolled: the policy warns, and the helper acknowledges.
      await page.selectOption('#mode', 'viewOnly');
      await page.click('#request-mode');
      await page.waitForSelector('#ack-warnings', { state: 'visible', timeout: 10_000 });
      assert.match(await page.textContent('#warning-list'), /not enrolled/);
      assert.equal(await page.isEnabled('#request-mode'), true, 'another mode may be chosen instead');
      await page.click('#ack-warnings');
      await page.waitForSelector('body[data-mode="viewOnly"]', { timeout: 10_000 });
      for (const q of QUADRANTS) await waitForColour(page, q, q.color);
      sharer.end();
      await page.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
      assert.equal(await page.textContent('#start-status'), 'The user ended the session.');
      assert.equal(await page.getAttribute('#screen', 'width'), '0', 'the picture is gone');
    } finally {
      sharer.close();
    }
  });
});

const agentReady = Boolean(env.E2E_DISPLAY && env.E2E_APP_LOG);

test('helper page against the sharer agent sharing an X display', { skip: agentReady ? false : 'no X display or sharer agent (see run.sh)' }, async () => {
  const appLog = env.E2E_APP_LOG;
  const clicks = () => fs.readFileSync(appLog, 'utf8').split('\n').filter((l) => l.startsWith('click '));
  await withBrowser('agent', async (page) => {
    const code = await signInAndGetCode(page);
    const agentLog = [];
    const agent = spawn(path.join(env.ASSIST_BIN_DIR, 'assist'), [
      'sharer', '--server', URL_BASE, '--token', env.SHARER_TOKEN, '--ca', env.ASSIST_CA,
      '--code', code, '--auto-accept', '--display', env.E2E_DISPLAY,
    ], { stdio: ['pipe', 'pipe', 'pipe'] });
    agent.stdout.on('data', (d) => agentLog.push(String(d)));
    agent.stderr.on('data', (d) => agentLog.push(String(d)));
    try {
      await checkProfile(page);
      await requestMode(page, 'viewOnly');
      for (const q of QUADRANTS) await waitForColour(page, q, q.color, 30_000);
      const size = await page.evaluate(() => [document.getElementById('screen').width, document.getElementById('screen').height]);
      assert.deepEqual(size, [640, 480]);

      // View only: nothing reaches the app.
      const tl = QUADRANTS[0];
      await clickScreen(page, centre(tl).x, centre(tl).y);
      await page.keyboard.press('b');
      await sleep(1500);
      assert.equal(fs.readFileSync(appLog, 'utf8'), '', 'the app saw no click and no key in view only');
      await waitForColour(page, tl, 'red', 1000);

      await requestMode(page, 'fullControl');
      // Once the page has the relay's modeChanged, the agent's copy is ahead of any input on its leg.
      await page.waitForSelector('body[data-relay-mode="fullControl"]', { timeout: 10_000 });
      const br = QUADRANTS[3];
      const at = centre(br);
      await clickScreen(page, at.x, at.y);
      const line = await until('a click in the app log', () => clicks()[0], 15_000);
      const [, x, y, button] = line.split(/\s+/).map(Number);
      assert.ok(Math.abs(x - at.x) <= 3 && Math.abs(y - at.y) <= 3, `app saw ${line}, expected near ${at.x} ${at.y}`);
      assert.equal(button, 1);
      await waitForColour(page, br, 'yellow', 15_000);
      await waitForColour(page, QUADRANTS[1], 'green', 1000);
      assert.equal(clicks().length, 1, 'one press, one log line');

      // Keys: the click focused the canvas; `a` and Enter reach the app as keysyms 0x61 and 0xff0d.
      await page.keyboard.press('a');
      await page.keyboard.press('Enter');
      const keys = () => fs.readFileSync(appLog, 'utf8').split('\n').filter((l) => l.startsWith('key '));
      await until('key presses in the app log', () => keys().length >= 2, 10_000);
      assert.deepEqual(keys(), ['key 61', 'key ff0d']);
      fs.mkdirSync(OUT, { recursive: true });
      await page.screenshot({ path: path.join(OUT, 'agent-active.png') });

      await endSession(page);
    } catch (e) {
      console.error(`sharer agent output:\n${agentLog.join('') || '(none)'}`);
      throw e;
    } finally {
      agent.stdin.end();
      agent.kill('SIGTERM');
    }
  });
});
