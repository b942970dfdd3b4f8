// Sign-in for every page assistd serves: OpenID Connect authorization code flow with PKCE
// (S256) against the issuer the server names at /v1/auth/config (the dev issuer's provider,
// Entra ID, Keycloak, … found by discovery).
//
//   import { signIn, currentAuth } from '/assets/auth.mjs';
//   const auth = await signIn({ loginHint: 'helen@contoso.com' }); // may redirect and never resolve
//   const token = await auth.accessToken();                       // fresh; refreshed near expiry
//   auth.onTokenRefreshed((t) => socket.send(JSON.stringify({ type: 'authenticate', token: t })));
//
// Tokens live in this module's memory only: never in localStorage, sessionStorage, a URL or a
// log. Only the PKCE verifier, `state` and `nonce` survive the redirect, in sessionStorage, and
// are deleted as soon as the answer comes back. The redirect URI is the page's own URL without
// query or fragment (https://host/helper/, /share/, /admin/); register those with the provider.
// docs/clients.md ("Sign-in") is the full description.

const PENDING_KEY = 'assist.auth.pending';
const CONFIG_PATH = '/v1/auth/config';
/** Parameters of the authorization response, removed from the URL once read. */
const RESPONSE_PARAMS = ['code', 'state', 'iss', 'session_state', 'error', 'error_description', 'error_uri'];

/** The signed-in session (module memory only), or null. */
let session = null;
/** The page's configuration and the provider's metadata, fetched once. */
let providerPromise = null;

// ---- pure helpers (exported for the unit tests) -------------------------------------------

/** Base64url without padding of some bytes. */
export function base64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** A random base64url string of `n` bytes (43 characters for 32). */
export function randomString(n = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(n)));
}

/** The PKCE S256 challenge of a verifier (RFC 7636 §4.2). */
export async function pkceChallenge(verifier) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  return base64url(digest);
}

/** The claims of a JWT, or null when it is not one (opaque tokens). Not verified. */
export function jwtClaims(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const v = JSON.parse(new TextDecoder().decode(bytes));
    return v && typeof v === 'object' ? v : null;
  } catch {
    return null;
  }
}

/** Who the claims name, as the pages show it. */
export function userOf(claims) {
  const c = claims || {};
  const upn = c.upn || c.preferred_username || c.email || '';
  return { name: c.name || upn, upn, tenantId: c.tid || '', oid: c.oid || c.sub || '' };
}

/**
 * Seconds before expiry at which a token is refreshed: a quarter of its lifetime, at least 5 s
 * and at most 2 minutes.
 */
export function refreshMargin(lifetimeSecs) {
  return Math.min(120, Math.max(5, lifetimeSecs / 4));
}

// ---- provider --------------------------------------------------------------------------

