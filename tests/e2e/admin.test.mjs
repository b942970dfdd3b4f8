// End-to-end test of the admin console (/admin/) in headless Chromium against a real assistd.
// Started by tests/e2e/run.sh, which provides (environment):
//   ASSIST_URL        https://localhost:PORT of a running assistd with the demo tenant
//   HELPER_TOKEN, SHARER_TOKEN   tokens of helen@contoso.com and sam@contoso.com
//   ADMIN_TOKEN       a dev-issuer token of ada@contoso.com with wids = Global Administrator
//                     (reads back through the API what the console changed)
//   ADMIN_DEVICE_TOKEN, ADMIN_DEVICE_ID   sam@contoso.com on a device of its own (launch flow)
//   E2E_OUT           target/e2e; screenshots of every page go to E2E_OUT/admin/
// Each browser signs in to the console through /assets/auth.mjs and the dev issuer's sign-in
// page, as "another user" (ada@contoso.com) with the Administrator box (wids = Global
// Administrator): no Graph permission in the token, no role assignment.
// A session is run by a scripted helper (below) and sharer (fake-sharer.mjs) over /v1/signal.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startFakeSharer } from './fake-sharer.mjs';

const env = process.env;
const URL_BASE = env.ASSIST_URL;
const OUT = path.join(env.E2E_OUT || 'target/e2e', 'admin');
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--ignore-certificate-errors',
];
const ADMIN_UPN = 'ada@contoso.com';

