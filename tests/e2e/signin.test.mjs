// Sign-in in headless Chromium: /assets/auth.mjs (authorization code + PKCE) against the dev
// issuer's OIDC provider of an assistd this test starts itself (short-lived access tokens, so
// the refresh is seen), and against a second, independent provider (panva's oidc-provider,
// tests/oidc/provider.mjs) configured as an extra issuer. Started by tests/e2e/run.sh, which
// provides ASSIST_BIN_DIR (target/debug), CHROMIUM and E2E_OUT.
//
// The page under test is a small harness served in place of /share/ (a registered redirect URI)
// by Playwright's request interception; the helper page's own sign-in is tested in e2e.test.mjs.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { chromium } from 'playwright-core';

const env = process.env;
const BIN = env.ASSIST_BIN_DIR || 'target/debug';
const OUT = env.E2E_OUT || 'target/e2e';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--ignore-certificate-errors',
];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const HARNESS = `<!doctype html><html lang="en"><meta charset="utf-8"><title>auth.mjs harness</title>
<body><p id="out">signing in…</p>
<script type="module">
import { signIn, currentAuth } from '/assets/auth.mjs';
window.refreshed = [];
window.currentAuth = currentAuth;
try {
  const hint = new URLSearchParams(location.search).get('hint') || undefined;
  const a = await signIn({ loginHint: hint });
  a.onTokenRefreshed((t) => window.refreshed.push(t));
  window.result = { user: a.user, claims: a.claims, token: await a.accessToken() };
  document.getElementById('out').textContent = 'signed in as ' + a.user.upn;
} catch (e) {
  window.result = { error: e.message };
  document.getElementById('out').textContent = 'error: ' + e.message;
}
</script></body></html>`;

/** Starts `assistd serve` on free loopback ports with `config` (TOML); resolves {url, ca, data, stop}. */
export async function startAssistd(config = '') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'assist-signin-'));
  const cfg = path.join(dir, 'assist.toml');
  fs.writeFileSync(cfg, config);
  const data = path.join(dir, 'data');
  const child = spawn(path.join(BIN, 'assistd'), [
    'serve', '--config', cfg, '--data-dir', data, '--listen', '127.0.0.1:0',
    '--quic-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--log', 'warn',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const deadline = Date.now() + 30_000;
  let port;
  while (!(port = out.match(/serving https:\/\/[0-9.]+:(\d+)/)?.[1])) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`assistd did not start: ${err}`);
    await sleep(100);
  }
  return {
    url: `https://localhost:${port}`,
    ca: fs.readFileSync(path.join(data, 'tls', 'cert.pem')),
    data,
    logs: () => err,
    stop: () => { child.kill('SIGTERM'); fs.rmSync(dir, { recursive: true, force: true }); },
  };
}

/** A JSON request trusting `ca`. */
export function request(method, url, { ca, token, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, {
      method, ca,
      headers: {
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
        ...(body ? { 'Content-Type': 'application/json' } : {}),
      },
    }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json = null;
        try { json = text ? JSON.parse(text) : null; } catch { json = text; }
        resolve({ status: res.statusCode, body: json });
      });
    });
    req.on('error', reject);
    if (body) req.write(JSON.stringify(body));
    req.end();
  });
}

