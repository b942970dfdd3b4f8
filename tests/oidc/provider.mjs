// A second, independent OpenID Connect provider for the sign-in tests: panva's oidc-provider
// (a certified implementation), on loopback over TLS, configured like a production provider
// would be for Assist: public clients `assist-web` (authorization code + PKCE, refresh) and
// `assist-cli` (device authorization grant, refresh), JWT access tokens (ES256) for the audience
// `api://assist` carrying `tid`, `oid`, `upn` and `name`, as assistd expects. Its development
// login form accepts any login (the account id) and password; consent is pre-granted.
//
//   import { startProvider } from '../oidc/provider.mjs';
//   const idp = await startProvider({ port, cert, key, redirectUris, tenant: 'contoso' });
//   idp.issuer; await idp.close();
import https from 'node:https';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

export const AUDIENCE = 'api://assist';

export async function startProvider({ port, cert, key, redirectUris, tenant = 'contoso', accessTokenTtl = 600 }) {
  const issuer = `https://localhost:${port}`;
  const jwk = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const claimsOf = (id) => ({
    sub: id, tid: tenant, oid: crypto.createHash('sha256').update(`${tenant}/${id}`).digest('hex').slice(0, 32),
    upn: id, preferred_username: id, name: id.split('@')[0],
  });
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'assist-web', token_endpoint_auth_method: 'none', id_token_signed_response_alg: 'ES256', application_type: 'web',
        redirect_uris: redirectUris, grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
      },
      {
        client_id: 'assist-cli', token_endpoint_auth_method: 'none', id_token_signed_response_alg: 'ES256', application_type: 'native',
        redirect_uris: [], grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: [],
      },
    ],
    jwks: { keys: [{ ...jwk, alg: 'ES256', use: 'sig', kid: 'test-es256' }] },
    pkce: { required: () => true },
    scopes: ['openid', 'profile', 'offline_access'],
    claims: { openid: ['sub'], profile: ['name', 'preferred_username', 'upn', 'tid', 'oid'] },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'openid profile offline_access',
          audience: AUDIENCE,
          accessTokenTTL: accessTokenTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
    ttl: { AccessToken: accessTokenTtl },
    clientBasedCORS: () => true,
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    async findAccount(ctx, id) {
      return { accountId: id, claims: async () => claimsOf(id) };
    },
    async extraTokenClaims(ctx, token) {
      if (!token.accountId) return undefined;
      const c = claimsOf(token.accountId);
      return { tid: c.tid, oid: c.oid, upn: c.upn, name: c.name };
    },
    // Consent is pre-granted: what a tenant admin's consent does for an enterprise app.
    async loadExistingGrant(ctx) {
      const clientId = ctx.oidc.client.clientId;
      const existing = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(clientId);
      if (existing) {
        const g = await ctx.oidc.provider.Grant.find(existing);
        if (g) return g;
      }
      const grant = new ctx.oidc.provider.Grant({ clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid profile offline_access');
      grant.addOIDCClaims(['name', 'preferred_username', 'upn', 'tid', 'oid']);
      grant.addResourceScope(AUDIENCE, 'openid profile offline_access');
      await grant.save();
      ctx.oidc.session.ensureClientContainer(clientId);
      ctx.oidc.session.grantIdFor(clientId, grant.jti);
      return grant;
    },
  });
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));
  const server = https.createServer({ cert, key }, provider.callback());
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    issuer,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
  };
}
