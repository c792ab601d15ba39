"""Interop: the official MCP Python SDK (`mcp`, pinned in requirements.txt)
against Baton as the authorization server of two MCP servers (the `mcp_flights`
example). Started by tests/api/mcp.rs, which passes in environment variables:

  BROKER_URL      the broker's issuer, e.g. http://127.0.0.1:41234
  MCP_URL         the flights MCP server (its resource identifier)
  OTHER_MCP_URL   a second flights MCP server, registered the same way
  ADMIN_TOKEN     the broker's admin credential, to approve as a person

The SDK does the MCP side on its own: the 401, RFC 9728 protected resource
metadata, RFC 8414 metadata of the server it names, the token request with
`resource` (RFC 8707), and the step-up on a 403 insufficient_scope. The agents
are the example's (policies/agents.toml). Run with the stdlib runner:
`python test_mcp.py`, or `python -m unittest -v test_mcp` from this folder.
"""

import json
import os
import unittest
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache

import anyio
import httpx2
import jwt
from mcp.client.auth import OAuthClientProvider, OAuthFlowError, OAuthTokenError
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
# The owner of the example's travel agents, who approves bookings.
APPROVER = "travel-team@example.com"
TIMEOUT = 20  # seconds, for every HTTP call and every MCP request
# A whole session (connect, discovery, tokens, a few calls) ends within this.
SESSION_LIMIT = 4 * TIMEOUT
TOOLS = {"search_flights", "book_flight"}
SEARCH = {"from": "CDG", "to": "JFK"}


@dataclass(frozen=True)
class Environment:
    broker: str
    mcp: str
    other_mcp: str
    admin_token: str


@cache
def environment():
    def required(name):
        value = os.environ.get(name)
        if not value:
            raise RuntimeError(f"{name} is not set: tests/api/mcp.rs runs these (cargo nextest run mcp::)")
        return value

    names = ("BROKER_URL", "MCP_URL", "OTHER_MCP_URL", "ADMIN_TOKEN")
    return Environment(*(required(name) for name in names))


def setUpModule():
    # Loudly, before any test, rather than once per test.
    environment()


def secret(agent):
    return f"dev-only-{agent}-secret"


class MemoryStorage:
    """The SDK's TokenStorage, in memory. `client` is the agent's registration
    at Baton (agents are registered in policies/agents.toml: Baton has no
    dynamic client registration), which the SDK then uses as is."""

    def __init__(self, client=None):
        self.tokens = None
        self.client = client

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


class TokenExchangeProvider(OAuthClientProvider):
    """An agent's MCP client whose grant is RFC 8693 token exchange: it trades
    the token it was handed (`subject_token`) for one addressed to the MCP server.

    Built like the SDK's ClientCredentialsOAuthProvider, on the same base
    class: discovery, `resource`, client authentication and the 401 / 403
    handling (scope selection, step-up) stay the SDK's. Only the token
    request differs."""

    def __init__(self, server_url, agent, subject_token, scope, issuer):
        grant = {
            "redirect_uris": None,
            "grant_types": [EXCHANGE],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": scope,
        }
        client = OAuthClientInformationFull(client_id=agent, client_secret=secret(agent), **grant)
        super().__init__(server_url, OAuthClientMetadata(**grant), MemoryStorage(client))
        self.subject_token = subject_token
        self.issuer = issuer

    async def _perform_authorization(self):
        # The parent token goes to the configured authorization server only,
        # whatever an MCP server's metadata names.
        metadata = self.context.oauth_metadata
        if metadata is None or str(metadata.issuer) != self.issuer:
            raise OAuthFlowError(f"no metadata discovered for {self.issuer}; not sending the subject token")
        form = {"grant_type": EXCHANGE, "subject_token": self.subject_token, "subject_token_type": ACCESS_TOKEN}
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        form, headers = self.context.prepare_token_auth(form, headers)
        if self.context.should_include_resource_param(self.context.protocol_version):
            form["resource"] = self.context.get_resource_url()
        if self.context.client_metadata.scope:
            form["scope"] = self.context.client_metadata.scope
        return httpx2.Request("POST", str(metadata.token_endpoint), data=form, headers=headers)


@dataclass(frozen=True)
class Exchange:
    method: str
    url: str
    status: int
    challenge: str  # WWW-Authenticate

    def __str__(self):
        return f"  {self.method} {self.url} -> {self.status} {self.challenge}"