export async function withHarness(name, origin, fn) {
  const browser = await chromium.launch({ executablePath: env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS });
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  await context.route((u) => u.origin === origin && u.pathname === '/share/', (route) =>
    route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: HARNESS }));
  const page = await context.newPage();
  const lines = [];
  page.on('console', (m) => lines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => lines.push(`pageerror: ${e.message}`));
  try {
    await fn(page, context);
  } catch (e) {
    fs.mkdirSync(OUT, { recursive: true });
    const shot = path.join(OUT, `${name}.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    console.error(`${name} failed at ${page.url()}\nscreenshot: ${shot}\nconsole:\n${lines.join('\n') || '(empty)'}`);
    throw e;
  } finally {
    await browser.close();
  }
}

/**
 * Waits for the provider to send the browser back to /share/. Playwright does not intercept
 * the request a redirect makes, so the real server answered it (404): load the same URL again,
 * through the harness (sessionStorage, holding the verifier, survives in the tab).
 */
export async function backToHarness(page, origin) {
  await page.waitForURL((u) => u.origin === origin && u.pathname === '/share/', { timeout: 20_000 });
  const served = await page.evaluate(() => Boolean(document.getElementById('out')));
  if (!served) await page.goto(page.url());
}

async function result(page) {
  await page.waitForFunction(() => window.result, null, { timeout: 20_000 });
  return page.evaluate(() => window.result);
}

test('auth.mjs against the dev provider: sign in, clean URL, memory-only tokens, refresh', async () => {
  const srv = await startAssistd('[auth]\ndev_token_ttl_secs = 12\n');
  try {
    const admin = execFileSync(path.join(BIN, 'assistd'), ['token', '--data-dir', srv.data, '--tenant', 'contoso',
      '--user', 'admin@contoso.com', '--roles', 'User.ReadWrite.All']).toString().trim();
    const made = await request('POST', `${srv.url}/beta/users`, {
      ca: srv.ca, token: admin, body: { userPrincipalName: 'helen@contoso.com', displayName: 'Helen Helper' },
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    await withHarness('signin-dev', srv.url, async (page) => {
      await page.goto(`${srv.url}/share/?keep=1#frag`);
      // The dev provider's page: the directory's users are buttons named by their UPN.
      await page.getByRole('button', { name: 'helen@contoso.com' }).click();
      await backToHarness(page, srv.url);
      const r = await result(page);
      assert.equal(r.error, undefined, r.error);
      assert.equal(r.user.upn, 'helen@contoso.com');
      assert.equal(r.user.name, 'Helen Helper');
      assert.equal(r.user.tenantId, 'contoso');
      assert.equal(r.user.oid, made.body.id);
      assert.equal(r.claims.iss, 'urn:assist:dev-issuer');
      // The response left the URL; what the page had is back; nothing is stored.
      const u = new URL(page.url());
      assert.equal(u.search, '?keep=1');
      assert.equal(u.hash, '#frag');
      const stored = await page.evaluate(() => ({ s: sessionStorage.length, l: localStorage.length }));
      assert.deepEqual(stored, { s: 0, l: 0 });
      // The token is accepted by the server (403: known, without the permission; not 401).
      const check = await request('GET', `${srv.url}/beta/deviceManagement/remoteAssistanceSettings`, { ca: srv.ca, token: r.token });
      assert.equal(check.status, 403);
      // Refreshed before expiry (12 s lifetime, refreshed 5 s before), listeners told.
      await page.waitForFunction(() => window.refreshed.length > 0, null, { timeout: 15_000 });
      const fresh = await page.evaluate(async () => ({ t: await window.currentAuth().accessToken(), r: window.refreshed }));
      assert.equal(fresh.t, fresh.r[fresh.r.length - 1]);
      assert.notEqual(fresh.t, r.token);
      assert.equal((await request('GET', `${srv.url}/beta/deviceManagement/remoteAssistanceSettings`, { ca: srv.ca, token: fresh.t })).status, 403);
      // A reload forgets the session (memory only) and signs in again, here as someone else
      // through the form, as an administrator.
      await page.goto(`${srv.url}/share/?hint=ann@fabrikam.com`);
      await page.getByLabel('Tenant').fill('fabrikam');
      assert.equal(await page.getByLabel('User principal name').inputValue(), 'ann@fabrikam.com');
      await page.getByLabel('Administrator').check();
      await page.getByRole('button', { name: 'Sign in as this user' }).click();
      await backToHarness(page, srv.url);
      const r2 = await result(page);
      assert.equal(r2.user.upn, 'ann@fabrikam.com');
      assert.deepEqual(r2.claims.wids, ['62e90394-69f5-4237-9190-012177145e10']);
      // Cancel comes back as an error the page can show.
      await page.goto(`${srv.url}/share/`);
      await page.getByRole('button', { name: 'Cancel' }).click();
      await backToHarness(page, srv.url);
      const r3 = await result(page);
      assert.match(r3.error, /access_denied/);
      assert.equal(new URL(page.url()).search, '');
    });
  } finally {
    srv.stop();
  }
});
