// End-to-end test of the browser sharer (/share/) with the helper page (/helper/), each in its own
// browser context of headless Chromium, against a real assistd. Started by tests/e2e/run.sh (the
// environment is described in e2e.test.mjs). The sharer's capture is Chromium's own tab capture,
// accepted without a picker (--auto-accept-this-tab-capture; the test makes the page prefer its
// own tab, since headless Chromium has no screen to capture): the test paints four coloured
// quadrants over the sharer's tab and checks that the helper's canvas shows them. Both people sign
// in through the dev issuer's sign-in page (/assets/auth.mjs). Screenshots of both pages: target/e2e/share-*.png.
import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startDemoServer } from './assistd.mjs';

const env = process.env;
const BASE = env.ASSIST_URL;
const OUT = env.E2E_OUT || 'target/e2e';
const TOLERANCE = 48; // per channel: the tiles are JPEG and the capture is scaled
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--ignore-certificate-errors', '--auto-accept-this-tab-capture',
];
const COLOURS = { red: [255, 0, 0], green: [0, 255, 0], blue: [0, 0, 255], white: [255, 255, 255], yellow: [255, 255, 0] };
/** Quadrant centres as fractions of the screen, and the colour painted there first. */
const QUADRANTS = [
  { name: 'topLeft', fx: 0.25, fy: 0.25, colour: 'red' },
  { name: 'topRight', fx: 0.75, fy: 0.25, colour: 'green' },
  { name: 'bottomLeft', fx: 0.25, fy: 0.75, colour: 'blue' },
  { name: 'bottomRight', fx: 0.75, fy: 0.75, colour: 'white' },
];

if (!BASE) throw new Error('run this through tests/e2e/run.sh (ASSIST_URL is not set)');

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

async function poll(what, fn, timeoutMs = 15_000) {
  const end = Date.now() + timeoutMs;
  let got;
  while (!(got = await fn())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await pause(150);
  }
  return got;
}

