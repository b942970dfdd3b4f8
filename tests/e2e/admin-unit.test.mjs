// Unit tests of the admin console's pure functions (crates/assistd/web/admin/console.mjs).
// Run: node --test tests/e2e/admin-unit.test.mjs (tests/e2e/run.sh runs it first).
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  ACTIONS, PAGES, apiErrorText, assignmentBody, auditChanges, auditFilter, canonicalAction,
  chartGeometry, decisionText, deviceStatus, effectiveActions, formatDuration, formatTime,
  isoSeconds, nextSort, niceMax, odataString, pageInfo, reportRows, roleActions, roleBody,
  routeOf, scopeText, sessionTableColumns, sessionsReportBody, toCsv, whatIfBody, windowRange,
} from '../../crates/assistd/web/admin/console.mjs';

const A = (s) => `Microsoft.Intune_RemoteAssistanceApp_${s}`;

test('routes: every page by hash, anything else is Settings', () => {
  for (const p of PAGES) {
    assert.equal(routeOf(`#/${p.route}`), p.route);
    assert.equal(routeOf(`#${p.route}`), p.route);
  }
  assert.equal(routeOf(''), 'settings');
  assert.equal(routeOf('#/nope'), 'settings');
  assert.equal(routeOf('#/sessions?x=1'), 'sessions');
  assert.equal(routeOf(undefined), 'settings');
});

test('permissions: each mode implies the lower ones, and only those', () => {
  const { effective, implied, modes } = effectiveActions([A('Elevation')]);
  assert.deepEqual(modes, ['viewOnly', 'fullControl', 'elevation']);
  assert.ok(effective.has(A('ViewScreen')) && effective.has(A('TakeFullControl')));
  assert.ok(!effective.has(A('Unattended')));
  assert.equal(implied.get(A('ViewScreen')), A('Elevation'));
  assert.equal(implied.get(A('TakeFullControl')), A('Elevation'));
  assert.ok(!implied.has(A('Elevation')), 'a checked action is not "implied"');

  assert.deepEqual(effectiveActions([A('Unattended')]).modes, ['viewOnly', 'fullControl', 'elevation', 'unattended']);
  assert.deepEqual(effectiveActions([A('ViewScreen')]).modes, ['viewOnly']);
  const none = effectiveActions(['Microsoft.Intune_RemoteAssistance_ViewReports']);
  assert.deepEqual(none.modes, []);
  assert.equal(none.implied.size, 0);
  // Case-insensitive, as the API matches them.
  assert.deepEqual(effectiveActions([A('TakeFullControl').toLowerCase()]).modes, ['viewOnly', 'fullControl']);
  // Every mode action implies exactly the modes below it in the lattice.
  const modeActions = ACTIONS.filter((a) => a.mode);
  modeActions.forEach((a, i) => assert.deepEqual(a.implies.sort(), modeActions.slice(0, i).map((x) => x.id).sort()));
});

test('role bodies: canonical order and spelling; name and a permission required', () => {
  const body = roleBody({ displayName: ' Viewers ', description: '', actions: [A('ViewScreen'), 'Microsoft.Intune_RemoteTasks_RequestRemoteAssistance'] });
  assert.equal(body.displayName, 'Viewers');
  assert.equal(body.description, undefined);
  assert.deepEqual(body.rolePermissions[0].resourceActions[0].allowedResourceActions,
    [A('ViewScreen'), 'Microsoft.Intune_RemoteTasks_RequestRemoteAssistance']);
  assert.throws(() => roleBody({ displayName: ' ', actions: [A('ViewScreen')] }), /name/);
  assert.throws(() => roleBody({ displayName: 'x', actions: [] }), /permission/);
  assert.equal(canonicalAction('microsoft.intune_remoteassistance_read'), 'Microsoft.Intune_RemoteAssistance_Read');
  assert.deepEqual(roleActions({ rolePermissions: [{ resourceActions: [{ allowedResourceActions: [A('viewscreen'), A('ViewScreen')] }] }] }), [A('ViewScreen')]);
  assert.deepEqual(roleActions({}), []);
});

