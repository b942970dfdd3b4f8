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
import net from 'node:net';
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

/**
 * Starts `assistd serve` on free loopback ports with `config` (TOML; a function of the data
 * directory, or a string); resolves {url, ca, data, stop}. With `dir`, reuses that directory.
 */
export async function startAssistd(config = '', dir = fs.mkdtempSync(path.join(os.tmpdir(), 'assist-signin-'))) {
  const cfg = path.join(dir, 'assist.toml');
  const data = path.join(dir, 'data');
  fs.writeFileSync(cfg, typeof config === 'function' ? config(data) : config);
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
    dir,
    port: Number(port),
    logs: () => err,
    out: () => out,
    /** Stops the server; `keep` keeps its directory (to start it again). */
    stop: async (keep = false) => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      if (!keep) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A free loopback TCP port. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
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
  // Playwright does not intercept the request a redirect makes, so the provider's 303 back to
  // /share/ would reach the real sharer page: turn it into a meta refresh, a new navigation
  // the route above serves the harness for.
  await context.route((u) => u.origin === origin && u.pathname === '/dev-issuer/authorize', async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    const resp = await route.fetch({ maxRedirects: 0 });
    const location = resp.headers().location;
    if (resp.status() !== 303 || !location) return route.fulfill({ response: resp });
    const escaped = location.replace(/&/g, '&amp;').replace(/"/g, '&quot;');
    return route.fulfill({
      status: 200, contentType: 'text/html; charset=utf-8',
      body: `<!doctype html><meta http-equiv="refresh" content="0;url=${escaped}">`,
    });
  });
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

/** Waits for the provider to send the browser back to the harness at /share/. */
export async function backToHarness(page, origin) {
  await page.waitForURL((u) => u.origin === origin && u.pathname === '/share/', { timeout: 20_000 });
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
    await srv.stop();
  }
});

const oidcDeps = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'oidc', 'node_modules', 'oidc-provider');
const noOidc = fs.existsSync(oidcDeps) ? false : 'tests/oidc/node_modules is missing (scripts/install-test-deps.sh)';

test('a second provider (panva oidc-provider): the helper page signs in, the CLI uses the device grant', { skip: noOidc }, async () => {
  const { startProvider } = await import('../oidc/provider.mjs');
  const idpPort = await freePort();
  const idpIssuer = `https://localhost:${idpPort}`;
  // First start: assistd makes its certificate, which the provider then serves too (both are
  // localhost), so one CA file is trusted by the server's JWKS fetches, the CLI and the test.
  const first = await startAssistd('');
  await first.stop(true);
  const srv = await startAssistd((data) => [
    '[auth]', 'dev_issuer = false', `ca_file = "${data}/tls/cert.pem"`,
    '[[auth.issuers]]', `issuer = "${idpIssuer}"`, 'discovery = true', 'tenants = ["contoso"]',
    '[auth.sign_in]', `issuer = "${idpIssuer}"`, 'client_id = "assist-web"', 'cli_client_id = "assist-cli"',
    'scopes = "openid profile offline_access"', '',
  ].join('\n'), first.dir);
  const cert = srv.ca;
  const key = fs.readFileSync(path.join(srv.data, 'tls', 'key.pem'));
  const idp = await startProvider({
    port: idpPort, cert, key, redirectUris: ['/helper/', '/share/', '/admin/'].map((p) => `${srv.url}${p}`),
  });
  let cli = null;
  try {
    // The page's configuration names the provider; the page's CSP lets it be fetched.
    const cfg = await request('GET', `${srv.url}/v1/auth/config`, { ca: cert });
    assert.equal(cfg.body.issuer, idpIssuer);
    await withHarness('signin-oidc-provider', srv.url, async (page, context) => {
      await page.goto(`${srv.url}/helper/`);
      await page.waitForURL((u) => u.origin === idpIssuer, { timeout: 15_000 });
      await page.fill('input[name="login"]', 'helen@contoso.com');
      await page.fill('input[name="password"]', 'any');
      await page.click('button[type="submit"]');
      await page.waitForURL((u) => u.origin === srv.url || u.pathname.includes('consent'), { timeout: 15_000 });
      if (new URL(page.url()).origin !== srv.url) await page.click('button[type="submit"]');
      await page.waitForSelector('body[data-phase="idle"]', { timeout: 20_000 });
      assert.match(await page.textContent('#conn-status'), /Connected as helen/);
      assert.equal(new URL(page.url()).search, '');
      assert.deepEqual(await page.evaluate(() => [localStorage.length, sessionStorage.length]), [0, 0]);

      // The CLI: device grant against the same provider.
      cli = spawn(path.join(BIN, 'assist'), ['helper', '--server', srv.url, '--ca', path.join(srv.data, 'tls', 'cert.pem')],
        { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ASSIST_TOKEN: '' } });
      let cliOut = '';
      cli.stdout.on('data', (d) => { cliOut += d; });
      cli.stderr.on('data', (d) => { cliOut += `stderr: ${d}`; });
      const waitOut = async (re, what) => {
        const deadline = Date.now() + 30_000;
        while (!re.test(cliOut)) {
          if (Date.now() > deadline) throw new Error(`CLI: no ${what}; output:\n${cliOut}`);
          await sleep(100);
        }
        return cliOut.match(re);
      };
      const [, complete] = await waitOut(/\(or open (https:\/\/\S+)\)/, 'verification URI');
      assert.ok(complete.startsWith(idpIssuer), complete);
      const device = await context.newPage();
      await device.goto(complete);
      // The provider asks to confirm the code, then (if needed) who signs in.
      for (let i = 0; i < 4 && !/Sign-in Success|signed in|success/i.test(await device.textContent('body')); i++) {
        if (await device.locator('input[name="login"]').count()) {
          await device.fill('input[name="login"]', 'helen@contoso.com');
          await device.fill('input[name="password"]', 'any');
        }
        await device.locator('button[type="submit"]').first().click();
        await device.waitForLoadState();
      }
      await waitOut(/^Signed in\.$/m, '"Signed in."');
      await waitOut(/^(Your code is|Error)/m, 'a first answer from the server');
      assert.doesNotMatch(cliOut, /eyJ/, 'no token in the CLI output');
    });
  } finally {
    if (cli && cli.exitCode === null) cli.kill('SIGTERM');
    await idp.close();
    await srv.stop();
  }
});
