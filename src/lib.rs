//! Baton: a token broker for delegation between AI agents.
//!
//! An agent trades the token it was handed for a narrower, shorter-lived one
//! addressed to the next hop (RFC 8693 token exchange). Every token carries
//! the whole chain of agents in a nested `act` claim and its ancestry in a
//! `delegation` claim, so the authority path can be checked from the token
//! alone.
//!
//! # Architecture
//!
//! Data flows one way:
//! `cli → app → http → broker → {grant, introspection, revocation, admin, approvals, lifecycle, governance}
//! → {abuse, context, audit, error} → {chain, policy, store, client_auth, upstream, dpop}
//! → {token, narrowing} → {jose, claims, ids, keys, clock}`.
//! Only [`http`] and the verifier's layers know about HTTP; [`error::oauth`]
//! is the one place that maps internal errors to OAuth error codes. No
//! module imports one that imports it back (`scripts/module_cycles.py`
//! checks it).
//!
//! # Layout
//!
//! Where each concept of the design lives:
//!
//! | concept | module |
//! |---|---|
//! | wiring config, stores, keys and background tasks; serving | [`app`] |
//! | the command line (a thin layer over `app` and the admin API) | [`cli`] |
//! | routes, forms, error responses, connection limits | [`http`] |
//! | the running broker: each endpoint's state, one method per operation | [`broker`] |
//! | the token endpoint: a dispatcher, one handler per grant | [`grant`] |
//! | introspection (RFC 7662), revocation (RFC 7009) | [`introspection`], [`revocation`] |
//! | the admin API's reads and revocations: trace, inventory, audit | [`admin`] |
//! | people's approvals at impact thresholds | [`approvals`] |
//! | agents and subjects deprovisioned, retired, reinstated | [`lifecycle`] |
//! | policy reloaded and explained on a running broker | [`governance`] |
//! | client authentication under a throttle; aggregated refusals | [`abuse`] |
//! | what every endpoint reads: settings, keys, policy, stores, clock | [`context`] |
//! | audit evidence of each decision | `audit` |
//! | every endpoint error, its reason, the OAuth mapping | [`error`] |
//! | a request's form parameters | [`params`] |
//! | a token's claims | [`claims`] |
//! | the one narrowing rule, at derivation and at verification | [`narrowing`] |
//! | deriving a child (the only claims that are signed) | [`chain`] |
//! | Baton's tokens: verification into `Verified` | [`token`] |
//! | identifiers: agent, subject, audience, issuer | [`ids`] |
//! | compact JWS: parse, insecure peek, verify, sign | [`jose`] |
//! | signing keys, rotation, JWKS | [`keys`] |
//! | client credentials and assertions (RFC 7523) | [`client_auth`] |
//! | DPoP proofs (RFC 9449) | [`dpop`] |
//! | people's tokens from trusted identity providers | [`upstream`] |
//! | inventory, resources, Cedar rules, policy tests | [`policy`] |
//! | revocation, replay, audit and approval state; embedded and Redis | [`store`] |
//! | the verifier for APIs and MCP servers (a tower layer, RFC 9728 metadata, scopes per MCP tool) | [`verifier`] |
//! | Prometheus metrics | [`metrics`] |
//! | the injected clock | [`clock`] |
//! | `baton.toml` and `BATON_*` | [`config`] |
//!
//! # Non-goals
//!
//! Baton is not a login server: it has no authorization endpoint, no user
//! sessions and no consent screens. People's chains start from the tokens of
//! a trusted identity provider.

#![warn(missing_docs)]

pub mod abuse;
pub mod admin;
pub mod app;
pub mod approvals;
mod audit;
pub mod broker;
pub mod chain;
pub mod claims;
pub mod cli;
pub mod client_auth;
pub mod clock;
pub mod config;
pub mod context;
pub mod dpop;
pub mod error;
pub mod governance;
pub mod grant;
pub mod http;
pub mod ids;
pub mod introspection;
pub mod jose;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod narrowing;
pub mod params;
pub mod policy;
pub mod revocation;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod upstream;
pub mod verifier;