if (!URL_BASE || !env.HELPER_TOKEN || !env.SHARER_TOKEN || !env.ADMIN_TOKEN || !env.ADMIN_DEVICE_TOKEN) {
  throw new Error('run this through tests/e2e/run.sh (ASSIST_URL, HELPER_TOKEN, SHARER_TOKEN, ADMIN_TOKEN and ADMIN_DEVICE_TOKEN are not set)');
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

/** The admin API as the test's own admin (to read back what the console did). */
async function api(method, p, body) {
  const resp = await fetch(`${URL_BASE}${p}`, {
    method,
    headers: { Authorization: `Bearer ${env.ADMIN_TOKEN}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  return { status: resp.status, body: text ? JSON.parse(text) : null };
}

/** A browser page signed in to the console as an Administrator. */
async function withConsole(name, fn, { viewport = { width: 1280, height: 800 }, colorScheme = 'light', upn = ADMIN_UPN, administrator = true } = {}) {
  const browser = await chromium.launch({ executablePath: env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS });
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport, colorScheme, acceptDownloads: true });
  const page = await context.newPage();
  const lines = [];
  page.on('console', (m) => lines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => lines.push(`pageerror: ${e.message}`));
  try {
    await page.goto(`${URL_BASE}/admin/`);
    // The dev issuer's sign-in page: another user, as an Administrator (wids).
    if (administrator) await page.getByRole('checkbox', { name: /Administrator/ }).check();
    await page.getByLabel('Tenant').fill('contoso');
    await page.getByLabel('User principal name').fill(upn);
    await page.getByLabel('Display name').fill(upn === ADMIN_UPN ? 'Ada Admin' : upn);
    await page.getByRole('button', { name: 'Sign in as this user' }).click();
    await page.waitForURL(/\/admin\//, { timeout: 15_000 });
    await page.waitForSelector('body[data-signed-in="true"]', { timeout: 15_000 });
    // The authorization response is gone from the URL, and no token is in storage.
    assert.ok(!/[?&](code|state)=/.test(page.url()), page.url());
    assert.ok((await page.textContent('#who')).includes(upn));
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    assert.ok(!stored.includes('eyJ'), `a token in storage: ${stored}`);
    await fn(page);
  } catch (e) {
    fs.mkdirSync(OUT, { recursive: true });
    const shot = path.join(OUT, `failed-${name}.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    const error = await page.textContent('#error').catch(() => '');
    console.error(`${name} failed; page error: ${error}\nscreenshot: ${shot}\nbrowser console:\n${lines.join('\n') || '(empty)'}`);
    throw e;
  } finally {
    await browser.close();
  }
}

async function shot(page, name) {
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });
}

/** Goes to a page and waits until it has loaded its data. */
async function open(page, route) {
  await page.getByRole('link', { name: route.title, exact: true }).click();
  await page.waitForFunction((r) => document.body.dataset.page === r && !document.body.dataset.loading, route.id);
  assert.equal(await page.getAttribute(`#nav a[data-route="${route.id}"]`, 'aria-current'), 'page');
  assert.equal(await page.isVisible('#error'), false, `error on ${route.id}: ${await page.textContent('#error')}`);
}

/** Clicks the visible Apply button and waits until the page has reloaded its data. */
async function apply(page) {
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.waitForFunction(() => !document.body.dataset.loading);
}

const PAGE = {
  settings: { id: 'settings', title: 'Settings' },
  monitor: { id: 'monitor', title: 'Monitor' },
  sessions: { id: 'sessions', title: 'Remote Help sessions' },
  roles: { id: 'roles', title: 'Roles' },
  devices: { id: 'devices', title: 'Devices and users' },
  whatif: { id: 'whatif', title: 'What-if' },
  audit: { id: 'audit', title: 'Audit log' },
};

/** A scripted helper: gets a code, asks for full control once the sharer joined, joins the relay. */
async function startScriptedHelper(token) {
  const ws = new WebSocket(new URL('/v1/signal', URL_BASE.replace(/^http/, 'ws')));
  const state = { code: null, sessionId: null, active: false, ended: null, log: [], relay: null };
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('signal connect failed')); });
  let id = 1;
  const send = (m) => ws.send(JSON.stringify({ id: id++, ...m }));
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    state.log.push(m.type);
    if (m.type === 'codeIssued') { state.code = m.code; state.sessionId = m.sessionId; }
    if (m.type === 'sessionJoined') send({ type: 'requestMode', sessionId: m.sessionId, mode: 'fullControl', acknowledgeWarnings: [] });
    if (m.type === 'warnings') send({ type: 'requestMode', sessionId: m.sessionId, mode: m.mode, acknowledgeWarnings: m.warnings });
    if (m.type === 'sessionActive') {
      state.active = true;
      const r = new WebSocket(`${m.relay.wssUrl}?ticket=${encodeURIComponent(m.relay.ticket)}`);
      r.binaryType = 'arraybuffer';
      state.relay = r;
    }
    if (m.type === 'sessionEnded') state.ended = m;
  };
  ws.send(JSON.stringify({ type: 'authenticate', token }));
  send({ type: 'requestCode' });
  state.end = () => send({ type: 'endSession', sessionId: state.sessionId });
  state.close = () => {
    try { state.relay?.close(1000); } catch { /* closed */ }
    try { ws.close(1000); } catch { /* closed */ }
  };
  await until('a code', () => state.code);
  return state;
}

test('without the Administrator box the console shows the API\'s 403 and changes nothing', async () => {
  await withConsole('not-admin', async (page) => {
    await page.getByRole('link', { name: 'Settings', exact: true }).click();
    await page.locator('#error').waitFor();
    assert.match(await page.textContent('#error'), /lacks the permission.*\(Forbidden, 403\)/);
    await shot(page, 'not-admin');
  }, { upn: 'nina@contoso.com', administrator: false });
});

test('Settings: save the three switches, read them back through the API, see the audit event', async () => {
  const before = (await api('GET', '/beta/deviceManagement/remoteAssistanceSettings')).body;
  assert.equal(before.remoteAssistanceState, 'enabled', 'the demo tenant enables Remote Help');
  await withConsole('settings', async (page) => {
    await open(page, PAGE.settings);
    assert.equal(await page.getByLabel('Enable Remote Help').isChecked(), true);
    assert.equal(await page.getByLabel('Disable chat').isChecked(), false);
    await page.getByLabel('Disable chat').check();
    await page.getByRole('button', { name: 'Save' }).click();
    await until('Saved.', async () => (await page.textContent('#settings-status')) === 'Saved.');
    await shot(page, 'settings');
  });
  const after = (await api('GET', '/beta/deviceManagement/remoteAssistanceSettings')).body;
  assert.equal(after.blockChat, true);
  assert.equal(after.remoteAssistanceState, 'enabled');
  assert.equal(after.allowSessionsToUnenrolledDevices, true);
  const events = (await api('GET', "/beta/deviceManagement/auditEvents?$filter=category eq 'RemoteAssistance'")).body.value;
  const last = events.at(-1);
  assert.equal(last.activity, 'Patch remoteAssistanceSettings');
  assert.equal(last.actor.userPrincipalName, ADMIN_UPN);
  // Back to chat allowed, through the API, for the tests that follow.
  assert.equal((await api('PATCH', '/beta/deviceManagement/remoteAssistanceSettings', { blockChat: false })).status, 200);
});

