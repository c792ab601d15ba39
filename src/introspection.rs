//! Token introspection (RFC 7662) for the APIs registered as introspecting
//! clients. An API sees only tokens addressed to it; anything else, and any
//! token that is not alive, is exactly `{"active":false}` (RFC 7662 §2.2).

use serde::Serialize;

use crate::abuse::Guard;
use crate::claims::{Actor, Confirmation, Delegation, ScopeSet, TokenId};
use crate::client_auth::ClientAuthError;
use crate::clock::UnixTime;
use crate::context::Context;
use crate::error::EndpointError;
use crate::params::TokenParams;
use crate::store::Status;

/// An introspection response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Introspection {
    /// The token is alive and addressed to the asking API.
    Active(Box<ActiveToken>),
    /// Anything else: nothing more is said.
    Inactive {
        /// Always false.
        active: bool,
    },
}

impl Introspection {
    fn inactive() -> Introspection {
        Introspection::Inactive { active: false }
    }
}

/// What an API learns of an active token (RFC 7662 §2.2, plus the chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveToken {
    /// Always true.
    pub active: bool,
    /// Issuer.
    pub iss: crate::ids::Issuer,
    /// The chain's subject.
    pub sub: crate::ids::Subject,
    /// The target.
    pub aud: crate::ids::Audience,
    /// The agent that obtained the token.
    pub client_id: crate::ids::AgentId,
    /// Granted scopes.
    pub scope: ScopeSet,
    /// `DPoP` for a bound token (RFC 9449 §6.2), else `Bearer`.
    pub token_type: &'static str,
    /// Issued at.
    pub iat: UnixTime,
    /// Expires at.
    pub exp: UnixTime,
    /// Token id.
    pub jti: TokenId,
    /// The chain of agents, newest outermost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// The key a bound token is bound to: the API must check the caller's
    /// proof against it (RFC 9449 §6.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// Depth and ancestry.
    pub delegation: Delegation,
}

/// Handles `POST /introspect`.
pub async fn introspect(
    context: &Context,
    guard: &Guard,
    authorization: Option<&str>,
    params: &TokenParams,
    client_address: Option<&str>,
) -> Result<Introspection, EndpointError> {
    // One policy for the whole request, even if a reload lands meanwhile.
    let policy = context.policy();
    let client = guard.authenticate_client_in(context, &policy, authorization, params, client_address).await?;
    // Only APIs registered to introspect may; an agent learns nothing here.
    let api = client.api().ok_or(ClientAuthError::NotAnIntrospector)?.to_owned();
    let token = params.require("token")?;
    // RFC 7662 §2.2: the audience is compared with the caller's below.
    let Ok(verified) = context.verify(token) else {
        return Ok(Introspection::inactive());
    };
    let claims = verified.claims();
    // The clock leeway lets a token from a node a little ahead verify;
    // it never lengthens a life: past `exp` by this broker's clock, the
    // token is inactive.
    if claims.aud != api || claims.exp <= context.now() {
        return Ok(Introspection::inactive());
    }
    // A store that cannot answer is not a verdict: fail closed (503).
    if context.token_status(&policy, claims).await? != Status::Active {
        return Ok(Introspection::inactive());
    }
    Ok(Introspection::Active(Box::new(ActiveToken {
        active: true,
        iss: claims.iss.clone(),
        sub: claims.sub.clone(),
        aud: claims.aud.clone(),
        client_id: claims.client_id.clone(),
        scope: claims.scope.clone(),
        token_type: if claims.cnf.is_some() { "DPoP" } else { "Bearer" },
        iat: claims.iat,
        exp: claims.exp,
        jti: claims.jti.clone(),
        act: claims.act.clone(),
        cnf: claims.cnf.clone(),
        delegation: claims.delegation.clone(),
    })))
}