class Traffic:
    """Every HTTP exchange of a client, auth flow included (httpx2 runs the
    response hooks for the requests an Auth makes, too)."""

    def __init__(self):
        self.exchanges = []

    async def __call__(self, response):
        challenge = response.headers.get("WWW-Authenticate", "")
        request = response.request
        self.exchanges.append(Exchange(request.method, str(request.url), response.status_code, challenge))

    def to(self, url):
        return [(exchange.method, exchange.status) for exchange in self.exchanges if exchange.url == url]

    def with_status(self, status):
        return [exchange for exchange in self.exchanges if exchange.status == status]

    def describe(self):
        return "\n".join(map(str, self.exchanges))


@asynccontextmanager
async def mcp_session(url, auth, traffic=None):
    """An initialized MCP session over streamable HTTP, authorized by `auth`."""
    hooks = {"response": [traffic]} if traffic is not None else {}
    async with httpx2.AsyncClient(auth=auth, timeout=TIMEOUT, event_hooks=hooks) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=TIMEOUT) as session:
                await session.initialize()
                yield session


def leaves(error):
    """The errors inside (nested) exception groups: the SDK's transport runs
    each request in a task group, so an auth failure arrives wrapped."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


async def refused(run):
    """The errors `run()` failed with; an AssertionError if it went through."""
    with anyio.fail_after(SESSION_LIMIT):
        try:
            await run()
        except Exception as error:
            errors = list(leaves(error))
            # A failed assertion inside `run` is the test's failure, not a refusal.
            for failure in errors:
                if isinstance(failure, AssertionError):
                    raise failure
            return errors
    raise AssertionError("expected a refusal, but the call went through")


def token_errors(errors):
    """What the broker answered where the SDK's token request failed."""
    return [str(error) for error in errors if isinstance(error, OAuthTokenError)]


def payload(result):
    """A tool result: one text content holding JSON."""
    assert not result.is_error, result
    assert len(result.content) == 1, result.content
    return json.loads(result.content[0].text)


def parse_challenge(header):
    """The auth-params of a `Bearer …` WWW-Authenticate value."""
    scheme, _, params = header.partition(" ")
    assert scheme == "Bearer", header
    fields = {}
    for part in params.split(","):
        key, _, value = part.strip().partition("=")
        fields[key] = value.strip('"')
    return fields


class Broker:
    """Plain HTTP to the broker, for what an agent's MCP client does not do:
    the tokens handed to the agent, revocation, and the person who approves."""

    def __init__(self, env, http):
        self.env = env
        self.http = http

    async def token(self, agent, form):
        response = await self.http.post(f"{self.env.broker}/token", auth=(agent, secret(agent)), data=form)
        assert response.status_code == 200, f"{agent}: {response.status_code} {response.text}"
        return response.json()["access_token"]

    async def parent_for_booker(self, scope):
        """orchestrator (client credentials, to the planner) -> planner
        (exchange, to the booker with `scope`): the token the booker is handed."""
        root = await self.token(
            "orchestrator",
            {"grant_type": "client_credentials", "audience": "planner", "scope": "flights.read flights.book"},
        )
        return await self.token(
            "planner",
            {
                "grant_type": EXCHANGE,
                "subject_token": root,
                "subject_token_type": ACCESS_TOKEN,
                "audience": "booker",
                "scope": scope,
            },
        )

    async def revoke(self, agent, token):
        """RFC 7009 §2.2: 200 with an empty body."""
        url = f"{self.env.broker}/revoke"
        response = await self.http.post(url, auth=(agent, secret(agent)), data={"token": token})
        assert response.status_code == 200, f"{response.status_code}: {response.text}"

    async def admin(self, method, path, **kwargs):
        headers = {"Authorization": f"Bearer {self.env.admin_token}"}
        response = await self.http.request(method, f"{self.env.broker}{path}", headers=headers, **kwargs)
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    async def pending_approvals(self, agent, parent):
        """The approvals waiting for `agent`'s exchanges of `parent`."""
        listed = await self.admin("GET", "/admin/approvals", params={"agent": agent, "limit": 100})
        return [entry for entry in listed["approvals"] if entry["request"].get("parent_jti") == jti(parent)]

    async def approve(self, approval_id):
        return await self.admin("POST", f"/admin/approvals/{approval_id}/approve", json={"approver": APPROVER})


