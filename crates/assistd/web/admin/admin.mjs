// The admin console (/admin/): signs in with /assets/auth.mjs (OpenID Connect, code + PKCE),
// then shows one page per hash route, each a thin view over the admin API (docs/admin-api.md).
// Decisions and formats are in console.mjs (pure, unit-tested); this file does DOM and fetch.
// Text from the server only ever goes in through textContent or attributes, never as HTML.
import {
  ACTIONS, MODES, MODE_LABELS, PAGES, SCOPE_TYPES,
  apiErrorText, assignmentBody, auditChanges, auditFilter, chartGeometry, decisionText,
  deviceStatus, effectiveActions, formatDuration, formatTime, nextSort, pageInfo, reportRows,
  roleActions, roleBody, routeOf, scopeText, sessionTableColumns, sessionsReportBody, toCsv, whatIfBody, windowRange,
} from './console.mjs';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';

/** Makes an element: `el('td', {class: 'x'}, 'text', child…)`. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')));
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function showError(message) {
  const e = $('error');
  e.textContent = message || '';
  e.hidden = !message;
}

function setStatus(id, text, tone = '') {
  const s = $(id);
  s.textContent = text;
  s.dataset.tone = tone;
}

// ---- sign-in and API ------------------------------------------------------------------

let auth = null;

class ApiError extends Error {
  constructor(status, body) {
    super(apiErrorText(status, body));
    this.status = status;
    this.body = body;
  }
}

/** Calls the admin API with a fresh token; resolves the JSON answer (null for 204). */
async function api(method, path, body) {
  if (!auth) throw new Error('Not signed in.');
  const token = await auth.accessToken();
  const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json;
}

/** Every item of a Graph collection, following `@odata.nextLink` (same origin only). */
async function listAll(path) {
  const out = [];
  let next = path;
  for (let i = 0; next && i < 50; i++) {
    const page = await api('GET', next);
    out.push(...(page?.value ?? []));
    const link = page?.['@odata.nextLink'];
    next = null;
    if (link) {
      const u = new URL(link, location.origin);
      next = `${u.pathname}${u.search}`;
    }
  }
  return out;
}

async function startAuth() {
  let mod;
  try {
    mod = await import('/assets/auth.mjs');
  } catch {
    throw new Error('The sign-in module (/assets/auth.mjs) could not be loaded.');
  }
  auth = await mod.signIn();
  const u = auth.user ?? {};
  $('who').textContent = `${u.name || u.upn || 'Signed in'}${u.upn && u.name && u.name !== u.upn ? ` (${u.upn})` : ''}${u.tenantId ? ` · ${u.tenantId}` : ''}`;
  document.body.dataset.signedIn = 'true';
  const out = $('signout');
  out.hidden = false;
  out.addEventListener('click', async () => {
    out.disabled = true;
    try { await auth.signOut(); } finally { location.reload(); }
  });
}

// ---- theme ----------------------------------------------------------------------------

const THEME_KEY = 'assist-admin-theme';

function applyTheme(theme) {
  const dark = theme === 'dark' || (!theme && matchMedia('(prefers-color-scheme: dark)').matches);
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
  const b = $('theme');
  b.setAttribute('aria-pressed', String(dark));
  b.textContent = dark ? 'Light theme' : 'Dark theme';
}

function initTheme() {
  let saved = null;
  try { saved = localStorage.getItem(THEME_KEY); } catch { /* storage blocked */ }
  applyTheme(saved);
  $('theme').addEventListener('click', () => {
    const next = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
    try { localStorage.setItem(THEME_KEY, next); } catch { /* storage blocked */ }
    applyTheme(next);
  });
}

// ---- router ---------------------------------------------------------------------------

const loaders = {};

async function show(route, { focus = true } = {}) {
  for (const p of PAGES) $(`page-${p.route}`).hidden = p.route !== route;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.route === route) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const title = PAGES.find((p) => p.route === route)?.title ?? '';
  document.title = `${title} · Assist admin`;
  document.body.dataset.page = route;
  showError('');
  if (focus) $('main').focus({ preventScroll: true });
  if (!auth) return;
  try {
    document.body.dataset.loading = route;
    await loaders[route]?.();
  } catch (e) {
    showError(e.status === 403
      ? `${e.message} Sign in as a Global or Intune Administrator, or get a role assignment or permission that allows it.`
      : e.message);
  } finally {
    if (document.body.dataset.loading === route) delete document.body.dataset.loading;
  }
}

