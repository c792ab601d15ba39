//! Token exchange (RFC 8693 §2): an agent trades a token addressed to it for
//! a narrower, shorter-lived child addressed to the next hop.
//!
//! The checks, in order: the parameters (§2.1); the `subject_token` verifies,
//! is not revoked, is addressed to the acting agent and, where it carries
//! `may_act`, names it (§4.4); the `actor_token`, when sent, is the acting
//! agent's own live token; the depth limit; the policy; a person's approval
//! where a granted scope needs one; then the child is derived by
//! [`chain::derive`], which re-checks every narrowing rule.

use super::approval::{self, Asked};
use super::{
    asked_scopes, named_target, Broker, Evidence, GrantError, Issued, RequestError, TokenParams, Unacceptable,
    ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, TOKEN_EXCHANGE,
};
use crate::chain::{self, Issuance};
use crate::claims::Claims;
use crate::client_auth::AuthenticatedAgent;
use crate::policy::{Action, Ask};
use crate::store::Status;
use crate::token::{self, Verified};

pub(super) async fn handle(
    broker: &Broker,
    agent: &AuthenticatedAgent,
    params: &TokenParams,
    evidence: &mut Evidence,
) -> Result<Issued, GrantError> {
    // RFC 8693 §2.1: the parameters.
    let subject_token = params.require("subject_token")?;
    accepted_type(params.require("subject_token_type")?, "subject_token_type")?;
    let actor_token = match (params.get("actor_token"), params.get("actor_token_type")) {
        (Some(token), Some(kind)) => {
            accepted_type(kind, "actor_token_type")?;
            Some(token)
        }
        (None, None) => None,
        _ => return Err(RequestError::ActorTokenPairing.into()),
    };
    // RFC 8693 §2.2.1: the issued type answers the requested one; Baton's
    // tokens are both access tokens and JWTs.
    let issued_token_type = match params.get("requested_token_type") {
        Some(kind) => accepted_type(kind, "requested_token_type")?,
        None => ACCESS_TOKEN_TYPE,
    };
    let requested = asked_scopes(params)?;
    let target = named_target(params)?;
    evidence.target = target.map(super::clip);

    // The subject token, and whether this agent may exchange it.
    let parent = match live_token(broker, subject_token, GrantError::SubjectToken).await {
        // The parent names its holder: a blocked acting agent is told so
        // as a client, not through its token (one lookup on the way through).
        Err(GrantError::SubjectToken(Unacceptable::Deprovisioned)) => {
            broker.ensure_not_blocked(agent.id(), None).await?;
            return Err(GrantError::SubjectToken(Unacceptable::Deprovisioned));
        }
        other => other?,
    };
    let claims = parent.claims();
    evidence.subject = Some(claims.sub.clone());
    evidence.chain = claims.chain().into_iter().map(str::to_owned).collect();
    evidence.parent_jti = Some(claims.jti.clone());
    // DESIGN.md §2.3: only an agent the token is addressed to may exchange it.
    if claims.aud != agent.id() {
        return Err(GrantError::SubjectToken(Unacceptable::NotAddressedToActor));
    }
    if claims.may_act.as_ref().is_some_and(|may_act| may_act.sub != agent.id()) {
        return Err(GrantError::SubjectToken(Unacceptable::MayActViolation));
    }
    let depth = claims.delegation.depth.saturating_add(1);
    if depth > broker.settings().max_depth {
        return Err(GrantError::SubjectToken(Unacceptable::DepthLimit));
    }

    // The actor token: the acting agent's own token, which also caps the lifetime.
    let mut expires_no_later_than = claims.exp;
    if let Some(actor_token) = actor_token {
        let actor = live_token(broker, actor_token, GrantError::ActorToken).await?;
        let actor = actor.claims();
        if actor.sub != agent.id() || actor.client_id != agent.id() || actor.act.is_some() {
            return Err(GrantError::ActorToken(Unacceptable::NotTheClient));
        }
        expires_no_later_than = expires_no_later_than.min(actor.exp);
    }

    let now = broker.now();
    let ask = Ask {
        action: Action::Exchange,
        agent: agent.id(),
        subject: &claims.sub,
        target,
        requested: requested.as_ref(),
        parent_scopes: Some(&claims.scope),
        depth,
        chain: claims.chain(),
        expires_no_later_than: Some(expires_no_later_than),
        now,
    };
    let grant = broker.policy().grant(&ask)??;
    evidence.target = Some(grant.target().to_owned());
    evidence.rules = grant.reasons().to_vec();
    let asked =
        Asked { grant_type: TOKEN_EXCHANGE, subject: &claims.sub, agent: agent.id(), parent_jti: Some(&claims.jti) };
    let approval = approval::check(broker, &asked, &grant, params, evidence).await?;

    let jti = broker.new_jti()?;
    let issuance = Issuance { issuer: broker.settings().issuer.clone(), issued_at: now, jti };
    let mut child = chain::derive(&parent, agent, &grant, broker.settings().max_depth, issuance)?;
    child.delegation.approval = approval;
    let access_token = token::mint(&child, broker.keys().signing())?;
    Ok(Issued::new(child, access_token, Some(issued_token_type), now))
}

/// Baton tokens are access tokens and JWTs; both names are accepted.
fn accepted_type(kind: &str, parameter: &'static str) -> Result<&'static str, GrantError> {
    match kind {
        ACCESS_TOKEN_TYPE => Ok(ACCESS_TOKEN_TYPE),
        JWT_TOKEN_TYPE => Ok(JWT_TOKEN_TYPE),
        _ => Err(RequestError::UnsupportedTokenType(parameter).into()),
    }
}

/// A Baton token that verifies and is neither revoked nor descended from a
/// revoked token. A store failure is not a verdict on the token: it fails the
/// request as unavailable.
async fn live_token(
    broker: &Broker,
    token: &str,
    unacceptable: fn(Unacceptable) -> GrantError,
) -> Result<Verified<Claims>, GrantError> {
    let verified = broker.verify(token).map_err(|error| unacceptable(Unacceptable::Invalid(error)))?;
    match broker.status(verified.claims()).await? {
        Status::Active => Ok(verified),
        Status::Revoked => Err(unacceptable(Unacceptable::Revoked)),
        Status::Deprovisioned => Err(unacceptable(Unacceptable::Deprovisioned)),
    }
}
