// A real OpenID provider (the npm `oidc-provider`) on 127.0.0.1, for the
// tests and the README: people sign in through its own login and consent
// pages, and their ID tokens start Baton chains.
//
//   IDP_PORT=9400 node tests/interop/node/idp.js
//
// It prints {"issuer": ...} once serving, then reads commands, one a line,
// and answers each with one JSON line:
//   login <name>        sign <name> in (authorization code flow with PKCE,
//                       through the login and consent pages) -> {"id_token"}
//   login-access <name> the same, asking for Baton as the resource (RFC 8707):
//                       -> {"access_token"}, a JWT access token (RFC 9068)
//                       for the audience Baton trusts, scope flights.read
//   sign <claims json>  a JWT of these claims signed with the provider's key
//   forge <claims json> the same claims signed with another key under the
//                       provider's kid -> {"token"}
//   sign-es256 <claims json>
//                       signed with the provider's second published key, an
//                       ES256 one (it signs nothing else) -> {"token"}
//   sign-with-header {"header": {...}, "claims": {...}}
//                       signed with the provider's key, extra header members
//   walk <name> <url>   sign <name> in from the authorization URL another
//                       client built (the console's) -> {"location"}: where
//                       the provider sends the browser back, code unspent
// With IDP_CONSOLE_REDIRECT_URI set, it also registers the console's client,
// `baton-console` (secret `dev-only-baton-console-secret`), returning there.
// It stops when its input closes.

import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';

// Standard output carries only the answers; the provider's notices go to
// standard error.
const answer = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
console.log = console.info = console.warn = (...args) => console.error(...args);

