// Interop: the official MCP TypeScript SDK (@modelcontextprotocol/sdk), a
// client nobody here wrote, calling MCP servers that name Baton as their
// authorization server (RFC 9728). Started by tests/api/mcp.rs, which runs the
// broker and two `mcp_flights` servers and passes, in environment variables:
//
//   BROKER_URL     the broker's issuer, e.g. http://127.0.0.1:41234
//   MCP_URL        the flights MCP server (its resource identifier)
//   OTHER_MCP_URL  a second MCP server, registered the same way
//   ADMIN_TOKEN    the broker's admin credential, to approve as a person
//
// The tests run in order and share the sessions they open.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import * as jose from 'jose';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  discoverAuthorizationServerMetadata,
  discoverOAuthProtectedResourceMetadata,
  extractWWWAuthenticateParams,
} from '@modelcontextprotocol/sdk/client/auth.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { InvalidRequestError, InvalidScopeError, OAuthError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const APPROVER = 'travel-team@example.com';

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: these tests run from the Rust test (cargo nextest run --test api mcp::)`);
  }
  return value;
}

const BROKER_URL = required('BROKER_URL');
const MCP_URL = required('MCP_URL');
const OTHER_MCP_URL = required('OTHER_MCP_URL');
const ADMIN_TOKEN = required('ADMIN_TOKEN');

const TOKEN_ENDPOINT = `${BROKER_URL}/token`;
const AS_METADATA = new URL('/.well-known/oauth-authorization-server', BROKER_URL).href;

const secret = (agent) => `dev-only-${agent}-secret`;
const basic = (agent) => `Basic ${Buffer.from(`${agent}:${secret(agent)}`).toString('base64')}`;
const scopes = (value) => new Set((value ?? '').split(' ').filter(Boolean));

// Shared by the tests below, in order.
const opened = [];
let scout; // the scout's session (tests 1, 2)
let booker; // the booker's session on the full parent (tests 3, 5, 6)
let fullParent; // planner -> booker, flights.read flights.book

/**
 * The fetch the SDK uses for everything (MCP, discovery, token requests):
 * it records each exchange in `log` so that the tests can check what the
 * SDK sent and what it got, and lets `observe` see each exchange.
 */
function recordingFetch(log, observe) {
  return async (input, init = {}) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = (init.method ?? 'GET').toUpperCase();
    const entry = { method, url: url.href };
    if (url.href === TOKEN_ENDPOINT) {
      entry.form = Object.fromEntries(new URLSearchParams(String(init.body)));
      const authorization = new Headers(init.headers).get('authorization') ?? '';
      entry.client = authorization.startsWith('Basic ')
        ? Buffer.from(authorization.slice(6), 'base64').toString().split(':')[0]
        : undefined;
    } else if (url.href === MCP_URL && method === 'POST') {
      const message = JSON.parse(String(init.body));
      entry.rpc = message.method;
      entry.tool = message.params?.name;
    }
    const response = await fetch(input, init);
    entry.status = response.status;
    entry.challenge = response.headers.get('www-authenticate') ?? undefined;
    if (url.href === TOKEN_ENDPOINT) {
      entry.answer = await response.clone().json().catch(() => undefined);
    }
    log.push(entry);
    observe?.(entry, response);
    return response;
  };
}

/** One line per exchange, no tokens: for assertion messages. */
function summary(entries) {
  return entries
    .map((e) => {
      const what = e.rpc ? ` ${e.rpc}${e.tool ? ` ${e.tool}` : ''}` : '';
      const form = e.form
        ? ` grant=${e.form.grant_type} scope=${e.form.scope ?? '-'} resource=${e.form.resource ?? '-'}`
        : '';
      const answer = e.answer ? ` -> ${e.answer.error ?? `scope=${e.answer.scope}`}` : '';
      return `${e.method} ${e.url}${what}${form} ${e.status}${answer}${e.challenge ? ` [${e.challenge}]` : ''}`;
    })
    .join('\n');
}

/** The WWW-Authenticate of a recorded answer, read by the SDK's own parser. */
const challengeOf = (entry) =>
  extractWWWAuthenticateParams(new Response(null, { headers: { 'www-authenticate': entry.challenge ?? '' } }));
const tokenRequests = (entries) => entries.filter((e) => e.url === TOKEN_ENDPOINT);
const booked = (entries) => entries.some((e) => e.rpc === 'tools/call' && e.tool === 'book_flight' && e.status < 300);

/** A Client on MCP_URL with `provider`; connect() is left to the test. */
function session(provider, observe) {
  const log = [];
  const transport = new StreamableHTTPClientTransport(new URL(MCP_URL), {
    authProvider: provider,
    fetch: recordingFetch(log, observe),
  });
  const client = new Client({ name: 'baton-interop', version: '1.0.0' });
  opened.push(client);
  return { client, transport, provider, log, connect: () => client.connect(transport) };
}

async function refusalOf(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  return undefined;
}

/** The JSON a flights tool answered, from its one text content. */
function toolResult(result) {
  assert.notEqual(result.isError, true, `the tool failed: ${JSON.stringify(result.content)}`);
  assert.equal(result.content.length, 1);
  assert.equal(result.content[0].type, 'text');
  return JSON.parse(result.content[0].text);
}

const search = (client) => client.callTool({ name: 'search_flights', arguments: { from: 'CDG', to: 'JFK' } });
const book = (client) => client.callTool({ name: 'book_flight', arguments: { flight: 'BT101' } });

/** A token request outside the SDK, authenticated as `agent` (client_secret_basic). */
async function grant(agent, parameters) {
  const response = await fetch(TOKEN_ENDPOINT, {
    method: 'POST',
    headers: {
      authorization: basic(agent),
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    },
    body: new URLSearchParams(parameters),
  });
  const body = await response.json();
  assert.equal(response.status, 200, `${agent}'s ${parameters.grant_type}: ${JSON.stringify(body)}`);
  return body;
}

