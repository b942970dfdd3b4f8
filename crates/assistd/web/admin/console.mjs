// Pure functions of the admin console (/admin/): routes, API request bodies and OData filters,
// role permissions and their implications, the Monitor chart's geometry, CSV export and
// formatting. No DOM and no fetch here, so node imports this file for unit tests
// (tests/e2e/admin-unit.test.mjs). The API is in docs/admin-api.md.

/** The console's pages: route (the URL's hash), title. */
export const PAGES = Object.freeze([
  { route: 'settings', title: 'Settings' },
  { route: 'monitor', title: 'Monitor' },
  { route: 'sessions', title: 'Remote Help sessions' },
  { route: 'roles', title: 'Roles' },
  { route: 'devices', title: 'Devices and users' },
  { route: 'whatif', title: 'What-if' },
  { route: 'audit', title: 'Audit log' },
]);

/** The page a location hash (`#/monitor`, `#monitor`, '') shows; unknown → settings. */
export function routeOf(hash) {
  const name = String(hash || '').replace(/^#\/?/, '').split(/[/?]/)[0];
  return PAGES.some((p) => p.route === name) ? name : 'settings';
}

/** The session modes, lowest first; each implies the ones before it. */
export const MODES = Object.freeze(['viewOnly', 'fullControl', 'elevation', 'unattended']);

/** Words for each mode. */
export const MODE_LABELS = Object.freeze({
  viewOnly: 'View only',
  fullControl: 'Full control',
  elevation: 'Elevation',
  unattended: 'Unattended',
});

const RA = 'Microsoft.Intune_RemoteAssistanceApp_';

/**
 * The Intune resource actions a custom role can hold, as the admin center groups them:
 * `implies` lists what each one brings with it (the mode lattice: Unattended ⇒ Elevation ⇒
 * Take full control ⇒ View screen).
 */
export const ACTIONS = Object.freeze([
  { id: `${RA}ViewScreen`, group: 'Remote Help app', label: 'View screen', mode: 'viewOnly', implies: [] },
  { id: `${RA}TakeFullControl`, group: 'Remote Help app', label: 'Take full control', mode: 'fullControl', implies: [`${RA}ViewScreen`] },
  { id: `${RA}Elevation`, group: 'Remote Help app', label: 'Elevation', mode: 'elevation', implies: [`${RA}TakeFullControl`, `${RA}ViewScreen`] },
  { id: `${RA}Unattended`, group: 'Remote Help app', label: 'Unattended control', mode: 'unattended', implies: [`${RA}Elevation`, `${RA}TakeFullControl`, `${RA}ViewScreen`] },
  { id: 'Microsoft.Intune_RemoteTasks_RequestRemoteAssistance', group: 'Remote tasks', label: 'Offer remote assistance', implies: [] },
  { id: 'Microsoft.Intune_RemoteAssistance_Read', group: 'Remote assistance', label: 'Read', implies: [] },
  { id: 'Microsoft.Intune_RemoteAssistance_Update', group: 'Remote assistance', label: 'Update', implies: [] },
  { id: 'Microsoft.Intune_RemoteAssistance_ViewReports', group: 'Remote assistance', label: 'View reports', implies: [] },
]);

/** The canonical spelling of a resource action (the API matches ignoring ASCII case). */
export function canonicalAction(name) {
  const lower = String(name).toLowerCase();
  return ACTIONS.find((a) => a.id.toLowerCase() === lower)?.id ?? String(name);
}

/**
 * What a set of checked actions amounts to: `effective` (checked plus implied), `implied`
 * (implied by a checked one but not checked itself, with the action that implies it), and the
 * modes it grants.
 */
export function effectiveActions(checked) {
  const set = new Set([...checked].map(canonicalAction));
  const implied = new Map();
  for (const a of ACTIONS) {
    if (!set.has(a.id)) continue;
    for (const i of a.implies) if (!set.has(i) && !implied.has(i)) implied.set(i, a.id);
  }
  const effective = new Set([...set, ...implied.keys()]);
  const modes = ACTIONS.filter((a) => a.mode && effective.has(a.id)).map((a) => a.mode);
  return { effective, implied, modes };
}

/** The allowed actions of a role definition (every `rolePermissions[].resourceActions[]`). */
export function roleActions(role) {
  const out = [];
  for (const p of role?.rolePermissions ?? []) {
    for (const ra of p?.resourceActions ?? []) {
      for (const a of ra?.allowedResourceActions ?? []) out.push(canonicalAction(a));
    }
  }
  return [...new Set(out)];
}

/** The body that creates or updates a custom role. */
export function roleBody({ displayName, description, actions }) {
  const name = String(displayName ?? '').trim();
  if (!name) throw new Error('A role needs a name.');
  const allowed = ACTIONS.map((a) => a.id).filter((id) => actions.includes(id));
  if (allowed.length === 0) throw new Error('Choose at least one permission.');
  const body = {
    '@odata.type': '#microsoft.graph.deviceAndAppManagementRoleDefinition',
    displayName: name,
    rolePermissions: [{ resourceActions: [{ allowedResourceActions: allowed, notAllowedResourceActions: [] }] }],
  };
  const d = String(description ?? '').trim();
  if (d) body.description = d;
  return body;
}

/** Assignment scopes: the API's `scopeType` and words for it. */
export const SCOPE_TYPES = Object.freeze([
  { id: 'resourceScope', label: 'Selected groups' },
  { id: 'allLicensedUsers', label: 'All users' },
  { id: 'allDevices', label: 'All devices' },
  { id: 'allDevicesAndLicensedUsers', label: 'All users and all devices' },
]);

/** The body that creates a role assignment. */
export function assignmentBody({ displayName, description, roleId, members, scopeType, scopeGroups }) {
  const name = String(displayName ?? '').trim();
  if (!name) throw new Error('An assignment needs a name.');
  if (!roleId) throw new Error('Choose a role.');
  if (!members?.length) throw new Error('Choose at least one admin group.');
  const type = SCOPE_TYPES.some((s) => s.id === scopeType) ? scopeType : 'resourceScope';
  if (type === 'resourceScope' && !scopeGroups?.length) throw new Error('Choose at least one scope group, or a scope for all users or devices.');
  const body = {
    '@odata.type': '#microsoft.graph.deviceAndAppManagementRoleAssignment',
    displayName: name,
    members: [...members],
    scopeType: type,
    'roleDefinition@odata.bind': roleId,
  };
  if (type === 'resourceScope') body.resourceScopes = [...scopeGroups];
  const d = String(description ?? '').trim();
  if (d) body.description = d;
  return body;
}

/** Words for an assignment's scope, naming groups by `groupName(id)`. */
export function scopeText(a, groupName = (id) => id) {
  const type = a?.scopeType || 'resourceScope';
  if (type !== 'resourceScope') return SCOPE_TYPES.find((s) => s.id === type)?.label ?? type;
  const ids = a?.resourceScopes?.length ? a.resourceScopes : (a?.scopeMembers ?? []);
  return ids.length ? ids.map(groupName).join(', ') : 'No groups';
}

/** A string literal for `$filter`: single quotes, `''` for a quote. */
export function odataString(s) {
  return `'${String(s).replaceAll("'", "''")}'`;
}

/** An ISO time with seconds precision (`2026-12-01T10:00:00Z`), as `$filter` takes it. */
export function isoSeconds(date) {
  return new Date(date).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The audit log's `$filter`: time window `[from, to)` and an optional category. */
export function auditFilter({ from, to, category } = {}) {
  const parts = [];
  if (from) parts.push(`activityDateTime ge ${isoSeconds(from)}`);
  if (to) parts.push(`activityDateTime lt ${isoSeconds(to)}`);
  if (category) parts.push(`category eq ${odataString(category)}`);
  return parts.join(' and ');
}

/** The audit categories Assist writes. */
export const AUDIT_CATEGORIES = Object.freeze(['Directory', 'Device', 'Role', 'RemoteAssistance']);

/** The sessions report's columns shown in the table: column, header. Quality columns last. */
export const SESSION_COLUMNS = Object.freeze([
  { column: 'helperEmail', header: 'Helper' },
  { column: 'sharerEmail', header: 'Sharer' },
  { column: 'sharerDeviceName', header: 'Device' },
  { column: 'startDateTime', header: 'Start' },
  { column: 'endDateTime', header: 'End' },
  { column: 'remoteAssistanceSessionType', header: 'Type' },
  { column: 'endReason', header: 'End reason' },
  { column: 'state', header: 'State' },
]);

/** Report columns the table does not show (ids, split names, the helper's device): the CSV has `id`. */
const HIDDEN_SESSION_COLUMNS = new Set(['id', 'helperTenantId', 'sharerTenantId', 'helperFirstName', 'helperLastName',
  'sharerFirstName', 'sharerLastName', 'helperOs', 'helperDeviceAadId', 'helperDeviceName', 'helperEnrollmentState',
  'sharerDeviceAadId', 'sharerOs', 'sharerEnrollmentState', 'endedBy']);

/**
 * The table's columns for the report's `Schema`: SESSION_COLUMNS, then every column the server
 * lists that the table neither shows nor hides (the quality columns, once the relay reports
 * them), headed by its name in words (`framesDropped` → "Frames dropped").
 */
export function sessionTableColumns(schema) {
  const known = new Set(SESSION_COLUMNS.map((c) => c.column));
  const extra = (schema ?? []).map((c) => c.Column)
    .filter((c) => typeof c === 'string' && !known.has(c) && !HIDDEN_SESSION_COLUMNS.has(c))
    .map((c) => ({ column: c, header: c.replace(/([A-Z])/g, ' $1').toLowerCase().replace(/^./, (x) => x.toUpperCase()) }));
  return [...SESSION_COLUMNS, ...extra];
}

/**
 * The sessions report request for the table's state: `search`, `state` and `mode` filters,
 * sort `{ column, desc }`, `page` (0-based) of `pageSize` rows. `columns` are the report
 * columns the server has (its schema), so quality columns appear once the relay reports them.
 */
export function sessionsReportBody({ search = '', state = '', mode = '', sort, page = 0, pageSize = 25, columns } = {}) {
  const body = { name: 'RemoteAssistanceSessions', skip: page * pageSize, top: pageSize };
  if (columns?.length) body.select = [...columns];
  const filters = [];
  if (state) filters.push(`state eq ${odataString(state)}`);
  if (mode) filters.push(`remoteAssistanceSessionType eq ${odataString(mode)}`);
  if (filters.length) body.filter = filters.join(' and ');
  const s = String(search).trim();
  if (s) body.search = s;
  body.orderBy = [`${sort?.column || 'startDateTime'} ${sort?.desc === false ? 'asc' : 'desc'}`];
  return body;
}

/** The report answer (`Schema` + `Values`) as objects keyed by column. */
export function reportRows(report) {
  const cols = (report?.Schema ?? []).map((c) => c.Column);
  return (report?.Values ?? []).map((v) => Object.fromEntries(cols.map((c, i) => [c, v?.[i] ?? null])));
}

/** The next sort after clicking a column header: same column flips, a new one sorts descending by time, else ascending. */
export function nextSort(current, column) {
  if (current?.column === column) return { column, desc: !current.desc };
  return { column, desc: column.endsWith('DateTime') };
}

/** Page count and the 1-based range shown, for "Rows 26–50 of 73". */
export function pageInfo(total, page, pageSize) {
  const pages = Math.max(1, Math.ceil(total / pageSize));
  const p = Math.min(Math.max(0, page), pages - 1);
  const first = total === 0 ? 0 : p * pageSize + 1;
  const last = Math.min(total, (p + 1) * pageSize);
  return { pages, page: p, first, last, hasPrev: p > 0, hasNext: p < pages - 1 };
}

/**
 * CSV (RFC 4180: CRLF, fields quoted when needed, quotes doubled) of `rows` (objects) for
 * `columns` ({column, header}). A text starting with = + - @ or a tab/CR is prefixed with `'`
 * so a spreadsheet does not run it as a formula.
 */
export function toCsv(columns, rows) {
  const cell = (v) => {
    let s = v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
    if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
    return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  const lines = [columns.map((c) => cell(c.header ?? c.column)).join(',')];
  for (const r of rows) lines.push(columns.map((c) => cell(r[c.column])).join(','));
  return `${lines.join('\r\n')}\r\n`;
}

/** The Monitor windows: key, words, length in ms. */
export const WINDOWS = Object.freeze([
  { id: '24h', label: 'Last 24 hours', ms: 24 * 3600_000 },
  { id: '7d', label: 'Last 7 days', ms: 7 * 86400_000 },
  { id: '30d', label: 'Last 30 days', ms: 30 * 86400_000 },
]);

/**
 * The summary period `[from, to)` for a window ending at `now`, and the chart's period: whole
 * UTC days, from the day `from` falls in to the end of today.
 */
export function windowRange(id, now) {
  const w = WINDOWS.find((x) => x.id === id) ?? WINDOWS[1];
  const to = new Date(now);
  const from = new Date(to.getTime() - w.ms);
  const dayStart = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), from.getUTCDate()));
  const dayEnd = new Date(Date.UTC(to.getUTCFullYear(), to.getUTCMonth(), to.getUTCDate() + 1));
  return { from: isoSeconds(from), to: isoSeconds(to), chartFrom: isoSeconds(dayStart), chartTo: isoSeconds(dayEnd) };
}