const port = Number(process.env.IDP_PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('set IDP_PORT to a free port');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.IDP_CLIENT_ID ?? 'baton-demo';
const clientSecret = 'dev-only-baton-demo-secret';
const redirectUri = 'http://127.0.0.1/callback';
// The resource indicator for Baton: its access tokens are JWTs for the
// audience Baton checks, the client id.
const batonResource = 'urn:baton:token-exchange';

const kid = 'idp-key-1';
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
const { privateKey: foreignKey } = await jose.generateKeyPair('RS256');
// Published beside the RSA key, so that a relying party that allows only
// RS256 can be shown a token it must refuse though the key is the provider's.
const ecKid = 'idp-key-2';
const { privateKey: ecKey } = await jose.generateKeyPair('ES256', { extractable: true });
const ecJwk = { ...(await jose.exportJWK(ecKey)), kid: ecKid, alg: 'ES256', use: 'sig' };

const consoleRedirectUri = process.env.IDP_CONSOLE_REDIRECT_URI;
const consoleClient = {
  client_id: 'baton-console',
  client_secret: 'dev-only-baton-console-secret',
  redirect_uris: [consoleRedirectUri],
  grant_types: ['authorization_code'],
  response_types: ['code'],
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }, ...(consoleRedirectUri ? [consoleClient] : [])],
  jwks: { keys: [signingJwk, ecJwk] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  findAccount: (_, id) => ({
    accountId: id,
    // People whose name starts `unverified` have an email the provider has not verified.
    claims: () => ({ sub: id, email: `${id}@example.com`, email_verified: !id.startsWith('unverified') }),
  }),
  pkce: { required: () => true },
  features: {
    resourceIndicators: {
      enabled: true,
      getResourceServerInfo: (_, indicator) => {
        if (indicator !== batonResource) throw new errors.InvalidTarget();
        return {
          scope: 'flights.read',
          audience: clientId,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  ttl: { IdToken: 3600 },
});
// Quiet: the dev-interactions warning goes to stderr once.
provider.on('server_error', (_, error) => console.error(error));

const server = createServer(provider.callback());
await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
answer({ issuer });

/// Cookies the provider set, sent back on the next request.
class Jar {
  constructor() { this.cookies = new Map(); }
  take(response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const at = pair.indexOf('=');
      this.cookies.set(pair.slice(0, at), pair.slice(at + 1));
    }
  }
  header() { return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; '); }
}

/// One request as a browser sends it; the answer with its page's text.
async function step(jar, url, form) {
  const init = { redirect: 'manual', headers: { cookie: jar.header() } };
  if (form) {
    init.method = 'POST';
    init.headers['content-type'] = 'application/x-www-form-urlencoded';
    init.body = new URLSearchParams(form).toString();
  }
  const response = await fetch(new URL(url, issuer), init);
  jar.take(response);
  response.page = await response.text();
  return response;
}

/// The authorization code flow, as a browser would walk it; with a
/// `resource`, its access token is the answer rather than the ID token.
async function login(name, resource) {
  const jar = new Jar();
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const authorize = new URL('/auth', issuer);
  authorize.search = new URLSearchParams({
    client_id: clientId, response_type: 'code', scope: 'openid email', redirect_uri: redirectUri,
    code_challenge: challenge, code_challenge_method: 'S256', nonce: randomBytes(8).toString('hex'),
    ...(resource ? { resource, scope: 'openid email flights.read' } : {}),
  }).toString();
  const location = await walk(jar, authorize, name, redirectUri);
  const code = new URL(location).searchParams.get('code');
  if (!code) throw new Error(`no code in ${location}`);
  return exchangeCode(code, verifier, resource);
}

/// From an authorization URL through the login and consent pages, as
/// `name`: where the provider sends the browser back to `returnTo`.
async function walk(jar, authorize, name, returnTo) {
  let response = await step(jar, authorize);
  for (let hops = 0; hops < 10; hops += 1) {
    const location = response.headers.get('location');
    if (!location) throw new Error(`no redirect (status ${response.status})`);
    if (location.startsWith(returnTo)) return location;
    const interaction = location.match(/\/interaction\/([^/?]+)/);
    if (interaction) {
      const page = await step(jar, location);
      if (page.status !== 200) throw new Error(`interaction page: ${page.status}`);
      // The dev pages: a login form, then a consent form.
      const form = page.page.includes('name="login"')
        ? { prompt: 'login', login: name, password: 'any' }
        : { prompt: 'consent' };
      response = await step(jar, `/interaction/${interaction[1]}`, form);
    } else {
      response = await step(jar, location);
    }
  }
  throw new Error('too many redirects');
}

async function exchangeCode(code, verifier, resource) {
  const response = await fetch(new URL('/token', issuer), {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString('base64')}`,
    },
    body: new URLSearchParams({
      grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier,
      ...(resource ? { resource } : {}),
    }).toString(),
  });
  const body = await response.json();
  if (resource) {
    if (!body.access_token) throw new Error(`no access_token: ${JSON.stringify(body)}`);
    return { access_token: body.access_token };
  }
  if (!body.id_token) throw new Error(`no id_token: ${JSON.stringify(body)}`);
  return { id_token: body.id_token };
}

async function sign(claims, key, header = {}) {
  return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT', ...header }).sign(key);
}

const commands = {
  login: (argument) => login(argument),
  'login-access': (argument) => login(argument, batonResource),
  sign: async (argument) => ({ token: await sign(JSON.parse(argument), privateKey) }),
  forge: async (argument) => ({ token: await sign(JSON.parse(argument), foreignKey) }),
  'sign-es256': async (argument) => ({
    token: await sign(JSON.parse(argument), ecKey, { alg: 'ES256', kid: ecKid }),
  }),
  walk: async (argument) => {
    const [name, url] = argument.split(' ');
    return { location: await walk(new Jar(), url, name, consoleRedirectUri) };
  },
  'sign-with-header': async (argument) => {
    const { header, claims } = JSON.parse(argument);
    return { token: await sign(claims, privateKey, header) };
  },
};

for await (const line of createInterface({ input: process.stdin })) {
  const at = line.indexOf(' ');
  const [name, argument] = at < 0 ? [line, ''] : [line.slice(0, at), line.slice(at + 1)];
  try {
    const command = commands[name];
    if (!command) throw new Error(`unknown command ${name}`);
    answer(await command(argument));
  } catch (error) {
    answer({ error: String(error.message ?? error) });
  }
}
server.close();
process.exit(0);