/** The orchestrator's token to the planner, exchanged by the planner for one to the booker with `scope`. */
async function parentForBooker(scope) {
  const root = await grant('orchestrator', {
    grant_type: 'client_credentials',
    audience: 'planner',
    scope: 'flights.read flights.book',
  });
  const hop = await grant('planner', {
    grant_type: EXCHANGE,
    subject_token: root.access_token,
    subject_token_type: ACCESS_TOKEN,
    audience: 'booker',
    scope,
  });
  assert.deepEqual(scopes(hop.scope), scopes(scope));
  return hop.access_token;
}

async function admin(method, path, body) {
  const response = await fetch(`${BROKER_URL}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const answer = await response.json();
  assert.equal(response.status, 200, `${method} ${path}: ${JSON.stringify(answer)}`);
  return answer;
}

const pendingApprovals = async () => (await admin('GET', '/admin/approvals?agent=booker')).approvals.map((a) => a.id);

/**
 * The booker's provider: an RFC 8693 token exchange of the token the planner
 * handed it, for the MCP server. The SDK adds `resource` (the protected
 * resource metadata's, verbatim) and authenticates the client with a method
 * the broker's metadata lists (client/auth.js, executeTokenRequest and
 * selectClientAuthMethod: client_secret_basic first).
 *
 * It asks for least privilege, `scope`, and steps up when the server says
 * so. The SDK re-authorizes on a 403 insufficient_scope, but it hands
 * prepareTokenRequest() `clientMetadata.scope`, not the challenge's scope
 * (client/auth.js, fetchToken), so the provider reads the challenge itself
 * (the transport's fetch shows it each exchange) and widens its scope.
 *
 * A scope that needs a person answers `authorization_pending`; the SDK keeps
 * only `error` and `error_description` of it (client/auth.js,
 * parseErrorResponse), so the approval id stays with the broker, and the
 * same request, repeated once a person approved it, gets the token.
 */
class TokenExchangeProvider {
  constructor(agent, subjectToken, scope) {
    this.agent = agent;
    this.subjectToken = subjectToken;
    this.scope = scope;
    this.held = undefined;
  }

  get redirectUrl() {
    return undefined; // non-interactive: the SDK calls prepareTokenRequest
  }

  get clientMetadata() {
    return { client_name: this.agent, redirect_uris: [], grant_types: [EXCHANGE], scope: this.scope };
  }

  clientInformation() {
    // Bound to Baton: the SDK sends the secret to no other server.
    return { client_id: this.agent, client_secret: secret(this.agent), issuer: BROKER_URL };
  }

  tokens() {
    return this.held;
  }

  saveTokens(tokens) {
    this.held = tokens;
  }

  invalidateCredentials(scope) {
    if (scope === 'tokens' || scope === 'all') this.held = undefined;
  }

  redirectToAuthorization() {
    throw new Error('no authorization endpoint: the booker exchanges tokens');
  }

  saveCodeVerifier() {}

  codeVerifier() {
    throw new Error('no authorization code flow');
  }

  prepareTokenRequest(scope) {
    const parameters = new URLSearchParams({
      grant_type: EXCHANGE,
      subject_token: this.subjectToken,
      subject_token_type: ACCESS_TOKEN,
    });
    if (scope) parameters.set('scope', scope);
    return parameters;
  }

  /** One exchange the SDK made, as recordingFetch saw it. */
  observe(entry, response) {
    if (entry.url !== MCP_URL || response.status !== 403) return;
    const { error, scope } = extractWWWAuthenticateParams(response);
    if (error === 'insufficient_scope' && scope) {
      this.scope = [...new Set([...scopes(this.scope), ...scopes(scope)])].join(' ');
    }
  }
}

function bookerSession(parent, scope) {
  const provider = new TokenExchangeProvider('booker', parent, scope);
  return session(provider, (entry, response) => provider.observe(entry, response));
}

function scoutProvider(scope) {
  return new ClientCredentialsProvider({
    clientId: 'scout',
    clientSecret: secret('scout'),
    expectedIssuer: BROKER_URL,
    scope,
  });
}

test('discovery: the SDK finds Baton from the MCP server\'s 401 and protected resource metadata', async () => {
  const resource = await discoverOAuthProtectedResourceMetadata(MCP_URL);
  assert.equal(resource.resource, MCP_URL);
  assert.deepEqual(resource.authorization_servers, [BROKER_URL]);
  assert.deepEqual(new Set(resource.scopes_supported), new Set(['flights.read', 'flights.book']));

  // The SDK's schema (shared/auth.js, OAuthMetadataSchema) needs more than
  // RFC 8414 does, authorization_endpoint among it: this parses only if
  // Baton's document satisfies it.
  const metadata = await discoverAuthorizationServerMetadata(BROKER_URL);
  assert.equal(metadata.issuer, BROKER_URL);
  assert.equal(metadata.token_endpoint, TOKEN_ENDPOINT);
  assert.equal(metadata.revocation_endpoint, `${BROKER_URL}/revoke`);
  assert.ok(metadata.grant_types_supported.includes('client_credentials'));
  assert.ok(metadata.grant_types_supported.includes(EXCHANGE));
  assert.ok(metadata.token_endpoint_auth_methods_supported.includes('client_secret_basic'));

  // The SDK's own walk, seen on the wire: initialize without a token, the
  // 401's resource_metadata, Baton's metadata, the token, initialize again.
  scout = session(scoutProvider('flights.read'));
  await scout.connect();
  const log = scout.log;
  const first = log[0];
  assert.equal(first.rpc, 'initialize');
  assert.equal(first.status, 401, summary(log));
  const { resourceMetadataUrl } = challengeOf(first);
  assert.ok(resourceMetadataUrl, `a resource_metadata in the 401: ${first.challenge}`);
  const order = (predicate, what) => {
    const index = log.findIndex(predicate);
    assert.ok(index > 0, `${what}:\n${summary(log)}`);
    return index;
  };
  const fetched = (url) => (e) => e.method === 'GET' && e.url === url && e.status === 200;
  const read = order(fetched(resourceMetadataUrl.href), 'the protected resource metadata');
  const found = order(fetched(AS_METADATA), 'Baton\'s metadata');
  const token = order((e) => e.url === TOKEN_ENDPOINT, 'a token request');
  const again = order((e, i) => i > 0 && e.rpc === 'initialize' && e.status === 200, 'initialize with the token');
  assert.ok(read < found && found < token && token < again, summary(log));
  const request = log[token];
  assert.equal(request.form.grant_type, 'client_credentials');
  assert.equal(request.form.resource, MCP_URL, 'RFC 8707: the resource is the MCP server');
  assert.equal(request.client, 'scout', 'client_secret_basic, as the metadata allows');
  assert.equal(request.form.client_secret, undefined, 'the secret only in the Authorization header');
  assert.equal(request.status, 200, summary(log));
});

test('client credentials: the scout lists and searches, and cannot book', async () => {
  const { client, log, provider } = scout;
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((tool) => tool.name).sort(), ['book_flight', 'search_flights']);

  const found = toolResult(await search(client));
  assert.ok(found.flights.length > 0);
  assert.equal(found.caller.agent, 'scout');
  assert.equal(found.caller.subject, 'scout', 'an agent acting for itself');

  const claims = jose.decodeJwt(provider.tokens().access_token);
  assert.equal(claims.aud, MCP_URL);
  assert.deepEqual(scopes(claims.scope), new Set(['flights.read']));

  const mark = log.length;
  const refusal = await refusalOf(book(client));
  const during = log.slice(mark);
  assert.ok(refusal, `book_flight went through for the scout:\n${summary(during)}`);
  assert.ok(!booked(during), summary(during));
  const challenge = during.find((e) => e.tool === 'book_flight' && e.status === 403);
  assert.ok(challenge, `a 403 for book_flight:\n${summary(during)}`);
  const asked = challengeOf(challenge);
  assert.equal(asked.error, 'insufficient_scope', challenge.challenge);
  assert.ok(scopes(asked.scope).has('flights.book'), challenge.challenge);
  assert.ok(asked.resourceMetadataUrl, challenge.challenge);
  // The SDK re-authorizes once, asking the provider's configured scope again
  // rather than the challenge's (client/auth.js, fetchToken), then gives up on
  // the same 403; whatever it asks, no token the scout gets can book.
  assert.ok(tokenRequests(during).length > 0, `the SDK tried to step up:\n${summary(during)}`);
  for (const entry of tokenRequests(log)) {
    assert.ok(!scopes(entry.answer?.scope).has('flights.book'), summary(log));
  }

  // The scout asking Baton for flights.book through the SDK: policy says no.
  const greedy = session(scoutProvider('flights.read flights.book'));
  const denied = await refusalOf(greedy.connect());
  assert.ok(denied instanceof InvalidScopeError, `refused with ${denied}:\n${summary(greedy.log)}`);
  assert.equal(tokenRequests(greedy.log).at(-1)?.answer?.error, 'invalid_scope', summary(greedy.log));
  assert.ok(!booked(greedy.log));
});

test('delegated exchange: the booker reads with least privilege, steps up, waits for a person, books', async () => {
  fullParent = await parentForBooker('flights.read flights.book');
  booker = bookerSession(fullParent, 'flights.read');
  const { client, log, provider } = booker;
  await booker.connect();
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((tool) => tool.name).sort(), ['book_flight', 'search_flights']);

  const first = tokenRequests(log);
  assert.equal(first.length, 1, summary(log));
  assert.equal(first[0].form.grant_type, EXCHANGE);
  assert.equal(first[0].form.subject_token, fullParent);
  assert.equal(first[0].form.subject_token_type, ACCESS_TOKEN);
  assert.equal(first[0].form.resource, MCP_URL, 'the SDK adds the resource');
  assert.equal(first[0].form.scope, 'flights.read', 'least privilege first');
  assert.equal(first[0].client, 'booker', 'the SDK authenticates the acting agent');
  assert.equal(first[0].form.client_secret, undefined);
  assert.deepEqual(scopes(provider.tokens().scope), new Set(['flights.read']));

  const found = toolResult(await search(client));
  assert.equal(found.caller.agent, 'booker');
  assert.equal(found.caller.subject, 'orchestrator');
  assert.deepEqual(found.caller.chain, ['booker', 'planner']);

  // 403 insufficient_scope -> the SDK re-authorizes -> the exchange for
  // flights.book waits for a person -> the call fails.
  const before = await pendingApprovals();
  let mark = log.length;
  const pending = await refusalOf(book(client));
  let during = log.slice(mark);
  assert.ok(pending, `booked without a person:\n${summary(during)}`);
  assert.ok(!booked(during), summary(during));
  // The SDK knows no authorization_pending: it surfaces as an OAuth error
  // (client/auth.js, parseErrorResponse: an unknown code becomes ServerError).
  assert.ok(pending instanceof OAuthError, `failed with ${pending}`);
  const stepUp = tokenRequests(during);
  assert.equal(stepUp.length, 1, summary(during));
  assert.deepEqual(scopes(stepUp[0].form.scope), new Set(['flights.read', 'flights.book']));
  assert.equal(stepUp[0].form.subject_token, fullParent);
  assert.equal(stepUp[0].form.resource, MCP_URL);
  assert.equal(stepUp[0].status, 400);
  assert.equal(stepUp[0].answer.error, 'authorization_pending', summary(during));
  // The person finds the request in the admin API.
  const waiting = (await pendingApprovals()).filter((id) => !before.includes(id));
  assert.deepEqual(waiting, [stepUp[0].answer.approval_id], 'one new approval, the one the broker named');
  const [approvalId] = waiting;
  assert.deepEqual(scopes(provider.tokens().scope), new Set(['flights.read']), 'still the read-only token');

  await admin('POST', `/admin/approvals/${encodeURIComponent(approvalId)}/approve`, { approver: APPROVER });
  assert.ok(!(await pendingApprovals()).includes(approvalId), 'no longer pending');

  // The SDK does not step up twice on the same challenge until a request
  // has succeeded (streamableHttp.js, _lastUpscopingHeader): the booker
  // keeps reading meanwhile, which also shows the read token still works.
  assert.equal(toolResult(await search(client)).caller.agent, 'booker');

  mark = log.length;
  const receipt = toolResult(await book(client));
  during = log.slice(mark);
  assert.equal(receipt.booked, true);
  assert.equal(receipt.flight, 'BT101');
  assert.equal(receipt.by, 'booker');
  assert.equal(receipt.for, 'orchestrator');
  assert.deepEqual(receipt.chain, ['booker', 'planner']);
  const approved = tokenRequests(during);
  assert.equal(approved.length, 1, summary(during));
  assert.deepEqual(scopes(approved[0].form.scope), new Set(['flights.read', 'flights.book']), 'the same request');
  assert.equal(approved[0].form.approval_id, undefined, 'the SDK knows no approval ids');
  assert.equal(approved[0].form.subject_token, fullParent);
  assert.equal(approved[0].status, 200, summary(during));

  const held = provider.tokens();
  assert.ok(scopes(held.scope).has('flights.book'), `held scope ${held.scope}`);
  const claims = jose.decodeJwt(held.access_token);
  assert.ok(scopes(claims.scope).has('flights.book'), `token scope ${claims.scope}`);
  assert.equal(claims.aud, MCP_URL);
  assert.equal(claims.sub, 'orchestrator');
  assert.equal(claims.client_id, 'booker');
  assert.deepEqual(claims.act, { sub: 'booker', act: { sub: 'planner' } });
  assert.equal(claims.delegation.approval?.id, approvalId, 'the token records the approval');
  assert.equal(claims.delegation.approval?.approver, APPROVER);
});

test('step-up stays within the parent: a read-only parent cannot become a booking', async () => {
  const readOnly = await parentForBooker('flights.read');
  const { client, log, connect } = bookerSession(readOnly, 'flights.read');
  await connect();
  const found = toolResult(await search(client));
  assert.deepEqual(found.caller.chain, ['booker', 'planner']);

  const before = await pendingApprovals();
  const mark = log.length;
  const refusal = await refusalOf(book(client));
  const during = log.slice(mark);
  assert.ok(refusal, `booked beyond the parent:\n${summary(during)}`);
  assert.ok(refusal instanceof InvalidScopeError, `failed with ${refusal}`);
  assert.ok(!booked(during), summary(during));
  const stepUp = tokenRequests(during);
  assert.equal(stepUp.length, 1, summary(during));
  assert.ok(scopes(stepUp[0].form.scope).has('flights.book'));
  assert.equal(stepUp[0].answer.error, 'invalid_scope', summary(during));
  assert.equal(stepUp[0].answer.approval_id, undefined);
  const after = await pendingApprovals();
  assert.deepEqual(after.filter((id) => !before.includes(id)), [], 'no approval asked of anyone');
});

test('a token for one MCP server is refused by another', async () => {
  const token = booker.provider.tokens().access_token;
  const response = await fetch(OTHER_MCP_URL, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
    },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: {
        protocolVersion: LATEST_PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: 'baton-interop', version: '1.0.0' },
      },
    }),
  });
  await response.body?.cancel();
  assert.equal(response.status, 401);
  const { error, resourceMetadataUrl } = extractWWWAuthenticateParams(response);
  assert.equal(error, 'invalid_token', response.headers.get('www-authenticate'));
  assert.ok(resourceMetadataUrl, response.headers.get('www-authenticate'));
  assert.equal(resourceMetadataUrl.origin, new URL(OTHER_MCP_URL).origin, 'the other server\'s own metadata');
});

test('revocation: revoking the planner\'s token stops the booker\'s session', async () => {
  const { client, log } = booker;
  const response = await fetch(`${BROKER_URL}/revoke`, {
    method: 'POST',
    headers: { authorization: basic('booker'), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: fullParent, token_type_hint: 'access_token' }),
  });
  await response.body?.cancel();
  assert.equal(response.status, 200, 'RFC 7009: revoked by the agent it is addressed to');

  const mark = log.length;
  const refusal = await refusalOf(search(client));
  const during = log.slice(mark);
  assert.ok(refusal, `a revoked chain still searches:\n${summary(during)}`);
  const rejected = during.find((e) => e.rpc === 'tools/call');
  assert.equal(rejected?.status, 401, summary(during));
  assert.match(rejected.challenge, /error="invalid_token"/);
  // The SDK re-authorizes with the revoked parent, and the broker says no.
  const retry = tokenRequests(during);
  assert.equal(retry.length, 1, summary(during));
  assert.equal(retry[0].form.subject_token, fullParent);
  assert.equal(retry[0].answer.error, 'invalid_request', summary(during));
  assert.ok(refusal instanceof InvalidRequestError, `failed with ${refusal}`);
  assert.ok(!during.some((e) => e.rpc === 'tools/call' && e.status < 300), summary(during));
});

after(async () => {
  await Promise.allSettled(opened.map((client) => client.close()));
});
