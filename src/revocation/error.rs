//! Why a client may not revoke a token (RFC 7009 §2.1, DESIGN.md §10).

/// Why an authenticated client may not revoke a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the client holds neither the token nor any of its ancestors")]
pub struct NotAHolder;