// ---- Settings -------------------------------------------------------------------------

loaders.settings = async () => {
  const s = await api('GET', '/beta/deviceManagement/remoteAssistanceSettings');
  $('set-enabled').checked = s.remoteAssistanceState === 'enabled';
  $('set-unenrolled').checked = !!s.allowSessionsToUnenrolledDevices;
  $('set-blockchat').checked = !!s.blockChat;
  setStatus('settings-status', '');
};

$('settings-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const save = $('settings-save');
  save.disabled = true;
  setStatus('settings-status', 'Saving…');
  try {
    const s = await api('PATCH', '/beta/deviceManagement/remoteAssistanceSettings', {
      '@odata.type': '#microsoft.graph.remoteAssistanceSettings',
      remoteAssistanceState: $('set-enabled').checked ? 'enabled' : 'disabled',
      allowSessionsToUnenrolledDevices: $('set-unenrolled').checked,
      blockChat: $('set-blockchat').checked,
    });
    $('set-enabled').checked = s.remoteAssistanceState === 'enabled';
    setStatus('settings-status', 'Saved.', 'ok');
  } catch (e) {
    setStatus('settings-status', `Not saved: ${e.message}`, 'error');
  } finally {
    save.disabled = false;
  }
});

// ---- Monitor --------------------------------------------------------------------------

const MODE_CLASS = { viewOnly: 'm-view', fullControl: 'm-full', elevation: 'm-elev', unattended: 'm-unat' };

function drawChart(days) {
  const g = chartGeometry(days, { width: 760, height: 260 });
  const root = svg('svg', { viewBox: `0 0 ${g.width} ${g.height}`, role: 'img', 'aria-labelledby': 'chart-caption', class: 'chart-svg' });
  for (const t of g.ticks) {
    root.append(svg('line', { x1: g.plot.x, x2: g.plot.x + g.plot.width, y1: t.y, y2: t.y, class: 'grid' }));
    root.append(svg('text', { x: g.plot.x - 6, y: t.y + 4, 'text-anchor': 'end', class: 'axis' }, String(t.value)));
  }
  for (const b of g.bars) {
    const group = svg('g', { class: 'bar' });
    group.append(svg('title', {}, `${b.date}: ${b.total} session${b.total === 1 ? '' : 's'}`));
    for (const r of b.rects) {
      group.append(svg('rect', { x: r.x, y: r.y, width: r.width, height: Math.max(0.5, r.height), class: MODE_CLASS[r.mode], 'data-mode': r.mode, 'data-value': r.value }));
    }
    root.append(group);
  }
  for (const l of g.labels) root.append(svg('text', { x: l.x, y: l.y, 'text-anchor': 'middle', class: 'axis' }, l.text));
  root.append(svg('line', { x1: g.plot.x, x2: g.plot.x + g.plot.width, y1: g.plot.y + g.plot.height, y2: g.plot.y + g.plot.height, class: 'baseline' }));
  $('chart').replaceChildren(root);
  $('chart-legend').replaceChildren(...MODES.map((m) => el('li', {}, el('span', { class: `swatch ${MODE_CLASS[m]}`, 'aria-hidden': 'true' }), MODE_LABELS[m])));
  $('chart-table').tBodies[0].replaceChildren(...days.map((d) => el('tr', {},
    el('th', { scope: 'row', text: d.date }), ...MODES.map((m) => el('td', { text: d[m] ?? 0 })), el('td', { text: d.total ?? 0 }))));
}

loaders.monitor = async () => {
  const r = windowRange($('monitor-window').value, Date.now());
  const q = (from, to) => `from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`;
  const [summary, perDay] = await Promise.all([
    api('GET', `/assist/v1/reports/sessionSummary?${q(r.from, r.to)}`),
    api('GET', `/assist/v1/reports/sessionsPerDay?${q(r.chartFrom, r.chartTo)}`),
  ]);
  $('fig-active').textContent = summary.activeSessions;
  $('fig-waiting').textContent = summary.waitingSessions;
  $('fig-total').textContent = summary.totalSessions;
  $('fig-average').textContent = summary.averageSessionSeconds > 0 ? formatDuration(summary.averageSessionSeconds) : '—';
  drawChart(perDay.value ?? []);
};
$('monitor-window').addEventListener('change', () => show('monitor', { focus: false }));
$('monitor-refresh').addEventListener('click', () => show('monitor', { focus: false }));