test('a session run over /v1/signal shows in Monitor (active, chart) and in Sessions (search, filter, sort, CSV)', async () => {
  const helper = await startScriptedHelper(env.HELPER_TOKEN);
  const sharer = await startFakeSharer({ server: URL_BASE, token: env.SHARER_TOKEN, code: helper.code });
  let waiting = null;
  try {
    await until(`the session to be active (helper saw ${helper.log.join(', ')}; sharer ${sharer.log.join(', ')})`, () => helper.active && sharer.mode, 20_000);
    // A second code nobody redeems: a waiting session.
    waiting = await startScriptedHelper(env.HELPER_TOKEN);
    await withConsole('monitor-sessions', async (page) => {
      await open(page, PAGE.monitor);
      assert.ok(Number(await page.textContent('#fig-active')) >= 1, 'an active session');
      assert.ok(Number(await page.textContent('#fig-waiting')) >= 1, 'a waiting session');
      assert.ok(Number(await page.textContent('#fig-total')) >= 1);
      // The chart: today's bar has a full-control part, and the table under it says the same.
      const today = new Date().toISOString().slice(0, 10);
      const fullToday = await page.locator('#chart-table tbody tr', { hasText: today }).locator('td').nth(1).textContent();
      assert.ok(Number(fullToday) >= 1, `full control today: ${fullToday}`);
      assert.ok(await page.locator('#chart svg rect[data-mode="fullControl"]').count() >= 1, 'a full-control bar');
      await shot(page, 'monitor');

      await open(page, PAGE.sessions);
      const row = page.locator(`#sessions-table tbody tr[data-id="${helper.sessionId}"]`);
      await row.waitFor();
      assert.match(await row.textContent(), /helen@contoso\.com.*sam@contoso\.com/);
      assert.match(await row.textContent(), /Full control/);
      assert.match(await row.textContent(), /active/);
      // Search and filter narrow it; a search that matches nothing empties the table.
      await page.getByLabel('Search').fill('nobody-like-this');
      await apply(page);
      await page.locator('#sessions-table tbody td.empty').waitFor();
      await page.getByLabel('Search').fill('sam@');
      await page.getByLabel('State').selectOption('active');
      await apply(page);
      await page.locator('#sessions-table tbody tr', { hasText: 'helen@contoso.com' }).first().waitFor();
      // Sorting by helper marks the column.
      await page.getByRole('button', { name: /^Helper/ }).click();
      await page.waitForSelector('#sessions-table th[aria-sort="ascending"] button[data-column="helperEmail"]');
      await shot(page, 'sessions');
      // CSV export: a download with a header row and the session.
      const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export CSV' }).click()]);
      const csv = fs.readFileSync(await download.path(), 'utf8');
      assert.match(csv.split('\r\n')[0], /^Session id,Helper,Sharer,Device,Start,End,Type,End reason,State/);
      assert.match(csv, /helen@contoso\.com,sam@contoso\.com/);
    });
    helper.end();
    await until('the session to end', () => helper.ended && sharer.ended, 15_000);
    await withConsole('sessions-ended', async (page) => {
      await open(page, PAGE.sessions);
      await page.getByLabel('State').selectOption('ended');
      await apply(page);
      const row = page.locator(`#sessions-table tbody tr[data-id="${helper.sessionId}"]`);
      await row.waitFor();
      assert.match(await row.textContent(), /ended/);
      assert.equal(await row.locator('td').nth(4).textContent().then((t) => t === '—'), false, 'an end time');
    });
  } finally {
    helper.close();
    sharer.close();
    waiting?.close();
  }
});