async function getJson(url, what) {
  let resp;
  try {
    resp = await fetch(url, { credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    throw new Error(`sign-in: cannot fetch ${what} (${e.message})`);
  }
  if (!resp.ok) throw new Error(`sign-in: ${what} answered HTTP ${resp.status}`);
  return resp.json();
}

/** The sign-in configuration ({issuer, clientId, scopes}) and the issuer's discovery document. */
async function provider(opts) {
  if (opts.config) return load(opts.config);
  providerPromise ??= getJson(CONFIG_PATH, 'the sign-in configuration').then(load);
  try {
    return await providerPromise;
  } catch (e) {
    providerPromise = null; // try again next time
    throw e;
  }
}

async function load(config) {
  const issuer = String(config.issuer || '').replace(/\/+$/, '');
  if (!issuer.startsWith('https://')) throw new Error('sign-in: the configured issuer is not an https:// URL');
  const meta = await getJson(`${issuer}/.well-known/openid-configuration`, 'the issuer\'s discovery document');
  if (String(meta.issuer || '').replace(/\/+$/, '') !== issuer) {
    throw new Error('sign-in: the discovery document names another issuer');
  }
  if (!meta.authorization_endpoint || !meta.token_endpoint) {
    throw new Error('sign-in: the discovery document lacks the authorization or token endpoint');
  }
  return { config: { ...config, issuer }, meta };
}

async function tokenRequest(meta, params) {
  let resp;
  try {
    resp = await fetch(meta.token_endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (e) {
    throw new Error(`sign-in: the token endpoint cannot be reached (${e.message})`);
  }
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (!resp.ok || !body || typeof body.access_token !== 'string') {
    const err = new Error(`sign-in: the token endpoint refused: ${body?.error || `HTTP ${resp.status}`}` +
      (body?.error_description ? ` (${body.error_description})` : ''));
    err.code = body?.error || 'http_error';
    throw err;
  }
  return body;
}

// ---- session ---------------------------------------------------------------------------

function redirectUriOf(opts) {
  return opts.redirectUri || `${location.origin}${location.pathname}`;
}

async function startRedirect(opts) {
  const { config, meta } = await provider(opts);
  const verifier = randomString(32);
  const state = randomString(16);
  const nonce = randomString(16);
  const redirectUri = redirectUriOf(opts);
  // What the page's URL carried besides the response, to restore after the round trip.
  const kept = new URL(location.href);
  for (const p of RESPONSE_PARAMS) kept.searchParams.delete(p);
  sessionStorage.setItem(PENDING_KEY, JSON.stringify({
    state, verifier, nonce, redirectUri, returnTo: kept.search + kept.hash,
  }));
  const url = new URL(meta.authorization_endpoint);
  const q = url.searchParams;
  q.set('client_id', config.clientId);
  q.set('response_type', 'code');
  q.set('redirect_uri', redirectUri);
  q.set('scope', config.scopes || 'openid profile offline_access');
  q.set('state', state);
  q.set('nonce', nonce);
  q.set('code_challenge', await pkceChallenge(verifier));
  q.set('code_challenge_method', 'S256');
  if (opts.loginHint) q.set('login_hint', opts.loginHint);
  location.assign(url.toString());
}

async function complete(url, opts) {
  const params = url.searchParams;
  let pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || 'null');
  } catch {
    pending = null;
  }
  sessionStorage.removeItem(PENDING_KEY); // single use, whatever happens next
  const clean = new URL(url.href);
  for (const p of RESPONSE_PARAMS) clean.searchParams.delete(p);
  const rest = pending?.returnTo ?? (clean.search + clean.hash);
  history.replaceState(history.state, '', `${clean.pathname}${rest}`);

  if (!pending || typeof pending.state !== 'string' || pending.state !== params.get('state')) {
    throw new Error('sign-in: the answer does not belong to a sign-in started here (state mismatch); sign in again');
  }
  const { config, meta } = await provider(opts);
  if (params.has('iss') && params.get('iss').replace(/\/+$/, '') !== config.issuer) {
    throw new Error('sign-in: the answer comes from another issuer');
  }
  if (params.has('error')) {
    const e = new Error(`sign-in failed: ${params.get('error')}` +
      (params.get('error_description') ? ` (${params.get('error_description')})` : ''));
    e.code = params.get('error');
    throw e;
  }
  const body = await tokenRequest(meta, {
    grant_type: 'authorization_code',
    code: params.get('code') || '',
    redirect_uri: pending.redirectUri,
    client_id: config.clientId,
    code_verifier: pending.verifier,
  });
  // The ID token came straight from the token endpoint over TLS (OIDC Core §3.1.3.7): check
  // what binds it to this sign-in rather than its signature.
  const id = jwtClaims(body.id_token);
  if (id) {
    const aud = Array.isArray(id.aud) ? id.aud : [id.aud];
    if (String(id.iss || '').replace(/\/+$/, '') !== config.issuer || !aud.includes(config.clientId)) {
      throw new Error('sign-in: the ID token is not for this page');
    }
    if (id.nonce !== pending.nonce) throw new Error('sign-in: the ID token\'s nonce does not match');
  }
  setSession(config, meta, body, id);
  return session.auth;
}

function setSession(config, meta, body, idClaims) {
  const s = session && session.config.issuer === config.issuer ? session : {
    config, meta, listeners: new Set(), timer: null, refreshing: null, auth: null,
  };
  s.accessToken = body.access_token;
  if (body.refresh_token) s.refreshToken = body.refresh_token;
  if (idClaims) s.idClaims = idClaims;
  s.claims = jwtClaims(body.access_token) || s.idClaims || {};
  const lifetime = Number(body.expires_in) > 0 ? Number(body.expires_in) : 3600;
  s.lifetime = lifetime;
  s.expiresAt = Date.now() + lifetime * 1000;
  if (!s.auth) s.auth = makeAuth(s);
  session = s;
  schedule(s);
}

function schedule(s) {
  clearTimeout(s.timer);
  if (!s.refreshToken) return;
  const due = s.expiresAt - refreshMargin(s.lifetime) * 1000 - Date.now();
  s.timer = setTimeout(() => {
    refresh(s).catch(() => {
      // Try again shortly while the token is still valid; after that accessToken() reports it.
      if (session === s && Date.now() < s.expiresAt) {
        s.timer = setTimeout(() => refresh(s).catch(() => {}), 5000);
      }
    });
  }, Math.max(0, due));
}

function refresh(s) {
  s.refreshing ??= (async () => {
    try {
      const body = await tokenRequest(s.meta, {
        grant_type: 'refresh_token',
        refresh_token: s.refreshToken,
        client_id: s.config.clientId,
      });
      if (session !== s) return; // signed out meanwhile
      setSession(s.config, s.meta, body, jwtClaims(body.id_token));
      for (const cb of [...s.listeners]) {
        try {
          cb(s.accessToken);
        } catch (e) {
          console.warn('sign-in: a token refresh listener failed:', e.message);
        }
      }
    } catch (e) {
      if (e.code === 'invalid_grant' && session === s) {
        s.refreshToken = null; // it will not work again
      }
      throw e;
    } finally {
      s.refreshing = null;
    }
  })();
  return s.refreshing;
}

function makeAuth(s) {
  return {
    get user() { return userOf(s.idClaims || s.claims); },
    get claims() { return s.claims; },
    async accessToken() {
      if (session !== s) throw new Error('sign-in: signed out');
      if (Date.now() >= s.expiresAt - refreshMargin(s.lifetime) * 1000 && s.refreshToken) {
        try {
          await refresh(s);
        } catch (e) {
          if (Date.now() >= s.expiresAt) throw e;
        }
      }
      if (Date.now() >= s.expiresAt) throw new Error('sign-in: the session has expired; sign in again');
      return s.accessToken;
    },
    onTokenRefreshed(cb) {
      s.listeners.add(cb);
      return () => s.listeners.delete(cb);
    },
    async signOut() {
      if (session === s) session = null;
      clearTimeout(s.timer);
      const token = s.refreshToken;
      s.accessToken = null;
      s.refreshToken = null;
      s.listeners.clear();
      if (token && s.meta.revocation_endpoint) {
        try {
          await fetch(s.meta.revocation_endpoint, {
            method: 'POST',
            headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
            body: new URLSearchParams({ token, token_type_hint: 'refresh_token', client_id: s.config.clientId }),
            credentials: 'omit',
          });
        } catch {
          // Best effort: the token is forgotten here either way.
        }
      }
    },
  };
}

/**
 * Signs in. If the URL carries an authorization response it completes it (and removes it from
 * the URL); else if a session is in memory it returns it; else it redirects the browser to the
 * issuer (the promise then never resolves). Options: `loginHint`, and for tests `config`
 * ({issuer, clientId, scopes}) and `redirectUri`.
 */
export async function signIn(opts = {}) {
  const url = new URL(location.href);
  const p = url.searchParams;
  if (p.has('state') && (p.has('code') || p.has('error'))) return complete(url, opts);
  if (session) return session.auth;
  await startRedirect(opts);
  return new Promise(() => {});
}

/** The signed-in session's Auth, or null (never redirects). */
export function currentAuth() {
  return session ? session.auth : null;
}