// ---- Remote Help sessions -------------------------------------------------------------

const sessions = { search: '', state: '', mode: '', sort: { column: 'startDateTime', desc: true }, page: 0, pageSize: 25, columns: null, total: 0 };

/** The table's columns: ours, then any further report column the server lists (quality). */
async function sessionColumns() {
  if (sessions.columns) return sessions.columns;
  const probe = await api('POST', '/beta/deviceManagement/reports/getRemoteAssistanceSessionsReport', { top: 1 });
  sessions.columns = sessionTableColumns(probe?.Schema);
  return sessions.columns;
}

function cellText(column, v) {
  if (column.endsWith('DateTime')) return formatTime(v);
  if (column === 'remoteAssistanceSessionType') return MODE_LABELS[v] ?? v ?? '—';
  return v === null || v === undefined || v === '' ? '—' : String(v);
}

loaders.sessions = async () => {
  const cols = await sessionColumns();
  const body = sessionsReportBody({ ...sessions, columns: ['id', ...cols.map((c) => c.column)] });
  const report = await api('POST', '/beta/deviceManagement/reports/getRemoteAssistanceSessionsReport', body);
  sessions.total = report.TotalRowCount ?? 0;
  const info = pageInfo(sessions.total, sessions.page, sessions.pageSize);
  const head = $('sessions-table').tHead.rows[0];
  head.replaceChildren(...cols.map((c) => {
    const sorted = sessions.sort.column === c.column;
    const th = el('th', { scope: 'col', 'aria-sort': sorted ? (sessions.sort.desc ? 'descending' : 'ascending') : 'none' },
      el('button', { type: 'button', class: 'sort', 'data-column': c.column, onclick: () => { sessions.sort = nextSort(sessions.sort, c.column); sessions.page = 0; show('sessions', { focus: false }); } },
        c.header, el('span', { 'aria-hidden': 'true', class: 'arrow', text: sorted ? (sessions.sort.desc ? ' ▼' : ' ▲') : '' })));
    return th;
  }));
  const rows = reportRows(report);
  const tbody = $('sessions-table').tBodies[0];
  if (rows.length === 0) {
    tbody.replaceChildren(el('tr', {}, el('td', { colspan: cols.length, class: 'empty', text: 'No sessions match.' })));
  } else {
    tbody.replaceChildren(...rows.map((r) => el('tr', { 'data-id': r.id ?? '' }, ...cols.map((c) => el('td', { class: c.column.endsWith('DateTime') ? 'time' : null, text: cellText(c.column, r[c.column]) })))));
  }
  $('sessions-range').textContent = sessions.total ? `Rows ${info.first}–${info.last} of ${sessions.total}` : 'No rows';
  $('sessions-prev').disabled = !info.hasPrev;
  $('sessions-next').disabled = !info.hasNext;
};