/** A round axis maximum ≥ n (1, 2, 5 × 10^k), at least 1. */
export function niceMax(n) {
  if (!(n > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 5, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}

/**
 * The chart of sessions per day by mode as stacked bars: `days` from `sessionsPerDay`
 * ({date, viewOnly, fullControl, elevation, unattended, total}). Returns the plot box, one
 * bar per day with a rect per non-zero mode (bottom up in MODES order), y ticks and x labels
 * (at most ~8 so they do not collide).
 */
export function chartGeometry(days, { width = 720, height = 260, left = 40, right = 12, top = 12, bottom = 28 } = {}) {
  const plot = { x: left, y: top, width: width - left - right, height: height - top - bottom };
  const max = niceMax(Math.max(0, ...days.map((d) => Number(d.total) || 0)));
  const n = Math.max(1, days.length);
  const slot = plot.width / n;
  const barWidth = Math.max(1, Math.min(48, slot * 0.7));
  const scale = plot.height / max;
  const bars = days.map((d, i) => {
    const x = plot.x + i * slot + (slot - barWidth) / 2;
    let y = plot.y + plot.height;
    const rects = [];
    for (const mode of MODES) {
      const v = Number(d[mode]) || 0;
      if (v <= 0) continue;
      const h = v * scale;
      y -= h;
      rects.push({ mode, value: v, x, y, width: barWidth, height: h });
    }
    return { date: d.date, total: Number(d.total) || 0, x, width: barWidth, rects };
  });
  const step = max <= 5 ? 1 : max / 5;
  const ticks = [];
  for (let v = 0; v <= max + 1e-9; v += step) ticks.push({ value: Math.round(v * 100) / 100, y: plot.y + plot.height - v * scale });
  const every = Math.max(1, Math.ceil(n / 8));
  const labels = bars.filter((_, i) => i % every === 0 || i === n - 1)
    .map((b) => ({ text: String(b.date).slice(5), x: b.x + b.width / 2, y: plot.y + plot.height + 18 }));
  return { width, height, plot, max, bars, ticks, labels };
}

/** A length in seconds for people: `45 s`, `12 min`, `1 h 05 min`. */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** A timestamp for tables: `2026-12-01 10:04:05` (UTC), or '—' when absent. */
export function formatTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, '').replace(/Z$/, '') + ' UTC';
}

