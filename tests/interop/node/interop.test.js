// Interop: openid-client and jose, libraries nobody here wrote, against a
// running Baton broker. Started by tests/api/interop.rs, which runs the
// broker binary and passes its address and files in environment variables:
//
//   BATON_ISSUER             the broker's issuer, e.g. http://127.0.0.1:41234
//   BATON_INTEROP_CLIENT_KEY a private JWK (ES256) registered for the agent
//                            `orchestrator-jwt` (private_key_jwt, RFC 7523)
//   BATON_INTEROP_TOKENS     where to write every token issued here, for the
//                            Python tests to verify with PyJWT
//   BATON_BIN, BATON_DIR     the baton binary and the broker's folder, to run
//                            `baton keys rotate` in the middle of the walk
//
// The tests run in order and share the tokens they obtain.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';

import * as client from 'openid-client';
import * as jose from 'jose';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const AIRLINE = 'https://api.airline.example';

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: these tests run from the Rust test (cargo nextest run interop)`);
  }
  return value;
}

const ISSUER = required('BATON_ISSUER');
const CLIENT_KEY = required('BATON_INTEROP_CLIENT_KEY');
const TOKENS_FILE = required('BATON_INTEROP_TOKENS');
const BATON_BIN = required('BATON_BIN');
const BATON_DIR = required('BATON_DIR');

const secret = (agent) => `dev-only-${agent}-secret`;

// Shared by the tests below, in order.
let metadata;
let jwksUri;
// The JWKS cache of a long-lived API. jose refuses to refetch a JWKS on an
// unknown `kid` for `cooldownDuration` (30 s by default) after the last fetch;
// Baton signs with a new key as soon as it rotates, so an API that fetched
// the set just before would reject fresh tokens for up to that long. The test
// turns the cooldown off so that it needs no 30 s wait, and still shows the
// cache picking up the rotated key by itself.
let apiJwks;
let signWithKey; // client authentication of orchestrator-jwt (private_key_jwt)
let kidBeforeRotation;
const issued = []; // { label, phase, audience, token }

function insecure(config) {
  // The broker listens on plain http on loopback in these tests.
  client.allowInsecureRequests(config);
  return config;
}

/** A client of the discovered server, authenticating as `agent`. */
function configFor(agent, authentication) {
  return insecure(new client.Configuration(metadata, agent, undefined, authentication));
}

function basic(agent) {
  return configFor(agent, client.ClientSecretBasic(secret(agent)));
}

/** RFC 9068 §4: typ, signature, issuer, audience, with the broker's JWKS. */
async function verify(token, audience, jwks = apiJwks) {
  return jose.jwtVerify(token, jwks, {
    typ: 'at+jwt',
    issuer: ISSUER,
    audience,
    algorithms: ['ES256', 'EdDSA'],
  });
}

function record(label, phase, audience, token) {
  issued.push({ label, phase, audience, token });
}

/**
 * client credentials for `root`, then planner -> booker -> airline API, each
 * hop a genericGrantRequest token exchange; every token verified with jose.
 */
async function walk(label, phase, root, { plannerAuth = basic('planner'), bookerAuth = basic('booker') } = {}) {
  const first = await client.genericGrantRequest(root, 'client_credentials', { audience: 'planner' });
  assert.equal(first.token_type, 'bearer');
  const rootId = root.clientMetadata().client_id;

  const second = await client.genericGrantRequest(plannerAuth, EXCHANGE, {
    subject_token: first.access_token,
    subject_token_type: ACCESS_TOKEN,
    audience: 'booker',
  });
  assert.equal(second.issued_token_type, ACCESS_TOKEN);

  const third = await client.genericGrantRequest(bookerAuth, EXCHANGE, {
    subject_token: second.access_token,
    subject_token_type: ACCESS_TOKEN,
    resource: AIRLINE,
    scope: 'flights.book',
  });
  assert.equal(third.issued_token_type, ACCESS_TOKEN);
  assert.equal(third.token_type, 'bearer');
  assert.equal(third.scope, 'flights.book');
  assert.ok(third.expires_in > 0 && third.expires_in <= 300, `expires_in ${third.expires_in}`);

  const r = await verify(first.access_token, 'planner');
  assert.equal(r.protectedHeader.typ, 'at+jwt');
  assert.equal(r.payload.sub, rootId);
  assert.equal(r.payload.client_id, rootId);
  assert.equal(r.payload.aud, 'planner');
  assert.equal(r.payload.act, undefined, 'a root token has no actor');

  const h1 = await verify(second.access_token, 'booker');
  assert.equal(h1.payload.sub, rootId);
  assert.equal(h1.payload.client_id, 'planner');
  assert.deepEqual(h1.payload.act, { sub: 'planner' });

  const h2 = await verify(third.access_token, AIRLINE);
  assert.equal(typeof h2.payload.aud, 'string', 'aud is a single string');
  assert.equal(h2.payload.aud, AIRLINE);
  assert.equal(h2.payload.sub, rootId);
  assert.equal(h2.payload.client_id, 'booker');
  assert.equal(h2.payload.scope, 'flights.book');
  assert.deepEqual(h2.payload.act, { sub: 'booker', act: { sub: 'planner' } });
  assert.ok(h2.payload.exp <= h1.payload.exp && h1.payload.exp <= r.payload.exp, 'only narrower: exp');
  assert.equal(h2.payload.delegation.depth, 2);
  assert.deepEqual(
    h2.payload.delegation.hops.map((hop) => hop.jti),
    [r.payload.jti, h1.payload.jti],
    'the delegation hops are the ancestors, root first',
  );
  for (const { payload } of [r, h1, h2]) {
    for (const claim of ['iss', 'sub', 'aud', 'client_id', 'scope', 'iat', 'exp', 'jti']) {
      assert.ok(payload[claim] !== undefined, `${claim} is present`);
    }
  }

  record(`${label} root`, phase, 'planner', first.access_token);
  record(`${label} hop 1`, phase, 'booker', second.access_token);
  record(`${label} hop 2`, phase, AIRLINE, third.access_token);
  return { root: first.access_token, hop1: second.access_token, hop2: third.access_token, kid: r.protectedHeader.kid };
}

test('discovery: openid-client reads both metadata documents', async () => {
  const oidc = await client.discovery(new URL(ISSUER), 'orchestrator', undefined, undefined, {
    execute: [client.allowInsecureRequests],
  });
  const oauth = await client.discovery(new URL(ISSUER), 'orchestrator', undefined, undefined, {
    execute: [client.allowInsecureRequests],
    algorithm: 'oauth2',
  });
  metadata = oidc.serverMetadata();
  assert.deepEqual(oauth.serverMetadata(), metadata, 'RFC 8414 and OIDC discovery agree');
  assert.equal(metadata.issuer, ISSUER);
  assert.ok(metadata.grant_types_supported.includes(EXCHANGE));
  for (const method of ['client_secret_basic', 'client_secret_post', 'private_key_jwt']) {
    assert.ok(metadata.token_endpoint_auth_methods_supported.includes(method), method);
  }
  jwksUri = new URL(metadata.jwks_uri);
  apiJwks = jose.createRemoteJWKSet(jwksUri, { cooldownDuration: 0 });
  const jwk = JSON.parse(await readFile(CLIENT_KEY, 'utf8'));
  const key = await jose.importJWK(jwk, 'ES256');
  signWithKey = () => client.PrivateKeyJwt({ key, kid: jwk.kid });
});

test('client_secret_basic: client credentials and a three-hop exchange', async () => {
  const { kid } = await walk('basic', 'before', basic('orchestrator'));
  kidBeforeRotation = kid;
});

test('private_key_jwt first hop (then client_secret_post): the same walk', async () => {
  const root = configFor('orchestrator-jwt', signWithKey());
  const post = (agent) => configFor(agent, client.ClientSecretPost(secret(agent)));
  await walk('private_key_jwt', 'before', root, { plannerAuth: post('planner'), bookerAuth: post('booker') });
});

test('DPoP (RFC 9449): openid-client binds every hop to its agent\'s key', async () => {
  const agents = ['orchestrator', 'planner', 'booker'];
  const keys = Object.fromEntries(await Promise.all(agents.map(async (agent) => [agent, await client.randomDPoPKeyPair('ES256')])));
  const thumbprint = async (agent) => jose.calculateJwkThumbprint(await jose.exportJWK(keys[agent].publicKey));
  const as = (agent) => {
    const config = basic(agent);
    return { config, DPoP: client.getDPoPHandle(config, keys[agent]) };
  };
  const grant = (agent, grantType, parameters) => {
    const { config, DPoP } = as(agent);
    return client.genericGrantRequest(config, grantType, parameters, { DPoP });
  };

  const root = await grant('orchestrator', 'client_credentials', { audience: 'planner' });
  const hop1 = await grant('planner', EXCHANGE, {
    subject_token: root.access_token, subject_token_type: ACCESS_TOKEN, audience: 'booker',
  });
  const hop2 = await grant('booker', EXCHANGE, {
    subject_token: hop1.access_token, subject_token_type: ACCESS_TOKEN, resource: AIRLINE, scope: 'flights.read',
  });
  for (const response of [root, hop1, hop2]) {
    assert.equal(response.token_type, 'dpop', 'RFC 9449 §5: token_type DPoP');
  }
  const last = await verify(hop2.access_token, AIRLINE);
  assert.equal(last.payload.cnf.jkt, await thumbprint('booker'), 'bound to the exchanging agent\'s key');
  assert.deepEqual(
    last.payload.delegation.hops.map((hop) => hop.jkt),
    [await thumbprint('orchestrator'), await thumbprint('planner')],
    'the path records every hop\'s key',
  );

  // The booker without its key: the bound chain stays bound.
  let refusal;
  try {
    await client.genericGrantRequest(basic('booker'), EXCHANGE, {
      subject_token: hop1.access_token, subject_token_type: ACCESS_TOKEN, resource: AIRLINE, scope: 'flights.read',
    });
  } catch (error) {
    refusal = error;
  }
  assert.ok(refusal, 'an unbound exchange of a bound token is refused');
  assert.equal(refusal.error, 'invalid_dpop_proof');
});

test('a wrong secret is refused: 401 invalid_client with a Basic challenge', async () => {
  const wrong = configFor('orchestrator', client.ClientSecretBasic('not-the-secret'));
  let refusal;
  try {
    await client.genericGrantRequest(wrong, 'client_credentials', { audience: 'planner' });
  } catch (error) {
    refusal = error;
  }
  // RFC 6749 §5.2: a client that authenticated with Basic gets a 401 and a
  // WWW-Authenticate challenge, which the library surfaces as such.
  assert.ok(refusal instanceof client.WWWAuthenticateChallengeError, `refused with ${refusal}`);
  assert.equal(refusal.status, 401);
  assert.equal(refusal.cause[0].scheme, 'basic');
  assert.equal((await refusal.response.json()).error, 'invalid_client');
});

test('introspection through openid-client (the airline API)', async () => {
  const airline = configFor('airline-api', client.ClientSecretBasic('dev-only-airline-api-secret'));
  const last = issued.find((entry) => entry.label === 'basic hop 2');
  const answer = await client.tokenIntrospection(airline, last.token);
  assert.equal(answer.active, true);
  assert.equal(answer.sub, 'orchestrator');
  assert.deepEqual(answer.act, { sub: 'booker', act: { sub: 'planner' } });
});

test('key rotation: tokens signed before and after `baton keys rotate` both verify', { timeout: 60_000 }, async () => {
  await promisify(execFile)(BATON_BIN, ['keys', 'rotate'], { cwd: BATON_DIR, env: {}, timeout: 20_000 });

  // A running broker reloads its key folder within 10 s: poll, bounded.
  const orchestrator = basic('orchestrator');
  let rotated = false;
  for (let attempt = 0; attempt < 60 && !rotated; attempt++) {
    const { access_token } = await client.genericGrantRequest(orchestrator, 'client_credentials', {
      audience: 'planner',
    });
    rotated = jose.decodeProtectedHeader(access_token).kid !== kidBeforeRotation;
    if (!rotated) await new Promise((resolve) => setTimeout(resolve, 500));
  }
  assert.ok(rotated, 'the rotated key never started signing');

  const after = await walk('basic after rotation', 'after', basic('orchestrator'));
  assert.notEqual(after.kid, kidBeforeRotation);
  await walk('private_key_jwt after rotation', 'after', configFor('orchestrator-jwt', signWithKey()));

  // Both keys are published, and every token verifies: with the API's
  // long-lived cache (which refetched on the new kid) and with a fresh one.
  const served = await (await fetch(jwksUri)).json();
  const kids = served.keys.map((jwk) => jwk.kid);
  assert.ok(kids.includes(kidBeforeRotation) && kids.includes(after.kid), `JWKS kids: ${kids}`);
  const fresh = jose.createRemoteJWKSet(jwksUri);
  const phases = new Set();
  for (const entry of issued) {
    for (const jwks of [apiJwks, fresh]) {
      const { payload } = await verify(entry.token, entry.audience, jwks);
      assert.equal(payload.iss, ISSUER, entry.label);
    }
    phases.add(`${entry.phase} ${jose.decodeProtectedHeader(entry.token).kid}`);
  }
  assert.equal(phases.size, 2, `tokens from exactly two keys, one each side of the rotation: ${[...phases]}`);
});

after(async () => {
  // The Python tests verify the same tokens with PyJWT.
  await writeFile(TOKENS_FILE, JSON.stringify({ issuer: ISSUER, tokens: issued }, null, 2));
});