$('sessions-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessions.search = $('sessions-search').value;
  sessions.state = $('sessions-state').value;
  sessions.mode = $('sessions-mode').value;
  sessions.page = 0;
  show('sessions', { focus: false });
});
$('sessions-prev').addEventListener('click', () => { sessions.page = Math.max(0, sessions.page - 1); show('sessions', { focus: false }); });
$('sessions-next').addEventListener('click', () => { sessions.page += 1; show('sessions', { focus: false }); });
$('sessions-pagesize').addEventListener('change', () => { sessions.pageSize = Number($('sessions-pagesize').value) || 25; sessions.page = 0; show('sessions', { focus: false }); });
$('sessions-csv').addEventListener('click', async () => {
  try {
    const cols = await sessionColumns();
    const all = [];
    for (let page = 0; page < 100; page++) {
      const body = sessionsReportBody({ ...sessions, page, pageSize: 1000, columns: ['id', ...cols.map((c) => c.column)] });
      const report = await api('POST', '/beta/deviceManagement/reports/getRemoteAssistanceSessionsReport', body);
      const rows = reportRows(report);
      all.push(...rows);
      if (rows.length < 1000 || all.length >= (report.TotalRowCount ?? 0)) break;
    }
    const csv = toCsv([{ column: 'id', header: 'Session id' }, ...cols], all);
    const url = URL.createObjectURL(new Blob([csv], { type: 'text/csv;charset=utf-8' }));
    const a = el('a', { href: url, download: `remote-help-sessions-${new Date().toISOString().slice(0, 10)}.csv`, class: 'visually-hidden' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (e) {
    showError(`Export failed: ${e.message}`);
  }
});

// ---- Roles ----------------------------------------------------------------------------

const roles = { definitions: [], groups: [], editing: null };

function renderActionBoxes() {
  const fs = $('role-actions');
  const legend = fs.querySelector('legend');
  const groups = [...new Set(ACTIONS.map((a) => a.group))];
  fs.replaceChildren(legend, ...groups.map((g) => el('div', { class: 'action-group' },
    el('p', { class: 'group-name', text: g }),
    ...ACTIONS.filter((a) => a.group === g).map((a) => el('div', { class: 'check' },
      el('input', { type: 'checkbox', id: `act-${a.id}`, value: a.id, name: 'action', onchange: updateImplied }),
      el('label', { for: `act-${a.id}`, text: a.label }),
      el('span', { class: 'implied-note', id: `imp-${a.id}` }))))));
  updateImplied();
}

function checkedActions() {
  return [...document.querySelectorAll('#role-actions input[name=action]:checked')].map((i) => i.value);
}

function updateImplied() {
  const { implied, modes } = effectiveActions(checkedActions());
  for (const a of ACTIONS) {
    const note = $(`imp-${a.id}`);
    const by = implied.get(a.id);
    note.textContent = by ? `included by ${ACTIONS.find((x) => x.id === by)?.label}` : '';
    $(`act-${a.id}`).closest('.check').classList.toggle('implied', !!by);
  }
  $('role-implied').textContent = modes.length
    ? `Grants the modes: ${modes.map((m) => MODE_LABELS[m]).join(', ')}. A higher mode includes every lower one.`
    : 'Grants no session mode.';
}

function actionLabel(id) {
  return ACTIONS.find((a) => a.id === id)?.label ?? id;
}

function startEdit(role) {
  roles.editing = role;
  $('role-form-h').textContent = `Edit ${role.displayName}`;
  $('role-save').textContent = 'Save role';
  $('role-cancel').hidden = false;
  $('role-name').value = role.displayName ?? '';
  $('role-description').value = role.description ?? '';
  const acts = new Set(roleActions(role));
  for (const i of document.querySelectorAll('#role-actions input[name=action]')) i.checked = acts.has(i.value);
  updateImplied();
  $('role-name').focus();
}

function stopEdit() {
  roles.editing = null;
  $('role-form').reset();
  $('role-form-h').textContent = 'Create a custom role';
  $('role-save').textContent = 'Create role';
  $('role-cancel').hidden = true;
  updateImplied();
}

function groupPicker(fieldsetId, prefix) {
  const fs = $(fieldsetId);
  const legend = fs.querySelector('legend');
  const boxes = roles.groups.length
    ? roles.groups.map((g) => el('div', { class: 'check' },
      el('input', { type: 'checkbox', id: `${prefix}-${g.id}`, value: g.id }),
      el('label', { for: `${prefix}-${g.id}`, text: g.displayName })))
    : [el('p', { class: 'help', text: 'No groups yet: create them through /beta/groups or your directory sync.' })];
  fs.replaceChildren(legend, ...boxes);
}

function pickedGroups(fieldsetId) {
  return [...document.querySelectorAll(`#${fieldsetId} input:checked`)].map((i) => i.value);
}

loaders.roles = async () => {
  const [defs, assignments, groups] = await Promise.all([
    listAll('/beta/deviceManagement/roleDefinitions'),
    listAll('/beta/deviceManagement/roleAssignments?$expand=roleDefinition'),
    listAll('/beta/groups'),
  ]);
  roles.definitions = defs;
  roles.groups = groups;
  const groupName = (id) => groups.find((g) => g.id === id)?.displayName ?? id;
  const roleName = (id) => defs.find((d) => d.id === id)?.displayName ?? id;
  $('roles-table').tBodies[0].replaceChildren(...defs.map((d) => {
    const acts = roleActions(d);
    const { modes } = effectiveActions(acts);
    const builtIn = d.isBuiltIn || d.isBuiltInRoleDefinition;
    const actions = builtIn ? el('span', { class: 'muted', text: 'Read-only' }) : el('span', { class: 'row-actions' },
      el('button', { type: 'button', class: 'secondary', 'aria-label': `Edit ${d.displayName}`, onclick: () => startEdit(d) }, 'Edit'),
      el('button', { type: 'button', class: 'secondary danger', 'aria-label': `Delete ${d.displayName}`, onclick: () => deleteRole(d) }, 'Delete'));
    return el('tr', { 'data-id': d.id },
      el('th', { scope: 'row' }, d.displayName, d.description ? el('span', { class: 'sub', text: d.description }) : ''),
      el('td', { text: builtIn ? 'Built-in' : 'Custom' }),
      el('td', { text: acts.map(actionLabel).join(', ') || '—' }),
      el('td', { text: modes.map((m) => MODE_LABELS[m]).join(', ') || '—' }),
      el('td', {}, actions));
  }));
  $('assignments-table').tBodies[0].replaceChildren(...(assignments.length ? assignments.map((a) => el('tr', { 'data-id': a.id },
    el('th', { scope: 'row', text: a.displayName }),
    el('td', { text: roleName(a.roleDefinition?.id ?? '') }),
    el('td', { text: (a.members ?? []).map(groupName).join(', ') || '—' }),
    el('td', { text: scopeText(a, groupName) }),
    el('td', {}, el('button', { type: 'button', class: 'secondary danger', 'aria-label': `Delete ${a.displayName}`, onclick: () => deleteAssignment(a) }, 'Delete'))))
    : [el('tr', {}, el('td', { colspan: 5, class: 'empty', text: 'No assignments yet.' }))]));
  const sel = $('asg-role');
  const current = sel.value;
  sel.replaceChildren(...defs.map((d) => el('option', { value: d.id, text: d.displayName })));
  if (current) sel.value = current;
  const scope = $('asg-scope');
  if (!scope.options.length) {
    scope.replaceChildren(...SCOPE_TYPES.map((s) => el('option', { value: s.id, text: s.label })));
    scope.addEventListener('change', () => { $('asg-scope-groups').hidden = scope.value !== 'resourceScope'; });
  }
  groupPicker('asg-members', 'mem');
  groupPicker('asg-scope-groups', 'scp');
  $('asg-scope-groups').hidden = scope.value !== 'resourceScope';
};

async function deleteRole(d) {
  if (!confirm(`Delete the role "${d.displayName}"?`)) return;
  try {
    await api('DELETE', `/beta/deviceManagement/roleDefinitions/${encodeURIComponent(d.id)}`);
    setStatus('role-status', `Deleted ${d.displayName}.`, 'ok');
  } catch (e) {
    setStatus('role-status', `Not deleted: ${e.message}`, 'error');
  }
  await show('roles', { focus: false });
}

async function deleteAssignment(a) {
  if (!confirm(`Delete the assignment "${a.displayName}"?`)) return;
  try {
    await api('DELETE', `/beta/deviceManagement/roleAssignments/${encodeURIComponent(a.id)}`);
    setStatus('asg-status', `Deleted ${a.displayName}.`, 'ok');
  } catch (e) {
    setStatus('asg-status', `Not deleted: ${e.message}`, 'error');
  }
  await show('roles', { focus: false });
}

$('role-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  let body;
  try {
    body = roleBody({ displayName: $('role-name').value, description: $('role-description').value, actions: checkedActions() });
  } catch (e) {
    setStatus('role-status', e.message, 'error');
    return;
  }
  try {
    if (roles.editing) {
      await api('PATCH', `/beta/deviceManagement/roleDefinitions/${encodeURIComponent(roles.editing.id)}`, body);
      setStatus('role-status', `Saved ${body.displayName}.`, 'ok');
    } else {
      await api('POST', '/beta/deviceManagement/roleDefinitions', body);
      setStatus('role-status', `Created ${body.displayName}.`, 'ok');
    }
    stopEdit();
    await show('roles', { focus: false });
  } catch (e) {
    setStatus('role-status', `Not saved: ${e.message}`, 'error');
  }
});
$('role-cancel').addEventListener('click', stopEdit);

$('assignment-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  let body;
  try {
    body = assignmentBody({
      displayName: $('asg-name').value, roleId: $('asg-role').value, members: pickedGroups('asg-members'),
      scopeType: $('asg-scope').value, scopeGroups: pickedGroups('asg-scope-groups'),
    });
  } catch (e) {
    setStatus('asg-status', e.message, 'error');
    return;
  }
  try {
    await api('POST', '/beta/deviceManagement/roleAssignments', body);
    setStatus('asg-status', `Created ${body.displayName}.`, 'ok');
    $('assignment-form').reset();
    await show('roles', { focus: false });
  } catch (e) {
    setStatus('asg-status', `Not saved: ${e.message}`, 'error');
  }
});

// ---- Devices and users ----------------------------------------------------------------

async function requestAssistance(d, button) {
  button.disabled = true;
  setStatus('devices-status', `Asking ${d.deviceName} to start Remote Help…`);
  try {
    await api('POST', `/beta/deviceManagement/managedDevices/${encodeURIComponent(d.id)}/requestRemoteAssistance`);
    setStatus('devices-status', `${d.deviceName} was asked. Open the helper page (/helper/) to follow the session once its user answers.`, 'ok');
  } catch (e) {
    setStatus('devices-status', `${d.deviceName}: ${e.message}`, 'error');
  } finally {
    button.disabled = false;
  }
}

loaders.devices = async () => {
  const [devices, users] = await Promise.all([
    listAll('/beta/deviceManagement/managedDevices'),
    listAll('/beta/users'),
  ]);
  $('devices-table').tBodies[0].replaceChildren(...(devices.length ? devices.map((d) => {
    const st = deviceStatus(d);
    const b = el('button', { type: 'button', 'aria-label': `Request remote assistance on ${d.deviceName}` }, 'Request remote assistance');
    b.addEventListener('click', () => requestAssistance(d, b));
    return el('tr', { 'data-id': d.id },
      el('th', { scope: 'row' }, d.deviceName, el('span', { class: 'sub', text: d.azureADDeviceId })),
      el('td', { text: d.userPrincipalName || '—' }),
      el('td', { text: [d.operatingSystem, d.osVersion].filter(Boolean).join(' ') || '—' }),
      el('td', {}, el('span', { class: `pill ${st.enrolled ? 'ok' : 'warn'}`, text: st.enrollment })),
      el('td', {}, el('span', { class: `pill ${st.compliance === 'Compliant' ? 'ok' : 'warn'}`, text: st.compliance })),
      el('td', {}, b));
  }) : [el('tr', {}, el('td', { colspan: 6, class: 'empty', text: 'No managed devices.' }))]));
  $('users-table').tBodies[0].replaceChildren(...users.map((u) => el('tr', { 'data-id': u.id },
    el('th', { scope: 'row', text: u.displayName }),
    el('td', { text: u.userPrincipalName }),
    el('td', { text: u.jobTitle || '—' }),
    el('td', { text: u.companyName || '—' }),
    el('td', { text: u.accountEnabled === false ? 'No' : 'Yes' }))));
};

// ---- What-if --------------------------------------------------------------------------

loaders.whatif = async () => {
  const [users, devices] = await Promise.all([
    listAll('/beta/users?$select=userPrincipalName,displayName'),
    listAll('/beta/deviceManagement/managedDevices?$select=azureADDeviceId,deviceName'),
  ]);
  $('wi-users').replaceChildren(...users.map((u) => el('option', { value: u.userPrincipalName, label: u.displayName })));
  $('wi-devices').replaceChildren(...devices.map((d) => el('option', { value: d.azureADDeviceId, label: d.deviceName })));
};

$('whatif-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError('');
  try {
    const body = whatIfBody({ helper: $('wi-helper').value, sharer: $('wi-sharer').value, device: $('wi-device').value, mode: $('wi-mode').value });
    const r = await api('POST', '/assist/v1/policy/evaluate', body);
    const d = decisionText(r);
    const p = $('wi-decision');
    p.textContent = d.text;
    p.dataset.tone = d.tone;
    $('wi-rules').tBodies[0].replaceChildren(...(r.rules ?? []).map((rule) => el('tr', { 'data-outcome': rule.outcome },
      el('td', { text: rule.number ?? '' }), el('th', { scope: 'row', text: rule.rule }),
      el('td', {}, el('span', { class: `pill ${rule.outcome === 'passed' ? 'ok' : rule.outcome === 'failed' ? 'bad' : 'warn'}`, text: rule.outcome })),
      el('td', { text: rule.detail ?? '' }))));
    const yes = (v) => (v ? 'Yes' : 'No');
    $('wi-assignments').tBodies[0].replaceChildren(...((r.assignments ?? []).length ? r.assignments.map((a) => el('tr', {},
      el('th', { scope: 'row', text: a.displayName }), el('td', { text: yes(a.helperIsMember) }), el('td', { text: yes(a.inScope) }),
      el('td', { text: yes(a.grantsRequestedMode) }), el('td', { text: yes(a.matched) })))
      : [el('tr', {}, el('td', { colspan: 5, class: 'empty', text: 'No role assignments.' }))]));
    $('whatif-result').hidden = false;
  } catch (e) {
    showError(e.message);
  }
});