test('Roles: create a custom role with implications shown, and an assignment; both read back through the API', async () => {
  const group = (await api('POST', '/beta/groups', { displayName: 'Tier 2' })).body;
  const finance = (await api('POST', '/beta/groups', { displayName: 'Finance' })).body;
  await withConsole('roles', async (page) => {
    await open(page, PAGE.roles);
    // Built-ins are read-only.
    const builtin = page.locator('#roles-table tbody tr', { hasText: 'Help Desk Operator' });
    assert.match(await builtin.textContent(), /Built-in.*Read-only/s);
    const sec = page.locator('#page-roles');
    await sec.locator('#role-name').fill('Tier 2 elevation');
    await sec.getByLabel('Elevation', { exact: true }).check();
    await sec.getByLabel('Offer remote assistance').check();
    // Elevation includes full control and view screen: shown next to them.
    assert.equal(await page.textContent(`[id="imp-Microsoft.Intune_RemoteAssistanceApp_ViewScreen"]`), 'included by Elevation');
    assert.equal(await page.textContent(`[id="imp-Microsoft.Intune_RemoteAssistanceApp_TakeFullControl"]`), 'included by Elevation');
    assert.match(await page.textContent('#role-implied'), /View only, Full control, Elevation/);
    await shot(page, 'roles-editing');
    await page.getByRole('button', { name: 'Create role' }).click();
    await until('the role', async () => (await page.textContent('#role-status')) === 'Created Tier 2 elevation.');
    await page.locator('#roles-table tbody tr', { hasText: 'Tier 2 elevation' }).waitFor();

    await page.locator('#asg-name').fill('Tier 2 helps Finance');
    await page.locator('#asg-role').selectOption({ label: 'Tier 2 elevation' });
    await page.locator('#asg-members').getByLabel('Tier 2').check();
    await page.locator('#asg-scope').selectOption('resourceScope');
    await page.locator('#asg-scope-groups').getByLabel('Finance').check();
    await page.getByRole('button', { name: 'Create assignment' }).click();
    await until('the assignment', async () => (await page.textContent('#asg-status')) === 'Created Tier 2 helps Finance.');
    const row = page.locator('#assignments-table tbody tr', { hasText: 'Tier 2 helps Finance' });
    await row.waitFor();
    assert.match(await row.textContent(), /Tier 2 elevation.*Tier 2.*Finance/s);
    await shot(page, 'roles');

    // Edit the custom role: add View reports (PATCH).
    await page.getByRole('button', { name: 'Edit Tier 2 elevation' }).click();
    assert.equal(await sec.getByLabel('Elevation', { exact: true }).isChecked(), true);
    await sec.getByLabel('View reports').check();
    await page.getByRole('button', { name: 'Save role' }).click();
    await until('the edit', async () => (await page.textContent('#role-status')) === 'Saved Tier 2 elevation.');
    await page.locator('#roles-table tbody tr', { hasText: 'View reports' }).waitFor();
    // Deleting a role that is still assigned is refused by the API, and the page says so.
    page.once('dialog', (d) => d.accept());
    await page.getByRole('button', { name: 'Delete Tier 2 elevation' }).click();
    await until('the refusal', async () => (await page.getAttribute('#role-status', 'data-tone')) === 'error');
    assert.match(await page.textContent('#role-status'), /^Not deleted: .*\(BadRequest, 400\)$/);
    assert.equal(await page.locator('#roles-table tbody tr', { hasText: 'Tier 2 elevation' }).count(), 1);
  });
  const roles = (await api('GET', '/beta/deviceManagement/roleDefinitions')).body.value;
  const role = roles.find((r) => r.displayName === 'Tier 2 elevation');
  assert.ok(role, 'the role exists');
  assert.deepEqual(role.rolePermissions[0].resourceActions[0].allowedResourceActions.sort(),
    ['Microsoft.Intune_RemoteAssistanceApp_Elevation', 'Microsoft.Intune_RemoteTasks_RequestRemoteAssistance',
      'Microsoft.Intune_RemoteAssistance_ViewReports'].sort());
  const asg = (await api('GET', '/beta/deviceManagement/roleAssignments?$expand=roleDefinition')).body.value
    .find((a) => a.displayName === 'Tier 2 helps Finance');
  assert.ok(asg, 'the assignment exists');
  assert.deepEqual(asg.members, [group.id]);
  assert.deepEqual(asg.resourceScopes, [finance.id]);
  assert.equal(asg.roleDefinition.id, role.id);
});