/** The error text of an API answer: Graph's `error.message`, else the status. */
export function apiErrorText(status, body) {
  const m = body?.error?.message;
  const code = body?.error?.code;
  if (m) return code ? `${m} (${code}, ${status})` : `${m} (${status})`;
  return `The server answered ${status}.`;
}

/** The what-if request body from the form; empty fields are left out. */
export function whatIfBody({ helper, sharer, device, mode }) {
  const body = {};
  for (const [k, v] of Object.entries({ helper, sharer, device })) {
    const t = String(v ?? '').trim();
    if (t) body[k] = t;
  }
  if (!body.helper) throw new Error('Choose a helper.');
  if (!body.sharer && !body.device) throw new Error('Choose a sharer or a device.');
  body.mode = MODES.includes(mode) ? mode : 'viewOnly';
  return body;
}

/** Words for a what-if decision: a headline and its tone (`allow`, `warn`, `deny`). */
export function decisionText(result) {
  const d = result?.decision ?? {};
  if (d.outcome === 'allow') {
    const modes = (d.granted ?? []).map((m) => MODE_LABELS[m] ?? m).join(', ');
    const warn = d.warnings?.length ? ` with warnings: ${d.warnings.join(', ')}` : '';
    return { tone: warn ? 'warn' : 'allow', text: `Allowed: ${modes || 'no mode'}${warn}. Chat ${d.chatAllowed === false ? 'blocked' : 'allowed'}.` };
  }
  return { tone: 'deny', text: `Denied: ${d.reason ?? 'unknown reason'}${result?.decidedBy ? ` (decided by ${result.decidedBy})` : ''}.` };
}

/** Enrollment and compliance words for a managed device. */
export function deviceStatus(d) {
  const enrolled = d?.enrollmentState === 'enrolled' && (d?.managementState ?? 'managed') === 'managed';
  const c = d?.complianceState ?? 'unknown';
  const compliance = c === 'compliant' ? 'Compliant'
    : ['noncompliant', 'conflict', 'error', 'inGracePeriod'].includes(c) ? 'Not compliant' : 'Unknown';
  return { enrolled, enrollment: enrolled ? 'Enrolled' : `Not enrolled (${d?.enrollmentState ?? 'unknown'})`, compliance };
}

/** Audit event's changed properties as rows: resource, property, old, new. */
export function auditChanges(event) {
  const out = [];
  for (const r of event?.resources ?? []) {
    for (const p of r?.modifiedProperties ?? []) {
      out.push({ resource: r.displayName ?? r.type ?? '', property: p.displayName ?? '', oldValue: p.oldValue ?? '', newValue: p.newValue ?? '' });
    }
  }
  return out;
}