// ---- Audit log ------------------------------------------------------------------------

const audit = { next: null };

function localInputToIso(v) {
  return v ? new Date(v).toISOString() : '';
}

function auditItem(e) {
  const changes = auditChanges(e);
  const table = changes.length ? el('table', { class: 'data compact' },
    el('thead', {}, el('tr', {}, ...['Resource', 'Property', 'Old value', 'New value'].map((h) => el('th', { scope: 'col', text: h })))),
    el('tbody', {}, ...changes.map((c) => el('tr', {}, el('td', { text: c.resource }), el('td', { text: c.property }), el('td', { text: c.oldValue }), el('td', { text: c.newValue })))))
    : el('p', { class: 'help', text: 'No property changes recorded.' });
  return el('li', { 'data-category': e.category ?? '' },
    el('details', {},
      el('summary', {},
        el('span', { class: 'when', text: formatTime(e.activityDateTime) }),
        el('span', { class: 'what', text: e.activity ?? e.displayName }),
        el('span', { class: 'pill', text: e.category ?? '' }),
        el('span', { class: 'actor', text: e.actor?.userPrincipalName ?? e.actor?.applicationId ?? '' })),
      el('dl', { class: 'kv' },
        el('dt', { text: 'Result' }), el('dd', { text: e.activityResult ?? '' }),
        el('dt', { text: 'Operation' }), el('dd', { text: e.activityOperationType ?? '' }),
        el('dt', { text: 'Component' }), el('dd', { text: e.componentName ?? '' }),
        el('dt', { text: 'Actor' }), el('dd', { text: `${e.actor?.userPrincipalName ?? '—'} (${e.actor?.userId ?? 'no id'})` }),
        el('dt', { text: 'Correlation id' }), el('dd', { text: e.correlationId ?? '' }),
        el('dt', { text: 'Event id' }), el('dd', { text: e.id ?? '' })),
      table));
}