test('Devices and users: enrollment and compliance shown; Request remote assistance reaches the device or says why not', async () => {
  const dev = (await api('POST', '/beta/deviceManagement/managedDevices', {
    azureADDeviceId: 'aad-kiosk-7', deviceName: 'KIOSK-7', operatingSystem: 'Linux', userPrincipalName: 'sam@contoso.com', complianceState: 'noncompliant',
  })).body;
  assert.ok(dev.id);
  await withConsole('devices', async (page) => {
    await open(page, PAGE.devices);
    const row = page.locator('#devices-table tbody tr', { hasText: 'KIOSK-7' });
    await row.waitFor();
    assert.match(await row.textContent(), /Enrolled.*Not compliant/s);
    assert.ok(await page.locator('#users-table tbody tr', { hasText: 'helen@contoso.com' }).count() === 1);
    // No Remote Help app is connected on that device: the API's 409, in words.
    await page.getByRole('button', { name: 'Request remote assistance on KIOSK-7' }).click();
    await until('an answer', async () => (await page.getAttribute('#devices-status', 'data-tone')) === 'error');
    assert.match(await page.textContent('#devices-status'), /KIOSK-7: .*Conflict, 409/);
    await shot(page, 'devices');
  });
  // A device that is connected gets launchRequested when the console asks.
  const connected = (await api('POST', '/beta/deviceManagement/managedDevices', {
    azureADDeviceId: env.ADMIN_DEVICE_ID, deviceName: 'KIOSK-ONLINE', userPrincipalName: 'sam@contoso.com',
  })).body;
  assert.ok(connected.id, JSON.stringify(connected));
  {
    const deviceApp = await startFakeSharer({ server: URL_BASE, token: env.ADMIN_DEVICE_TOKEN });
    try {
      await sleep(300);
      await withConsole('devices-launch', async (page) => {
        await open(page, PAGE.devices);
        await page.getByRole('button', { name: 'Request remote assistance on KIOSK-ONLINE' }).click();
        await until('an answer', async () => (await page.getAttribute('#devices-status', 'data-tone')) === 'ok');
        await until('launchRequested at the device', () => deviceApp.log.some((l) => l.startsWith('signal launchRequested')));
      });
    } finally {
      deviceApp.close();
    }
  }
});

test('What-if: the decision and the rule-by-rule trace', async () => {
  await withConsole('whatif', async (page) => {
    await open(page, PAGE.whatif);
    await page.getByLabel('Helper').fill('helen@contoso.com');
    await page.getByLabel('Sharer').fill('sam@contoso.com');
    await page.getByLabel('Mode').selectOption('fullControl');
    await page.getByRole('button', { name: 'Evaluate' }).click();
    await page.locator('#whatif-result').waitFor();
    assert.match(await page.textContent('#wi-decision'), /^Allowed: View only, Full control/);
    assert.match(await page.getAttribute('#wi-decision', 'data-tone'), /^(allow|warn)$/);
    assert.ok(await page.locator('#wi-rules tbody tr').count() >= 5, 'every rule in the trace');
    assert.match(await page.locator('#wi-rules tbody tr', { hasText: 'remoteHelpEnabled' }).textContent(), /passed/);
    assert.match(await page.locator('#wi-assignments tbody tr', { hasText: 'Help desk helps everyone' }).textContent(), /Yes/);
    await shot(page, 'whatif');
    // Sam has no role: denied, and the trace says by which rule.
    await page.getByLabel('Helper').fill('sam@contoso.com');
    await page.getByLabel('Sharer').fill('helen@contoso.com');
    await page.getByRole('button', { name: 'Evaluate' }).click();
    await until('a deny', async () => (await page.getAttribute('#wi-decision', 'data-tone')) === 'deny');
    assert.match(await page.textContent('#wi-decision'), /^Denied: (noRoleAssignment|notInScope|permissionMissing)/);
  });
});