test('assignment bodies: scope groups only with resourceScope', () => {
  const b = assignmentBody({ displayName: 'Desk', roleId: 'r1', members: ['g1'], scopeType: 'resourceScope', scopeGroups: ['g2'] });
  assert.deepEqual(b.resourceScopes, ['g2']);
  assert.equal(b['roleDefinition@odata.bind'], 'r1');
  const all = assignmentBody({ displayName: 'Desk', roleId: 'r1', members: ['g1'], scopeType: 'allLicensedUsers', scopeGroups: ['g2'] });
  assert.equal(all.scopeType, 'allLicensedUsers');
  assert.equal(all.resourceScopes, undefined);
  assert.throws(() => assignmentBody({ displayName: 'D', roleId: 'r1', members: [], scopeType: 'allDevices' }), /admin group/);
  assert.throws(() => assignmentBody({ displayName: 'D', roleId: 'r1', members: ['g'], scopeType: 'resourceScope', scopeGroups: [] }), /scope group/);
  assert.throws(() => assignmentBody({ displayName: 'D', roleId: '', members: ['g'], scopeType: 'allDevices' }), /role/);
  assert.equal(scopeText({ scopeType: 'allDevices' }), 'All devices');
  assert.equal(scopeText({ scopeType: 'resourceScope', resourceScopes: ['g1', 'g2'] }, (id) => id.toUpperCase()), 'G1, G2');
});

test('OData: quotes doubled; audit filter by time window and category', () => {
  assert.equal(odataString("O'Brien"), "'O''Brien'");
  assert.equal(isoSeconds('2026-12-01T10:00:00.123Z'), '2026-12-01T10:00:00Z');
  assert.equal(auditFilter({ from: '2026-12-01T00:00:00Z', to: '2026-12-02T00:00:00Z', category: 'Role' }),
    "activityDateTime ge 2026-12-01T00:00:00Z and activityDateTime lt 2026-12-02T00:00:00Z and category eq 'Role'");
  assert.equal(auditFilter({ category: "x'y" }), "category eq 'x''y'");
  assert.equal(auditFilter({}), '');
});

test('sessions report body: filters, search, sort and paging', () => {
  const b = sessionsReportBody({ search: ' sam ', state: 'ended', mode: 'fullControl', sort: { column: 'helperEmail', desc: false }, page: 2, pageSize: 10, columns: ['id', 'helperEmail'] });
  assert.deepEqual(b, {
    name: 'RemoteAssistanceSessions', skip: 20, top: 10, select: ['id', 'helperEmail'],
    filter: "state eq 'ended' and remoteAssistanceSessionType eq 'fullControl'", search: 'sam', orderBy: ['helperEmail asc'],
  });
  const d = sessionsReportBody();
  assert.deepEqual(d.orderBy, ['startDateTime desc']);
  assert.equal(d.filter, undefined);
  assert.equal(d.search, undefined);
  assert.deepEqual(reportRows({ Schema: [{ Column: 'id' }, { Column: 'mode' }], Values: [['s1', 'viewOnly'], ['s2']] }),
    [{ id: 's1', mode: 'viewOnly' }, { id: 's2', mode: null }]);
  assert.deepEqual(reportRows(null), []);
});

test('session table columns: ours first, then any new report column (quality), ids hidden', () => {
  const schema = ['id', 'startDateTime', 'helperEmail', 'helperFirstName', 'sharerDeviceName', 'framesDropped', 'averageRttMs', 'endedBy']
    .map((Column) => ({ Column, PropertyType: 'String' }));
  const cols = sessionTableColumns(schema);
  assert.deepEqual(cols.slice(0, 8).map((c) => c.column),
    ['helperEmail', 'sharerEmail', 'sharerDeviceName', 'startDateTime', 'endDateTime', 'remoteAssistanceSessionType', 'endReason', 'state']);
  assert.deepEqual(cols.slice(8), [{ column: 'framesDropped', header: 'Frames dropped' }, { column: 'averageRttMs', header: 'Average rtt ms' }]);
  assert.equal(sessionTableColumns(undefined).length, 8);
});