def jti(token):
    # Only to match the token with the broker's approval records: the MCP
    # servers are the ones that validate tokens here.
    return jwt.decode(token, options={"verify_signature": False})["jti"]


class McpTestCase(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.env = environment()
        self.http = await self.enterAsyncContext(httpx2.AsyncClient(timeout=TIMEOUT))
        self.broker = Broker(self.env, self.http)

    def scout(self):
        """The SDK's own client-credentials provider (MCP's client-credentials
        extension), as the scout."""
        return ClientCredentialsOAuthProvider(
            server_url=self.env.mcp,
            storage=MemoryStorage(),
            client_id="scout",
            client_secret=secret("scout"),
            scope="flights.read",
            issuer=self.env.broker,
        )

    def booker(self, parent, scope):
        return TokenExchangeProvider(self.env.mcp, "booker", parent, scope, self.env.broker)

    async def search(self, session, agent):
        answer = payload(await session.call_tool("search_flights", SEARCH))
        self.assertTrue(answer["flights"], answer)
        self.assertEqual(answer["caller"]["agent"], agent, answer)
        return answer

    async def tool_names(self, session):
        return {tool.name for tool in (await session.list_tools()).tools}


class Discovery(McpTestCase):
    async def test_the_sdk_finds_baton_from_the_mcp_servers_metadata(self):
        provider = self.scout()
        traffic = Traffic()
        with anyio.fail_after(SESSION_LIMIT):
            async with mcp_session(self.env.mcp, provider, traffic) as session:
                self.assertEqual(await self.tool_names(session), TOOLS)
        log = traffic.describe()

        # The first request had no token: a 401 naming the metadata (RFC 9728 §5.1).
        first = traffic.exchanges[0]
        self.assertEqual((first.method, first.url, first.status), ("POST", self.env.mcp, 401), log)
        metadata_url = parse_challenge(first.challenge)["resource_metadata"]
        self.assertEqual(traffic.to(metadata_url), [("GET", 200)], log)

        # What the SDK took from it, and from the authorization server it names.
        context = provider.context
        self.assertEqual(str(context.protected_resource_metadata.resource), self.env.mcp)
        servers = [str(url) for url in context.protected_resource_metadata.authorization_servers]
        self.assertEqual(servers, [self.env.broker])
        self.assertEqual(context.auth_server_url, self.env.broker)
        self.assertIsNotNone(context.oauth_metadata, f"the SDK kept no authorization server metadata:\n{log}")
        self.assertEqual(str(context.oauth_metadata.issuer), self.env.broker)
        self.assertEqual(str(context.oauth_metadata.token_endpoint), f"{self.env.broker}/token")
        as_metadata = f"{self.env.broker}/.well-known/oauth-authorization-server"
        self.assertEqual(traffic.to(as_metadata), [("GET", 200)], log)
        # RFC 8707: the token is asked for the MCP server's own URL.
        self.assertEqual(context.get_resource_url(), self.env.mcp)
        self.assertEqual(traffic.to(f"{self.env.broker}/token"), [("POST", 200)], log)
        claims = jwt.decode(context.current_tokens.access_token, options={"verify_signature": False})
        self.assertEqual(claims["aud"], self.env.mcp)
        self.assertEqual(claims["iss"], self.env.broker)


class ClientCredentials(McpTestCase):
    async def test_the_scout_searches_but_cannot_book(self):
        provider = self.scout()
        traffic = Traffic()

        async def search_then_book():
            async with mcp_session(self.env.mcp, provider, traffic) as session:
                self.assertEqual(await self.tool_names(session), TOOLS)
                answer = await self.search(session, "scout")
                self.assertEqual(answer["caller"]["chain"], [], answer)
                booked = await session.call_tool("book_flight", {"flight": "BT101"})
                self.fail(f"the scout booked: {booked}")

        errors = await refused(search_then_book)
        log = traffic.describe()
        # The SDK stepped up on the 403 and the broker refused flights.book.
        challenged = traffic.with_status(403)
        self.assertEqual(len(challenged), 1, log)
        fields = parse_challenge(challenged[0].challenge)
        self.assertEqual(fields["error"], "insufficient_scope", log)
        self.assertIn("flights.book", fields["scope"].split(), log)
        self.assertEqual(traffic.to(f"{self.env.broker}/token"), [("POST", 200), ("POST", 400)], log)
        refusals = token_errors(errors)
        self.assertEqual(len(refusals), 1, errors)
        self.assertIn("invalid_scope", refusals[0])

        # Nothing was booked with what the scout holds: the server still
        # answers its token with the scope challenge.
        token = provider.context.current_tokens.access_token
        self.assertEqual(jwt.decode(token, options={"verify_signature": False})["scope"], "flights.read")
        book = tools_call("book_flight", {"flight": "BT101"})
        response = await raw_call(self.http, self.env.mcp, token, book)
        self.assertEqual(response.status_code, 403, response.text)
        self.assertEqual(parse_challenge(response.headers["WWW-Authenticate"])["error"], "insufficient_scope")


class DelegatedExchange(McpTestCase):
    async def test_the_booker_steps_up_to_book_once_a_person_approves(self):
        parent = await self.broker.parent_for_booker("flights.read flights.book")
        provider = self.booker(parent, "flights.read")
        traffic = Traffic()

        async def search_then_book():
            async with mcp_session(self.env.mcp, provider, traffic) as session:
                self.assertEqual(await self.tool_names(session), TOOLS)
                answer = await self.search(session, "booker")
                self.assertEqual(answer["caller"]["chain"], ["booker", "planner"], answer)
                self.assertEqual(answer["caller"]["subject"], "orchestrator", answer)
                # Only what was asked first, although the parent holds more.
                self.assertEqual(provider.context.current_tokens.scope, "flights.read")
                booked = await session.call_tool("book_flight", {"flight": "BT101"})
                self.fail(f"booked without a person's approval: {booked}")

        errors = await refused(search_then_book)
        log = traffic.describe()
        challenged = traffic.with_status(403)
        self.assertEqual(len(challenged), 1, log)
        fields = parse_challenge(challenged[0].challenge)
        self.assertEqual(fields["error"], "insufficient_scope", log)
        self.assertIn("flights.book", fields["scope"].split(), log)
        refusals = token_errors(errors)
        self.assertEqual(len(refusals), 1, errors)
        self.assertIn("authorization_pending", refusals[0])

        # The person finds exactly this request waiting, and approves it.
        waiting = await self.broker.pending_approvals("booker", parent)
        self.assertEqual(len(waiting), 1, waiting)
        approval = waiting[0]
        self.assertIn(approval["id"], refusals[0])
        self.assertEqual(approval["request"]["target"], self.env.mcp)
        self.assertEqual(set(approval["request"]["scope"].split()), {"flights.read", "flights.book"})
        self.assertEqual(approval["approver"], APPROVER)
        await self.broker.approve(approval["id"])

        # The same step-up again, with the very same token request (no
        # `approval_id`: the SDK's flow only repeats itself): a person approved
        # that request, so the token is issued and the retried call books.
        traffic = Traffic()
        with anyio.fail_after(SESSION_LIMIT):
            async with mcp_session(self.env.mcp, provider, traffic) as session:
                booked = payload(await session.call_tool("book_flight", {"flight": "BT101"}))
        log = traffic.describe()
        # The session started with the token held; the call's 403 brought one
        # exchange, which the approval let through.
        self.assertEqual(len(traffic.with_status(403)), 1, log)
        self.assertEqual(traffic.to(f"{self.env.broker}/token"), [("POST", 200)], log)
        self.assertIs(booked["booked"], True, booked)
        self.assertEqual(booked["flight"], "BT101", booked)
        self.assertEqual(booked["by"], "booker", booked)
        self.assertEqual(booked["for"], "orchestrator", booked)
        self.assertEqual(booked["chain"], ["booker", "planner"], booked)
        self.assertEqual(set(provider.context.current_tokens.scope.split()), {"flights.read", "flights.book"})
        # The approval was used up by that one token.
        self.assertEqual(await self.broker.pending_approvals("booker", parent), [])


class StepUpWithinTheParent(McpTestCase):
    async def test_a_parent_without_flights_book_caps_the_step_up(self):
        parent = await self.broker.parent_for_booker("flights.read")
        provider = self.booker(parent, "flights.read")

        async def search_then_book():
            async with mcp_session(self.env.mcp, provider) as session:
                await self.search(session, "booker")
                booked = await session.call_tool("book_flight", {"flight": "BT101"})
                self.fail(f"booked beyond the parent's scopes: {booked}")

        errors = await refused(search_then_book)
        refusals = token_errors(errors)
        self.assertEqual(len(refusals), 1, errors)
        self.assertIn("invalid_scope", refusals[0])
        # Refused outright: nobody is asked to approve it.
        self.assertEqual(await self.broker.pending_approvals("booker", parent), [])


def tools_call(name, arguments):
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "baton-interop", "version": "1"},
    },
}