/** Two pages (helper, sharer) in separate contexts of one browser; screenshots on failure. */
async function withPages(name, fn) {
  const browser = await chromium.launch({ executablePath: env.CHROMIUM || '/usr/bin/chromium', args: ARGS });
  const pages = {};
  const logs = [];
  try {
    for (const role of ['helper', 'sharer']) {
      const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
      if (role === 'sharer') {
        // Headless Chromium has no screen: make the page's getDisplayMedia capture its own tab.
        await ctx.addInitScript(() => {
          const md = navigator.mediaDevices;
          const original = md.getDisplayMedia.bind(md);
          md.getDisplayMedia = (opts = {}) => original({ ...opts, preferCurrentTab: true });
        });
      }
      const page = await ctx.newPage();
      page.on('console', (m) => logs.push(`${role} ${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => logs.push(`${role} pageerror: ${e.message}`));
      pages[role] = page;
    }
    await fn(pages);
  } catch (e) {
    fs.mkdirSync(OUT, { recursive: true });
    for (const [role, page] of Object.entries(pages)) {
      await page.screenshot({ path: path.join(OUT, `${name}-${role}-failed.png`), fullPage: true }).catch(() => {});
    }
    console.error(`${name} failed; browser console:\n${logs.join('\n') || '(empty)'}`);
    throw e;
  } finally {
    await browser.close();
  }
}

/** Opens the helper page, which sends the browser to the dev issuer: signs in as Helen, gets a code. */
async function helperGetsCode(page, base = BASE) {
  await page.goto(`${base}/helper/`);
  await page.waitForURL((u) => u.pathname === '/dev-issuer/authorize', { timeout: 10_000 });
  await page.getByRole('button', { name: 'helen@contoso.com' }).click();
  await page.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
  await page.click('#get-code');
  await page.waitForSelector('body[data-phase="code"]');
  return (await page.textContent('#code')).trim();
}

/**
 * Opens the sharer page, signs in as sam@contoso.com through the dev issuer's sign-in page
 * (/assets/auth.mjs: authorization code + PKCE) and redeems `code` as a person types it.
 */
async function sharerJoins(page, code, base = BASE) {
  const resp = await page.goto(`${base}/share/`);
  assert.equal(resp.status(), 200);
  assert.match(resp.headers()['permissions-policy'], /display-capture=\(self\)/);
  await page.click('#signin-button');
  await page.getByRole('button', { name: 'sam@contoso.com' }).click();
  await page.waitForSelector('body[data-phase="idle"]', { timeout: 15_000 });
  assert.equal(await page.textContent('#conn-status'), 'Signed in as Sam Sharer');
  // Back on the page with the authorization response removed from the URL, and no token stored.
  const back = new URL(page.url());
  assert.equal(back.pathname, '/share/');
  assert.equal(back.search, '');
  assert.deepEqual(await page.evaluate(() => [localStorage.length, sessionStorage.length]), [0, 0]);
  // A malformed code is refused on the page, in words.
  await page.fill('#code', 'ABC');
  await page.click('#join');
  assert.match(await page.textContent('#start-status'), /8 letters and digits/);
  await page.fill('#code', code.toLowerCase());
  await page.click('#join');
  await page.waitForSelector('body[data-phase="joined"]', { timeout: 10_000 });
  assert.equal(await page.textContent('#peer-name'), 'Helen Helper');
  assert.match(await page.textContent('#peer-details'), /Service desk · Contoso/);
  assert.equal(await page.textContent('#peer-domain'), 'contoso.com (verified)');
}

async function helperRequests(page, mode) {
  await page.selectOption('#mode', mode);
  await page.click('#request-mode');
  // The demo tenant's sharer has no device: acknowledge a warning if the policy gives one.
  await pause(300);
  if (await page.isVisible('#ack-warnings')) await page.click('#ack-warnings');
}

function helperPixel(page, fx, fy) {
  return page.evaluate(([x, y]) => {
    const c = document.getElementById('screen');
    if (!c.width) return null;
    const d = c.getContext('2d').getImageData(Math.floor(c.width * x), Math.floor(c.height * y), 1, 1).data;
    return [d[0], d[1], d[2]];
  }, [fx, fy]);
}

async function helperSees(page, q, colour, timeoutMs = 20_000) {
  let got;
  await poll(`${q.name} to be ${colour} on the helper's canvas (last ${JSON.stringify(got)})`, async () => {
    got = await helperPixel(page, q.fx, q.fy);
    return got && got.every((v, i) => Math.abs(v - COLOURS[colour][i]) <= TOLERANCE);
  }, timeoutMs);
}

/** Paints the quadrants over the whole sharer tab (CSSOM styles, which the page's CSP allows). */
function paintQuadrants(page, colours) {
  return page.evaluate(([cs, rgb]) => {
    let o = document.getElementById('e2e-pattern');
    if (!o) {
      o = document.createElement('div');
      o.id = 'e2e-pattern';
      Object.assign(o.style, { position: 'fixed', inset: '0', zIndex: '1000', display: 'grid', gridTemplate: '1fr 1fr / 1fr 1fr' });
      for (let i = 0; i < 4; i++) o.append(document.createElement('div'));
      document.body.append(o);
    }
    cs.forEach((c, i) => { o.children[i].style.background = `rgb(${rgb[c].join(',')})`; });
  }, [colours, COLOURS]);
}

test('browser sharer: code, profile, allow view only, the helper sees the pixels, control declined, end', async () => {
  await withPages('share', async ({ helper, sharer }) => {
    const code = await helperGetsCode(helper);
    await sharerJoins(sharer, code);
    await helper.waitForSelector('body[data-phase="joined"]', { timeout: 10_000 });
    assert.equal(await helper.textContent('#peer-name'), 'Sam Sharer');

    await helperRequests(helper, 'viewOnly');
    await sharer.waitForSelector('#consent:not([hidden])', { timeout: 10_000 });
    assert.match(await sharer.textContent('#consent-text'), /Helen Helper asks to see your screen \(View only\)/);
    assert.equal(await sharer.evaluate(() => document.activeElement?.id), 'allow', 'focus moves to the choice');
    await sharer.click('#allow');
    await helper.waitForSelector('body[data-mode="viewOnly"]', { timeout: 15_000 });
    await sharer.waitForSelector('body[data-phase="active"]');
    await poll('the sharer to send a frame', async () => Number(await sharer.getAttribute('#preview', 'data-frames')) > 0);

    fs.mkdirSync(OUT, { recursive: true });
    await sharer.screenshot({ path: path.join(OUT, 'share-sharer-active.png'), fullPage: true });

    // The helper's canvas shows the sharer's pixels: first the four colours, then a change of one.
    await paintQuadrants(sharer, QUADRANTS.map((q) => q.colour));
    for (const q of QUADRANTS) await helperSees(helper, q, q.colour);
    await paintQuadrants(sharer, ['yellow', 'green', 'blue', 'white']);
    await helperSees(helper, QUADRANTS[0], 'yellow');
    await helperSees(helper, QUADRANTS[3], 'white', 1000);
    const size = await helper.evaluate(() => [document.getElementById('screen').width, document.getElementById('screen').height]);
    assert.ok(size[0] >= 320 && size[1] >= 200, `helper canvas ${size}`);
    const stats = await sharer.textContent('#share-stats');
    const [, sent, full] = stats.match(/frames sent: (\d+) \((\d+) full\)/) || [];
    assert.ok(Number(sent) > Number(full), `delta frames were sent too: ${stats}`);
    await helper.screenshot({ path: path.join(OUT, 'share-helper-view.png'), fullPage: true });

    // A moving picture: delta frames keep flowing (the numbers are reported, not judged).
    const framesBefore = Number(await sharer.getAttribute('#preview', 'data-frames'));
    const t0 = Date.now();
    await sharer.evaluate(() => {
      const q = document.getElementById('e2e-pattern').children[1];
      q.animate([{ background: 'rgb(0,255,0)' }, { background: 'rgb(0,0,0)' }], { duration: 500, iterations: Infinity, direction: 'alternate' });
    });
    // Behaviour, not speed: at least 5 more frames come (the machine may be slow); the rate is reported.
    await pause(3000);
    const sentSince = async () => Number(await sharer.getAttribute('#preview', 'data-frames')) - framesBefore;
    await poll('5 delta frames of the changing picture', async () => (await sentSince()) >= 5, 20_000);
    const framesSent = await sentSince();
    const d = await sharer.evaluate(() => ({ ...document.getElementById('preview').dataset }));
    const rate = (framesSent * 1000 / (Date.now() - t0)).toFixed(1);
    console.log(`# share: ${size.join('×')}: ${rate} frames/s sent while a quadrant changes; last delta ` +
      `${d.lastTiles} tiles, ${Math.round(d.lastBytes / 1024)} KiB, ${d.lastMs} ms; last keyframe ${d.keyTiles} tiles, ` +
      `${Math.round(d.keyBytes / 1024)} KiB, ${d.keyMs} ms`);
    await sharer.evaluate(() => document.getElementById('e2e-pattern')?.remove());

    // Full control is declined by the page, which says why; the session stays view only.
    await helperRequests(helper, 'fullControl');
    await sharer.waitForSelector('#notice:not([hidden])', { timeout: 10_000 });
    assert.match(await sharer.textContent('#notice'), /asked for Full control; this page declined it.*Assist app/);
    await poll('the helper to hear the decline', async () => /declined Full control/.test(await helper.textContent('#session-status')));
    await helper.waitForSelector('#chat-log >> text=which can only show the screen (view only)', { timeout: 10_000 });
    assert.equal(await helper.getAttribute('body', 'data-mode'), 'viewOnly');

    // Chat both ways.
    await sharer.fill('#chat-text', 'Thanks, can you see it?');
    await sharer.click('#chat-send');
    await helper.waitForSelector('#chat-log >> text=Thanks, can you see it?', { timeout: 10_000 });
    await helper.fill('#chat-text', 'Yes, I can.');
    await helper.click('#chat-send');
    await sharer.waitForSelector('#chat-log >> text=Yes, I can.', { timeout: 10_000 });
    await sharer.screenshot({ path: path.join(OUT, 'share-sharer-declined.png'), fullPage: true });
    // The dark theme follows the system's.
    await sharer.emulateMedia({ colorScheme: 'dark' });
    const bg = await sharer.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const [r, g, b] = bg.match(/\d+/g).map(Number);
    assert.ok(r + g + b < 150, `dark background, got ${bg}`);
    await sharer.screenshot({ path: path.join(OUT, 'share-sharer-dark.png'), fullPage: true });
    await sharer.emulateMedia({ colorScheme: 'light' });

    // The sharer ends the session; capture stops.
    await sharer.click('#end');
    await sharer.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
    assert.equal(await sharer.textContent('#start-status'), 'You ended the session.');
    assert.equal(await sharer.isVisible('#preview'), false);
    assert.equal(await sharer.evaluate(() => document.getElementById('preview').srcObject), null);
    await helper.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
    assert.equal(await helper.textContent('#start-status'), 'The user ended the session.');
  });
});

test('browser sharer: a first request for full control is declined and the page says why', async () => {
  await withPages('share-control-first', async ({ helper, sharer }) => {
    const code = await helperGetsCode(helper);
    await sharerJoins(sharer, code);
    await helper.waitForSelector('body[data-phase="joined"]', { timeout: 10_000 });
    await helperRequests(helper, 'fullControl');
    await sharer.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
    const text = await sharer.textContent('#start-status');
    assert.match(text, /You declined, so the session ended\. Helen Helper asked for Full control; this page declined it\./);
    assert.match(text, /Assist app/);
    assert.equal(await sharer.isVisible('#consent'), false, 'the person was never asked to allow control');
    await helper.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
    assert.equal(await helper.textContent('#start-status'), 'The user declined the session.');
  });
});

test('browser sharer: the session outlives the first token (a refreshed token is sent on the open connection)', async () => {
  // A server of its own whose dev sign-in tokens live 12 s: the broker closes a connection whose
  // token expired (4401) unless the page sent a fresh one (`authenticate`) before.
  const srv = await startDemoServer({ bin: env.ASSIST_BIN_DIR || '../../target/debug', config: '[auth]\ndev_token_ttl_secs = 12\nleeway_secs = 0\n' });
  try {
    await withPages('share-refresh', async ({ helper, sharer }) => {
      const code = await helperGetsCode(helper, srv.url);
      await sharerJoins(sharer, code, srv.url);
      await helperRequests(helper, 'viewOnly');
      await sharer.waitForSelector('#consent:not([hidden])', { timeout: 10_000 });
      await sharer.click('#allow');
      await sharer.waitForSelector('body[data-phase="active"]', { timeout: 15_000 });
      const exp = await sharer.evaluate(async () => (await import('/assets/auth.mjs')).currentAuth().claims.exp);
      assert.ok(exp * 1000 - Date.now() < 13_000, `a short-lived token (exp ${exp})`);
      await pause(exp * 1000 - Date.now() + 4000); // past the first token's expiry
      assert.equal(await sharer.getAttribute('body', 'data-phase'), 'active', await sharer.textContent('#error'));
      assert.equal(await sharer.isVisible('#error'), false);
      await sharer.fill('#chat-text', 'Still here after the token expired');
      await sharer.click('#chat-send');
      await helper.waitForSelector('#chat-log >> text=Still here after the token expired', { timeout: 10_000 });
      await sharer.click('#end');
      await helper.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
    });
  } catch (e) {
    console.error(`own assistd log:\n${srv.logs()}`);
    throw e;
  } finally {
    srv.stop();
  }
});

/**
 * An /assets/auth.mjs with the contract's shape that hands out `token`: the dev issuer's sign-in
 * page makes no token with a device id, which the launch flow needs.
 */
const deviceAuthModule = (token) => `
const auth = {
  user: { name: 'Sam Sharer', upn: 'sam@contoso.com', tenantId: 'contoso', oid: '' },
  claims: {},
  async accessToken() { return ${JSON.stringify(token)}; },
  onTokenRefreshed() { return () => {}; },
  async signOut() {},
};
export async function signIn() { return auth; }
export function currentAuth() { return auth; }
`;

test('browser sharer, launch flow: a page signed in on a device accepts the helper\'s launch', async () => {
  const srv = await startDemoServer({ bin: env.ASSIST_BIN_DIR || '../../target/debug' });
  try {
    const device = 'share-kiosk';
    const token = execFileSync(path.join(env.ASSIST_BIN_DIR || '../../target/debug', 'assistd'), [
      'token', '--data-dir', srv.data, '--tenant', 'contoso', '--user', 'sam@contoso.com', '--device', device,
    ], { encoding: 'utf8' }).trim();
    await withPages('share-launch', async ({ helper, sharer }) => {
      await sharer.route(`${srv.url}/assets/auth.mjs`, (r) => r.fulfill({ contentType: 'text/javascript', body: deviceAuthModule(token) }));
      await sharer.goto(`${srv.url}/share/`);
      await sharer.waitForSelector('body[data-phase="idle"]', { timeout: 15_000 });

      await helper.goto(`${srv.url}/helper/`);
      await helper.waitForURL((u) => u.pathname === '/dev-issuer/authorize', { timeout: 10_000 });
      await helper.getByRole('button', { name: 'helen@contoso.com' }).click();
      await helper.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
      await helper.fill('#device-id', device);
      await helper.click('#help-device');

      await sharer.waitForSelector('body[data-phase="launch"]', { timeout: 10_000 });
      assert.equal(await sharer.textContent('#launch-text'),
        'Helen Helper wants to help you on this device (contoso.com, verified). Accept?');
      assert.equal(await sharer.evaluate(() => document.activeElement?.id), 'launch-accept');
      await sharer.click('#launch-accept');
      await sharer.waitForSelector('body[data-phase="joined"]', { timeout: 10_000 });
      assert.equal(await sharer.textContent('#peer-name'), 'Helen Helper');
      await helper.waitForSelector('body[data-phase="joined"]', { timeout: 10_000 });

      await helperRequests(helper, 'viewOnly'); // the device is unenrolled: the helper acknowledges the warning
      await sharer.waitForSelector('#consent:not([hidden])', { timeout: 10_000 });
      await sharer.click('#allow');
      await helper.waitForSelector('body[data-mode="viewOnly"]', { timeout: 15_000 });
      await paintQuadrants(sharer, QUADRANTS.map((q) => q.colour));
      for (const q of QUADRANTS) await helperSees(helper, q, q.colour);

      await helper.click('#end');
      await sharer.waitForSelector('body[data-phase="idle"]', { timeout: 10_000 });
      assert.equal(await sharer.textContent('#start-status'), 'Your helper ended the session.');
    });
  } catch (e) {
    console.error(`own assistd log:\n${srv.logs()}`);
    throw e;
  } finally {
    srv.stop();
  }
});

test('browser sharer: cancelling the sign-in is shown, and signing in again works', async () => {
  await withPages('share-cancel', async ({ sharer }) => {
    await sharer.goto(`${BASE}/share/`);
    await sharer.click('#signin-button');
    await sharer.getByRole('button', { name: 'Cancel' }).click();
    await sharer.waitForSelector('#error:not([hidden])', { timeout: 10_000 });
    assert.match(await sharer.textContent('#error'), /Sign-in failed: .*access_denied/);
    assert.equal(await sharer.getAttribute('body', 'data-phase'), 'signedOut');
    assert.equal(new URL(sharer.url()).search, '', 'the error answer left the URL');
    await sharer.click('#signin-button');
    await sharer.getByRole('button', { name: 'sam@contoso.com' }).click();
    await sharer.waitForSelector('body[data-phase="idle"]', { timeout: 15_000 });
  });
});
