"""Interop: PyJWT, requests and authlib, libraries nobody here wrote, against a
running Baton broker. Started by tests/api/interop.rs (after the Node tests), which
passes in environment variables:

  BATON_ISSUER           the broker's issuer, e.g. http://127.0.0.1:41234
  BATON_INTEROP_TOKENS   the tokens the Node tests obtained, on both sides of
                         a key rotation, to verify here with PyJWT

Run with the stdlib runner: python -m unittest (from this folder).
"""

import json
import os
import unittest

import jwt
import requests
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
AIRLINE = "https://api.airline.example"
ALGORITHMS = ["ES256", "EdDSA"]
# The airline API introspects the tokens addressed to it.
AIRLINE_API = ("airline-api", "dev-only-airline-api-secret")
TIMEOUT = 10  # seconds, for every HTTP call


def required(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: these tests run from the Rust test (cargo nextest run interop)")
    return value


ISSUER = required("BATON_ISSUER")
TOKENS_FILE = required("BATON_INTEROP_TOKENS")


def credentials(agent):
    return (agent, f"dev-only-{agent}-secret")


def metadata(path="/.well-known/oauth-authorization-server"):
    response = requests.get(f"{ISSUER}{path}", timeout=TIMEOUT)
    response.raise_for_status()
    return response.json()


class Broker:
    """The broker's endpoints, from its discovery document."""

    def __init__(self):
        self.metadata = metadata()
        assert self.metadata["issuer"] == ISSUER, self.metadata["issuer"]

    def post(self, endpoint, auth, form):
        response = requests.post(self.metadata[endpoint], auth=auth, data=form, timeout=TIMEOUT)
        assert response.headers.get("Cache-Control") == "no-store", response.headers
        return response

    def token(self, agent, form):
        response = self.post("token_endpoint", credentials(agent), form)
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        return response.json()["access_token"]

    def walk(self):
        """orchestrator -> planner -> booker -> airline API; the three tokens."""
        root = self.token("orchestrator", {"grant_type": "client_credentials", "audience": "planner"})
        hop1 = self.token(
            "planner",
            {
                "grant_type": EXCHANGE,
                "subject_token": root,
                "subject_token_type": ACCESS_TOKEN,
                "audience": "booker",
            },
        )
        hop2 = self.token(
            "booker",
            {
                "grant_type": EXCHANGE,
                "subject_token": hop1,
                "subject_token_type": ACCESS_TOKEN,
                "resource": AIRLINE,
                "scope": "flights.book",
            },
        )
        return root, hop1, hop2

    def introspect(self, token, auth=AIRLINE_API):
        response = self.post("introspection_endpoint", auth, {"token": token})
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        return response.json()

    def revoke(self, agent, token):
        """RFC 7009 §2.2: 200 with an empty body."""
        response = self.post("revocation_endpoint", credentials(agent), {"token": token})
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        assert response.content == b"", response.content


def verify(jwks_client, token, audience):
    """RFC 9068 §4 with PyJWT: signature by a key from the JWKS, allowed
    algorithms, iss, aud, times, and the header's typ."""
    key = jwks_client.get_signing_key_from_jwt(token)
    decoded = jwt.decode_complete(
        token,
        key,
        algorithms=ALGORITHMS,
        audience=audience,
        issuer=ISSUER,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
    )
    assert decoded["header"]["typ"] == "at+jwt", decoded["header"]
    return decoded


class VerifyTheNodeTokens(unittest.TestCase):
    """The tokens openid-client obtained, before and after `baton keys rotate`."""

    @classmethod
    def setUpClass(cls):
        with open(TOKENS_FILE, encoding="utf-8") as file:
            issued = json.load(file)
        cls.tokens = issued["tokens"]
        cls.jwks = jwt.PyJWKClient(metadata()["jwks_uri"], timeout=TIMEOUT)

    def test_the_node_tests_left_tokens_from_both_sides_of_the_rotation(self):
        phases = {entry["phase"] for entry in self.tokens}
        self.assertEqual(phases, {"before", "after"})
        # Two walks (client_secret_basic and private_key_jwt) of three tokens on each side.
        self.assertEqual(len(self.tokens), 12)

    def test_every_token_verifies_with_pyjwt(self):
        for entry in self.tokens:
            with self.subTest(entry["label"]):
                decoded = verify(self.jwks, entry["token"], entry["audience"])
                self.assertEqual(decoded["payload"]["aud"], entry["audience"])
                self.assertIn(decoded["header"]["alg"], ALGORITHMS)

    def test_the_rotation_changed_the_signing_key_and_both_keys_verify(self):
        kids = {}
        for entry in self.tokens:
            kids.setdefault(entry["phase"], set()).add(jwt.get_unverified_header(entry["token"])["kid"])
        self.assertEqual(len(kids["before"]), 1, kids)
        self.assertEqual(len(kids["after"]), 1, kids)
        self.assertNotEqual(kids["before"], kids["after"])
        published = {key.key_id for key in self.jwks.get_signing_keys(refresh=True)}
        self.assertLessEqual(kids["before"] | kids["after"], published)

    def test_the_last_hop_carries_the_nested_chain(self):
        last_hops = [entry for entry in self.tokens if entry["label"].endswith("hop 2")]
        self.assertEqual(len(last_hops), 4)
        for entry in last_hops:
            with self.subTest(entry["label"]):
                claims = verify(self.jwks, entry["token"], AIRLINE)["payload"]
                self.assertEqual(claims["act"], {"sub": "booker", "act": {"sub": "planner"}})
                self.assertEqual(claims["scope"], "flights.book")
                self.assertEqual(claims["delegation"]["depth"], 2)

    def test_a_token_for_another_audience_is_refused(self):
        entry = next(entry for entry in self.tokens if entry["audience"] == AIRLINE)
        with self.assertRaises(jwt.InvalidAudienceError):
            verify(self.jwks, entry["token"], "https://api.calendar.example")

    def test_a_tampered_token_is_refused(self):
        token = self.tokens[0]["token"]
        header, payload, signature = token.split(".")
        # Flip the signature's first character to another base64url one.
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        with self.assertRaises(jwt.InvalidSignatureError):
            verify(self.jwks, f"{header}.{payload}.{flipped}", self.tokens[0]["audience"])


class IntrospectAndRevoke(unittest.TestCase):
    """RFC 7662 and RFC 7009 with requests, on walks of its own."""

    @classmethod
    def setUpClass(cls):
        cls.broker = Broker()
        cls.jwks = jwt.PyJWKClient(cls.broker.metadata["jwks_uri"], timeout=TIMEOUT)

    def test_a_revoked_token_introspects_inactive(self):
        _, _, last = self.broker.walk()
        claims = verify(self.jwks, last, AIRLINE)["payload"]
        answer = self.broker.introspect(last)
        self.assertIs(answer["active"], True)
        for claim in ("sub", "aud", "client_id", "scope", "exp", "jti", "act"):
            self.assertEqual(answer[claim], claims[claim], claim)
        self.assertEqual(answer["act"], {"sub": "booker", "act": {"sub": "planner"}})

        # The holder of the token (booker, its client_id) revokes it.
        self.broker.revoke("booker", last)
        self.assertEqual(self.broker.introspect(last), {"active": False})
        # Revoking again is not an error (RFC 7009 §2.2).
        self.broker.revoke("booker", last)

    def test_revoking_an_ancestor_kills_the_descendants(self):
        root, hop1, last = self.broker.walk()
        self.assertIs(self.broker.introspect(last)["active"], True)
        # The orchestrator holds the root: revoking it cascades down the tree.
        self.broker.revoke("orchestrator", root)
        self.assertEqual(self.broker.introspect(last), {"active": False})
        # A dead token can no longer be exchanged (RFC 8693 §2.2.2: invalid_request).
        response = self.broker.post(
            "token_endpoint",
            credentials("booker"),
            {
                "grant_type": EXCHANGE,
                "subject_token": hop1,
                "subject_token_type": ACCESS_TOKEN,
                "resource": AIRLINE,
                "scope": "flights.book",
            },
        )
        self.assertEqual(response.status_code, 400, response.text)
        self.assertEqual(response.json()["error"], "invalid_request")

    def test_an_unrelated_agent_may_not_revoke(self):
        root, _, last = self.broker.walk()
        # The booker holds no ancestor of the root and is not its audience:
        # RFC 7009 §2.1, the request is refused and the token stays alive.
        response = self.broker.post("revocation_endpoint", credentials("booker"), {"token": root})
        self.assertEqual(response.status_code, 400, response.text)
        self.assertEqual(response.json()["error"], "unauthorized_client")
        self.assertIs(self.broker.introspect(last)["active"], True)

    def test_introspection_needs_client_authentication(self):
        _, _, last = self.broker.walk()
        response = self.broker.post("introspection_endpoint", None, {"token": last})
        self.assertEqual(response.status_code, 401, response.text)
        self.assertEqual(response.json()["error"], "invalid_client")
        self.assertNotIn(last, response.text)

    def test_garbage_introspects_inactive(self):
        self.assertEqual(self.broker.introspect("not-a-token"), {"active": False})


class StrictClientsAcceptTheMetadata(unittest.TestCase):
    """authlib's validation of both discovery documents, as served. Both
    specifications require https URLs; authlib takes http on loopback, where
    the broker under test listens, as secure (RFC 8252 §7.3), with no switch
    turned on."""

    def test_the_authorization_server_metadata_validates(self):
        # RFC 8414 §2, every registered field authlib knows.
        document = metadata("/.well-known/oauth-authorization-server")
        AuthorizationServerMetadata(document).validate()
        self.assertEqual(document["issuer"], ISSUER)

    def test_the_openid_configuration_validates(self):
        # OpenID Connect Discovery 1.0 §3, on top of RFC 8414.
        document = metadata("/.well-known/openid-configuration")
        OpenIDProviderMetadata(document).validate()
        self.assertEqual(document["issuer"], ISSUER)


if __name__ == "__main__":
    unittest.main()
