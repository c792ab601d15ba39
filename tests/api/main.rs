//! Baton's API tests: one binary, driven through the router (and one real
//! socket), with data-driven cases under `tests/vectors/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod abuse;
mod approvals;
mod balanced;
mod binary;
mod cli_admin;
mod cli_policy;
mod client_auth;
mod connections;
mod console;
mod console_provider;
mod delegation_rules;
mod discovery;
mod dpop;
mod embedded_store;
mod examples;
mod exchange;
mod failures;
mod forged;
mod governance;
mod harness;
mod hot_reload;
mod identity_provider;
mod interop;
mod mcp;
mod mirror;
mod nodes;
mod observability;
mod process;
mod properties;
mod redis_production;
mod redis_server;
mod redis_setups;
mod redis_store;
mod revocation;
mod store_contract;
mod vectors;
mod verifier;
mod verifier_vectors;
