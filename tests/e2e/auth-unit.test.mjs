// Unit tests of /assets/auth.mjs's pure helpers (no browser): PKCE, JWT claims, refresh timing.
import test from 'node:test';
import assert from 'node:assert/strict';
import { base64url, pkceChallenge, jwtClaims, userOf, refreshMargin, randomString } from '../../crates/assistd/web/assets/auth.mjs';

test('PKCE S256 challenge matches RFC 7636 appendix B', async () => {
  assert.equal(await pkceChallenge('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'),
    'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM');
});

test('verifiers are 43 unreserved characters and differ', () => {
  const a = randomString(32);
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, randomString(32));
  assert.equal(base64url(new Uint8Array([251, 255])), '-_8');
});

test('JWT claims are read (UTF-8, url-safe alphabet); anything else is null', () => {
  const payload = Buffer.from(JSON.stringify({ name: 'Zoë Ünal', upn: 'z@x', tid: 't', oid: 'o', pad: '??>' })).toString('base64url');
  const c = jwtClaims(`e30.${payload}.sig`);
  assert.equal(c.name, 'Zoë Ünal');
  assert.deepEqual(userOf(c), { name: 'Zoë Ünal', upn: 'z@x', tenantId: 't', oid: 'o' });
  for (const bad of [undefined, '', 'opaque-token', 'a.b', 'a.!!!.c', `e30.${Buffer.from('3').toString('base64url')}.s`]) {
    assert.equal(jwtClaims(bad), null, String(bad));
  }
  assert.deepEqual(userOf({ preferred_username: 'p@x', sub: 's' }), { name: 'p@x', upn: 'p@x', tenantId: '', oid: 's' });
});

test('refresh margin: a quarter of the lifetime within 5 s .. 2 min', () => {
  assert.equal(refreshMargin(12), 5);
  assert.equal(refreshMargin(100), 25);
  assert.equal(refreshMargin(3600), 120);
});