test('sorting and paging', () => {
  assert.deepEqual(nextSort({ column: 'startDateTime', desc: true }, 'startDateTime'), { column: 'startDateTime', desc: false });
  assert.deepEqual(nextSort({ column: 'startDateTime', desc: true }, 'helperEmail'), { column: 'helperEmail', desc: false });
  assert.deepEqual(nextSort(null, 'endDateTime'), { column: 'endDateTime', desc: true });
  assert.deepEqual(pageInfo(73, 1, 25), { pages: 3, page: 1, first: 26, last: 50, hasPrev: true, hasNext: true });
  assert.deepEqual(pageInfo(73, 9, 25), { pages: 3, page: 2, first: 51, last: 73, hasPrev: true, hasNext: false });
  assert.deepEqual(pageInfo(0, 0, 25), { pages: 1, page: 0, first: 0, last: 0, hasPrev: false, hasNext: false });
});

test('CSV: RFC 4180 quoting, CRLF, and no formulas', () => {
  const csv = toCsv([{ column: 'a', header: 'A' }, { column: 'b', header: 'B, "x"' }],
    [{ a: 'plain', b: 'with, comma' }, { a: 'say "hi"', b: 'two\nlines' }, { a: '=HYPERLINK("x")', b: null }, { a: -3, b: { k: 1 } }]);
  assert.equal(csv, [
    'A,"B, ""x"""',
    'plain,"with, comma"',
    '"say ""hi""","two\nlines"',
    `"'=HYPERLINK(""x"")",`,
    `'-3,"{""k"":1}"`,
    '',
  ].join('\r\n'));
});

test('Monitor window: the summary period and the whole UTC days of the chart', () => {
  const now = Date.parse('2026-12-01T15:30:00Z');
  assert.deepEqual(windowRange('7d', now), {
    from: '2026-11-24T15:30:00Z', to: '2026-12-01T15:30:00Z', chartFrom: '2026-11-24T00:00:00Z', chartTo: '2026-12-02T00:00:00Z',
  });
  assert.equal(windowRange('24h', now).chartFrom, '2026-11-30T00:00:00Z');
  assert.equal(windowRange('bogus', now).from, '2026-11-24T15:30:00Z', 'unknown → 7 days');
});

