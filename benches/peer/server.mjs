// The peer of the load benchmark (benches/load/): oidc-provider with the
// smallest glue that gives it an RFC 8693 token-exchange grant, and its own
// RFC 7662 introspection. Started by the benchmark as
//
//   node benches/peer/server.mjs <port>
//
// on 127.0.0.1 only. It mirrors Baton's travel example: the orchestrator's own
// token (client credentials) goes to the planner, the planner exchanges it for
// the booker, the booker for the airline API, and the airline API introspects.
//
// Kept honest: an exchange verifies the subject token's ES256 signature with
// the provider's own key, its `typ`, issuer, expiry and that it is addressed to
// the client that presents it (RFC 8693 §2.1), narrows the scopes to the
// parent's and to the target's, caps `exp` at the parent's, writes the `act`
// chain, and signs a new RFC 9068 JWT access token with oidc-provider's own
// JWT format. What it does not do that Baton does: policy evaluation, a
// revocation check of the token's ancestry, a durable audit event, depth
// limits, DPoP. oidc-provider refuses to introspect JWT access tokens
// ("Structured JWT Tokens cannot be introspected"), so introspection is of an
// opaque client-credentials token: a lookup in its in-memory adapter, with no
// signature to check.

import { createServer } from 'node:http';

import { jwtVerify, exportJWK, generateKeyPair } from 'jose';
import Provider, { errors } from 'oidc-provider';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node server.mjs <port>');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// A fresh ES256 key per start, as Baton generates one on first start.
const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
const signingKey = { ...(await exportJWK(privateKey)), kid: 'peer-1', alg: 'ES256', use: 'sig' };

// Targets: agents are addressed by a URN (resource indicators must be
// absolute URIs), APIs by their URI. Same scopes and lifetimes as
// policies/agents.toml and policies/resources.toml.
const TRAVEL = 'flights.read flights.book calendar.read calendar.write';
const targets = {
  'urn:agent:planner': { scope: TRAVEL, ttl: 3600 },
  'urn:agent:booker': { scope: 'flights.read flights.book calendar.read', ttl: 1800 },
  'https://api.airline.example': { scope: 'flights.read flights.book', ttl: 300 },
};

function resourceServerInfo(uri) {
  const target = Object.hasOwn(targets, uri) ? targets[uri] : undefined;
  if (!target) return undefined;
  return {
    scope: target.scope,
    audience: uri,
    accessTokenTTL: target.ttl,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'ES256' } },
  };
}

const agent = (id, grantTypes) => ({
  client_id: id,
  client_secret: `dev-only-${id}-secret`,
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: grantTypes,
  response_types: [],
  redirect_uris: [],
  scope: TRAVEL,
});

const provider = new Provider(issuer, {
  clients: [
    agent('orchestrator', ['client_credentials']),
    agent('planner', [EXCHANGE]),
    agent('booker', [EXCHANGE, 'client_credentials']),
    agent('airline-api', []),
  ],
  jwks: { keys: [signingKey] },
  // The provider's only key is ES256 (its default, RS256, would need an RSA key).
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  routes: { token: '/token', introspection: '/introspect' },
  scopes: TRAVEL.split(' '),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Only the airline API introspects, as in Baton's example.
      allowedPolicy: async (ctx, client) => client.clientId === 'airline-api',
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => false,
      getResourceServerInfo: (ctx, resource) => {
        const info = resourceServerInfo(resource);
        if (!info) throw new errors.InvalidTarget();
        return info;
      },
    },
  },
  // The chain the exchange handler worked out (RFC 8693 §4.1), written by the
  // provider into the JWT it signs.
  extraTokenClaims: (ctx) => (ctx?.peerAct ? { act: ctx.peerAct } : undefined),
  ttl: {
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 600,
  },
});

provider.registerGrantType(
  EXCHANGE,
  async (ctx) => {
    const { client, params } = ctx.oidc;
    if (!params.subject_token || params.subject_token_type !== ACCESS_TOKEN) {
      throw new errors.InvalidRequest('subject_token with subject_token_type access_token is required');
    }
    // RFC 8693 §2.2.2: an unacceptable subject_token is invalid_request.
    let parent;
    try {
      ({ payload: parent } = await jwtVerify(params.subject_token, publicKey, {
        issuer,
        audience: `urn:agent:${client.clientId}`,
        typ: 'at+jwt',
        algorithms: ['ES256'],
        requiredClaims: ['exp', 'sub', 'jti'],
      }));
    } catch {
      throw new errors.InvalidRequest('subject_token is not acceptable');
    }
    const info = resourceServerInfo(params.resource);
    if (!info) throw new errors.InvalidTarget();

    // Only narrower: the parent's scopes, the target's and the client's.
    const parentScopes = new Set(String(parent.scope ?? '').split(' ').filter(Boolean));
    const targetScopes = new Set(info.scope.split(' '));
    const clientScopes = new Set(String(client.scope ?? '').split(' '));
    const fits = (scope) => parentScopes.has(scope) && targetScopes.has(scope) && clientScopes.has(scope);
    const asked = params.scope ? params.scope.split(' ').filter(Boolean) : [...parentScopes];
    if (params.scope && !asked.every(fits)) throw new errors.InvalidScope('scope exceeds what may be granted');
    const granted = asked.filter(fits);
    if (granted.length === 0) throw new errors.InvalidScope('no scope may be granted');

    const now = Math.floor(Date.now() / 1000);
    const token = new provider.AccessToken({
      client,
      accountId: parent.sub,
      gty: EXCHANGE,
      scope: granted.join(' '),
      expiresIn: Math.max(1, Math.min(info.accessTokenTTL, parent.exp - now)),
      resourceServer: new provider.ResourceServer(params.resource, info),
    });
    ctx.peerAct = parent.act ? { sub: client.clientId, act: parent.act } : { sub: client.clientId };
    const value = await token.save();

    ctx.body = {
      access_token: value,
      issued_token_type: ACCESS_TOKEN,
      token_type: 'Bearer',
      expires_in: token.expiration,
      scope: token.scope,
    };
  },
  ['subject_token', 'subject_token_type', 'resource', 'scope'],
  ['resource'],
);

const server = createServer(provider.callback());
// The benchmark's connections stay open between its requests.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.listen(port, '127.0.0.1', () => {
  console.log(`peer listening on ${issuer}`);
});