async def raw_call(http, url, token, message):
    """One JSON-RPC message with a bearer token, outside the SDK."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    return await http.post(url, json=message, headers=headers)


class AnotherServersToken(McpTestCase):
    async def test_a_token_for_one_mcp_server_is_refused_by_another(self):
        provider = self.scout()
        with anyio.fail_after(SESSION_LIMIT):
            async with mcp_session(self.env.mcp, provider) as session:
                await self.search(session, "scout")
        token = provider.context.current_tokens.access_token

        # Accepted where it is addressed...
        response = await raw_call(self.http, self.env.mcp, token, INITIALIZE)
        self.assertEqual(response.status_code, 200, response.text)
        # ...and refused by the other server (RFC 6750 §3.1, RFC 9728 §5.1).
        response = await raw_call(self.http, self.env.other_mcp, token, INITIALIZE)
        self.assertEqual(response.status_code, 401, response.text)
        fields = parse_challenge(response.headers["WWW-Authenticate"])
        self.assertEqual(fields.get("error"), "invalid_token", fields)
        origin = self.env.other_mcp.removesuffix("/mcp")
        self.assertTrue(fields.get("resource_metadata", "").startswith(f"{origin}/.well-known/"), fields)


class Revocation(McpTestCase):
    async def test_revoking_the_parent_ends_the_booker_s_session(self):
        parent = await self.broker.parent_for_booker("flights.read")
        provider = self.booker(parent, "flights.read")
        traffic = Traffic()
        held = {}

        async def search_revoke_search():
            async with mcp_session(self.env.mcp, provider, traffic) as session:
                await self.search(session, "booker")
                held["token"] = provider.context.current_tokens.access_token
                held["before"] = len(traffic.exchanges)
                # The planner holds the parent (its client_id): RFC 7009 §2.1.
                await self.broker.revoke("planner", parent)
                answer = await session.call_tool("search_flights", SEARCH)
                self.fail(f"a tool call after the revocation went through: {answer}")

        errors = await refused(search_revoke_search)
        after = traffic.exchanges[held["before"] :]
        log = "\n".join(map(str, after))
        # The server refused the child token at once; the SDK asked the broker
        # for a new one with the revoked parent, and was refused too.
        self.assertEqual((after[0].url, after[0].status), (self.env.mcp, 401), log)
        self.assertEqual(parse_challenge(after[0].challenge).get("error"), "invalid_token", log)
        token_requests = [exchange.status for exchange in after if exchange.url == f"{self.env.broker}/token"]
        self.assertEqual(token_requests, [400], log)
        refusals = token_errors(errors)
        self.assertEqual(len(refusals), 1, errors)
        self.assertIn("invalid_request", refusals[0])
        # And it stays refused.
        search = tools_call("search_flights", SEARCH)
        response = await raw_call(self.http, self.env.mcp, held["token"], search)
        self.assertEqual(response.status_code, 401, response.text)
        self.assertEqual(parse_challenge(response.headers["WWW-Authenticate"]).get("error"), "invalid_token")


def load_tests(loader, tests, pattern):
    # Discovery (a bare `python -m unittest` in this folder) must not pick
    # these up: they need the servers only tests/api/mcp.rs starts. Named, or
    # run as a script, they run, in this order.
    if pattern is not None:
        return unittest.TestSuite()
    checks = [
        Discovery,
        ClientCredentials,
        DelegatedExchange,
        StepUpWithinTheParent,
        AnotherServersToken,
        Revocation,
    ]
    return unittest.TestSuite(loader.loadTestsFromTestCase(check) for check in checks)


if __name__ == "__main__":
    unittest.main(verbosity=2)