test('chart geometry: stacked bars in mode order, scaled to a round maximum', () => {
  assert.equal(niceMax(0), 1);
  assert.equal(niceMax(3), 5);
  assert.equal(niceMax(7), 10);
  assert.equal(niceMax(11), 20);
  assert.equal(niceMax(100), 100);
  const days = [
    { date: '2026-11-30', viewOnly: 1, fullControl: 2, elevation: 0, unattended: 0, total: 3 },
    { date: '2026-12-01', viewOnly: 0, fullControl: 0, elevation: 0, unattended: 0, total: 0 },
  ];
  const g = chartGeometry(days, { width: 200, height: 120, left: 20, right: 0, top: 10, bottom: 10 });
  assert.equal(g.max, 5);
  assert.deepEqual(g.plot, { x: 20, y: 10, width: 180, height: 100 });
  const [b0, b1] = g.bars;
  assert.deepEqual(b0.rects.map((r) => [r.mode, r.value]), [['viewOnly', 1], ['fullControl', 2]]);
  // Bottom up: viewOnly sits on the baseline, fullControl on top of it; 1 session = 20 px.
  assert.equal(b0.rects[0].y + b0.rects[0].height, 110);
  assert.equal(b0.rects[0].height, 20);
  assert.equal(b0.rects[1].y + b0.rects[1].height, b0.rects[0].y);
  assert.equal(b0.rects[1].height, 40);
  assert.equal(b1.rects.length, 0);
  assert.ok(b0.x >= 20 && b0.x + b0.width <= 110 && b1.x >= 110, 'each bar inside its slot');
  assert.deepEqual(g.ticks.map((t) => t.value), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(g.labels.map((l) => l.text), ['11-30', '12-01']);
  // Many days: at most ~9 labels, the last day always labelled.
  const month = Array.from({ length: 31 }, (_, i) => ({ date: `2026-12-${String(i + 1).padStart(2, '0')}`, total: 0 }));
  const m = chartGeometry(month);
  assert.ok(m.labels.length <= 9, `${m.labels.length} labels`);
  assert.equal(m.labels.at(-1).text, '12-31');
  assert.equal(chartGeometry([]).bars.length, 0);
});

test('formatting', () => {
  assert.equal(formatDuration(42), '42 s');
  assert.equal(formatDuration(1800), '30 min');
  assert.equal(formatDuration(3900), '1 h 05 min');
  assert.equal(formatDuration(-5), '0 s');
  assert.equal(formatTime('2026-12-01T10:04:05.120Z'), '2026-12-01 10:04:05 UTC');
  assert.equal(formatTime(null), '—');
  assert.equal(apiErrorText(403, { error: { code: 'Forbidden', message: 'No.' } }), 'No. (Forbidden, 403)');
  assert.equal(apiErrorText(502, null), 'The server answered 502.');
});

test('what-if body and decision words', () => {
  assert.deepEqual(whatIfBody({ helper: ' helen@contoso.com ', sharer: '', device: 'aad-1', mode: 'elevation' }),
    { helper: 'helen@contoso.com', device: 'aad-1', mode: 'elevation' });
  assert.equal(whatIfBody({ helper: 'h', sharer: 's', mode: 'bogus' }).mode, 'viewOnly');
  assert.throws(() => whatIfBody({ helper: '', sharer: 's' }), /helper/);
  assert.throws(() => whatIfBody({ helper: 'h' }), /sharer or a device/);
  assert.deepEqual(decisionText({ decision: { outcome: 'allow', granted: ['viewOnly', 'fullControl'], warnings: [], chatAllowed: true } }),
    { tone: 'allow', text: 'Allowed: View only, Full control. Chat allowed.' });
  assert.equal(decisionText({ decision: { outcome: 'allow', granted: ['viewOnly'], warnings: ['deviceUnenrolled'], chatAllowed: false } }).tone, 'warn');
  assert.deepEqual(decisionText({ decision: { outcome: 'deny', reason: 'notInScope' }, decidedBy: 'roleBasedAccess' }),
    { tone: 'deny', text: 'Denied: notInScope (decided by roleBasedAccess).' });
});

test('devices: enrollment and compliance words; audit changes', () => {
  assert.deepEqual(deviceStatus({ enrollmentState: 'enrolled', managementState: 'managed', complianceState: 'compliant' }),
    { enrolled: true, enrollment: 'Enrolled', compliance: 'Compliant' });
  assert.equal(deviceStatus({ enrollmentState: 'enrolled', managementState: 'retired' }).enrolled, false);
  assert.equal(deviceStatus({ enrollmentState: 'blocked', complianceState: 'inGracePeriod' }).compliance, 'Not compliant');
  assert.equal(deviceStatus({}).compliance, 'Unknown');
  assert.deepEqual(auditChanges({ resources: [{ displayName: 'settings', modifiedProperties: [{ displayName: 'blockChat', oldValue: 'false', newValue: 'true' }] }] }),
    [{ resource: 'settings', property: 'blockChat', oldValue: 'false', newValue: 'true' }]);
  assert.deepEqual(auditChanges({}), []);
});