async function auditPage(path, append) {
  const page = await api('GET', path);
  const items = (page?.value ?? []).map(auditItem);
  if (append) $('audit-list').append(...items);
  else $('audit-list').replaceChildren(...items);
  const link = page?.['@odata.nextLink'];
  audit.next = link ? (() => { const u = new URL(link, location.origin); return `${u.pathname}${u.search}`; })() : null;
  $('audit-more').hidden = !audit.next;
  const n = $('audit-list').children.length;
  $('audit-status').textContent = n ? `${n} event${n === 1 ? '' : 's'}${page['@odata.count'] !== undefined ? ` of ${page['@odata.count']}` : ''}` : 'No events match.';
}

loaders.audit = async () => {
  const filter = auditFilter({ from: localInputToIso($('audit-from').value), to: localInputToIso($('audit-to').value), category: $('audit-category').value });
  const q = new URLSearchParams({ $top: '50', $count: 'true' });
  if (filter) q.set('$filter', filter);
  await auditPage(`/beta/deviceManagement/auditEvents?${q.toString().replaceAll('+', '%20')}`, false);
};
$('audit-form').addEventListener('submit', (ev) => { ev.preventDefault(); show('audit', { focus: false }); });
$('audit-more').addEventListener('click', async () => {
  if (!audit.next) return;
  try { await auditPage(audit.next, true); } catch (e) { showError(e.message); }
});

// ---- start ----------------------------------------------------------------------------

initTheme();
renderActionBoxes();
window.addEventListener('hashchange', () => show(routeOf(location.hash)));
show(routeOf(location.hash), { focus: false });
startAuth()
  .then(() => show(routeOf(location.hash), { focus: false }))
  .catch((e) => {
    $('who').textContent = 'Not signed in';
    showError(`Sign-in failed: ${e.message}`);
  });