test('Audit log: the console\'s own changes, filtered by category, with their details', async () => {
  await withConsole('audit', async (page) => {
    await open(page, PAGE.audit);
    assert.ok(await page.locator('#audit-list li').count() >= 3);
    await page.getByLabel('Category').selectOption('Role');
    await apply(page);
    const item = page.locator('#audit-list li', { hasText: 'Create roleDefinition' }).filter({ hasText: 'Tier 2 elevation' }).first();
    await item.waitFor();
    assert.equal(await page.locator('#audit-list li:not([data-category="Role"])').count(), 0, 'only Role events');
    await item.locator('summary').click();
    assert.match(await item.textContent(), /ada@contoso\.com/);
    assert.match(await item.textContent(), /Tier 2 elevation/);
    // A time window in the future holds nothing.
    await page.getByLabel('From').fill('2099-01-01T00:00');
    await apply(page);
    await until('no events', async () => (await page.textContent('#audit-status')) === 'No events match.');
    await page.getByLabel('From').fill('');
    await page.getByLabel('Category').selectOption('');
    await apply(page);
    // Oldest first, 50 a page: the other e2e tests on this server may have written many before.
    const patch = page.locator('#audit-list li', { hasText: 'Patch remoteAssistanceSettings' }).filter({ hasText: 'ada@contoso.com' }).first();
    await until('the console\'s settings change in the log', async () => {
      if (await patch.count()) return true;
      if (await page.isVisible('#audit-more')) {
        await page.click('#audit-more');
        // A page that added nothing (the next page still loading) is looked at again on the next pass.
        await page.waitForFunction((n) => document.querySelectorAll('#audit-list li').length > n, await page.locator('#audit-list li').count(), { timeout: 5_000 }).catch(() => {});
      }
      return false;
    }, 20_000, 50);
    await patch.locator('summary').click();
    // The change, old and new value.
    assert.match(await patch.locator('table').textContent(), /blockChat\s*false\s*true/);
    await shot(page, 'audit');
  });
});

test('dark theme and a tablet: the same pages, readable (screenshots)', async () => {
  await withConsole('dark', async (page) => {
    assert.equal(await page.getAttribute('html', 'data-theme'), 'dark', 'follows the system');
    await open(page, PAGE.monitor);
    await shot(page, 'monitor-dark');
    await open(page, PAGE.roles);
    await shot(page, 'roles-dark');
    // The theme button switches and says what it does.
    await page.getByRole('button', { name: 'Light theme' }).click();
    assert.equal(await page.getAttribute('html', 'data-theme'), 'light');
  }, { colorScheme: 'dark' });
  await withConsole('tablet', async (page) => {
    await open(page, PAGE.sessions);
    await shot(page, 'sessions-tablet');
    await open(page, PAGE.whatif);
    await shot(page, 'whatif-tablet');
    // Every visible form control has a label (an accessible name).
    for (const route of Object.values(PAGE)) {
      await open(page, route);
      const unlabelled = await page.evaluate(() => [...document.querySelectorAll('main input, main select, main button')]
        .filter((e) => e.offsetParent !== null)
        .filter((e) => !(e.labels?.length || e.getAttribute('aria-label') || (e.tagName === 'BUTTON' && e.textContent.trim())))
        .map((e) => e.id || e.outerHTML.slice(0, 80)));
      assert.deepEqual(unlabelled, [], `unlabelled controls on ${route.id}`);
    }
    // Keyboard: the skip link moves focus to the content.
    await page.locator('a.skip').focus();
    await page.keyboard.press('Enter');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'main');
  }, { viewport: { width: 820, height: 1180 } });
});
