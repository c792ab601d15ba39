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
//! `cli → http → grant → {token, chain, policy, store, keys, client_auth, dpop, upstream} → {claims, ids, clock}`.
//! Only [`http`] knows about HTTP; [`oauth`] is the one place that maps
//! internal errors to OAuth error codes.
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
pub mod dpop;
pub mod governance;
pub mod grant;
pub mod http;
pub mod ids;
pub mod introspection;
pub mod jose;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod revocation;
pub mod store;
pub mod token;
pub mod upstream;
pub mod verifier;
