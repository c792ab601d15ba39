//! Token exchange (RFC 8693 §2): an agent trades a token addressed to it for
//! a narrower, shorter-lived child addressed to the next hop.
//!
//! The checks, in order: the parameters (§2.1); the `subject_token`, which
//! is one of two kinds. A Baton token must verify, be alive, be addressed to
//! the acting agent and, where it carries `may_act`, name it (§4.4); a bound
//! one needs a proof (RFC 9449). A person's token from a trusted identity
//! provider must validate at that provider's keys, the acting agent must be
//! one allowed to start chains from it and, where the token carries
//! `may_act`, the one it names; a provider's token that carries its own
//! `act` is refused ([`crate::upstream`]). `may_act` names an agent by its
//! exact id, byte for byte. Then the depth limit; an agent that already
//! acted in the chain is refused unless its registration allows it to act
//! again ([`chain::acts_again`]); the `actor_token`, when sent, is the
//! acting agent's own live token; the policy; a person's approval where a
//! granted scope needs one; and the child is made by [`chain::derive`] or
//! [`chain::start`], which re-check every rule.

use super::issue::Handler;
use super::{asked_scopes, named_target, Issued, ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, JWT_TOKEN_TYPE};
use crate::audit::{clip, Evidence};
use crate::chain::{self, Reentry};
use crate::claims::{Claims, ScopeSet, TokenId};
use crate::client_auth::AuthenticatedAgent;
use crate::clock::{UnixMicros, UnixTime};
use crate::context::Context;
use crate::dpop::{Proof, ProofError};
use crate::error::{EndpointError, RequestError, Unacceptable};
use crate::jose;
use crate::narrowing;
use crate::policy::{Action, Ask, Policy};
use crate::store::{Lineage, Principal, Status};
use crate::token::Verified;
use crate::upstream::{Declared, Person, UpstreamError};

/// The token an exchange starts from.
enum Parent {
    /// One of Baton's own tokens.
    Token(Verified<Claims>),
    /// A person's token from a trusted identity provider: a chain's root.
    Person(Person),
}

impl Parent {
    fn subject(&self) -> &crate::ids::Subject {
        match self {
            Parent::Token(token) => &token.claims().sub,
            Parent::Person(person) => person.subject(),
        }
    }

    /// The agents that acted before, newest first.
    fn chain(&self) -> Vec<&crate::ids::AgentId> {
        match self {
            Parent::Token(token) => token.claims().chain(),
            Parent::Person(_) => Vec::new(),
        }
    }

    /// The parent's id: its `jti`, or a person's sign-in's.
    fn token_id(&self) -> &TokenId {
        match self {
            Parent::Token(token) => &token.claims().jti,
            Parent::Person(person) => person.token_id(),
        }
    }

    /// The scopes that cap the child; a person's token may set none.
    fn scope(&self) -> Option<&ScopeSet> {
        match self {
            Parent::Token(token) => Some(&token.claims().scope),
            Parent::Person(person) => person.scope(),
        }
    }

    fn expires_at(&self) -> UnixTime {
        match self {
            Parent::Token(token) => token.claims().exp,
            Parent::Person(person) => person.expires_at(),
        }
    }

    fn depth(&self) -> u32 {
        match self {
            Parent::Token(token) => token.claims().delegation.depth,
            Parent::Person(_) => 0,
        }
    }

    /// Whether every token Baton issued on the way here is DPoP-bound.
    fn path_is_bound(&self) -> bool {
        match self {
            Parent::Token(token) => token.claims().path_is_bound(),
            Parent::Person(_) => true,
        }
    }
}

pub(super) async fn handle(
    handler: &Handler<'_>,
    agent: &AuthenticatedAgent,
    evidence: &mut Evidence,
) -> Result<Issued, EndpointError> {
    let Handler { context, policy, params, proof, .. } = *handler;
    // RFC 8693 §2.1: the parameters.
    let subject_token = params.require("subject_token")?;
    let subject_type = subject_type(params.require("subject_token_type")?)?;
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
    evidence.target = target.map(clip);

    // The subject token, and whether this agent may exchange it.
    let parent = match issuer_of(subject_token) {
        Some(issuer) if issuer != context.settings().issuer => {
            let declared = if subject_type == ID_TOKEN_TYPE { Declared::IdToken } else { Declared::AccessTokenOrJwt };
            let presented = PersonToken { token: subject_token, issuer: &issuer, declared };
            person(context, policy, agent, presented, proof, evidence).await?
        }
        _ if subject_type == ID_TOKEN_TYPE => return Err(EndpointError::SubjectToken(Unacceptable::UntrustedIssuer)),
        _ => own_token(context, policy, agent, subject_token, proof, evidence).await?,
    };
    let depth = narrowing::child_depth(parent.depth(), context.settings().max_depth)
        .map_err(|_| EndpointError::SubjectToken(Unacceptable::DepthLimit))?;
    // DESIGN.md §2.2: no cycles. Refused before the policy is asked, so that
    // no person is asked to approve a hop that would not be issued.
    let reentry = match policy.inventory().agent(agent.id()) {
        Some(registered) if registered.may_act_again => Reentry::Allow,
        _ => Reentry::Refuse,
    };
    if let Parent::Token(token) = &parent {
        chain::acts_again(token.claims(), agent.id(), reentry)?;
    }

    // The actor token: the acting agent's own token, which also caps the lifetime.
    let mut expires_no_later_than = parent.expires_at();
    if let Some(actor_token) = actor_token {
        // The actor's own token is addressed to whatever it was obtained for.
        let actor = live_token(context, policy, actor_token, EndpointError::ActorToken).await?;
        let actor = actor.claims();
        if actor.sub != crate::ids::Subject::of_agent(agent.id())
            || actor.client_id != *agent.id()
            || actor.act.is_some()
        {
            return Err(EndpointError::ActorToken(Unacceptable::NotTheClient));
        }
        if let Some(jkt) = actor.jkt() {
            proves(proof, jkt)?;
        }
        expires_no_later_than = expires_no_later_than.min(actor.exp);
    }

    let now = context.now();
    let ask = Ask {
        action: Action::Exchange,
        agent: agent.id(),
        subject: parent.subject(),
        target: target.map(crate::ids::Audience::new),
        requested: requested.as_ref(),
        parent_scopes: parent.scope(),
        depth,
        chain: parent.chain(),
        expires_no_later_than: Some(expires_no_later_than),
        dpop_bound: proof.is_some(),
        chain_dpop_bound: proof.is_some() && parent.path_is_bound(),
        now,
    };
    let max_depth = context.settings().max_depth;
    let child = |allowance: &_, issuance| match &parent {
        Parent::Token(token) => chain::derive(token, agent, allowance, max_depth, reentry, issuance),
        Parent::Person(person) => chain::start(person, agent, allowance, max_depth, issuance),
    };
    handler.issue(&ask, Some(parent.token_id()), evidence, child, Some(issued_token_type)).await
}

/// A Baton token as the parent: alive, addressed to the acting agent, and
/// used with a proof where it is bound.
async fn own_token(
    context: &Context,
    policy: &Policy,
    agent: &AuthenticatedAgent,
    subject_token: &str,
    proof: Option<&Proof>,
    evidence: &mut Evidence,
) -> Result<Parent, EndpointError> {
    // Read for any audience, and the audience checked below, once the
    // evidence names the chain: a dead token addressed elsewhere is
    // reported dead, and the refusal names its chain, as every refusal after
    // verification does.
    let parent = match live_token(context, policy, subject_token, EndpointError::SubjectToken).await {
        // The parent names its holder: a blocked acting agent is told so
        // as a client, not through its token (one lookup on the way through).
        Err(EndpointError::SubjectToken(Unacceptable::Deprovisioned)) => {
            context.ensure_not_blocked(agent.id(), None).await?;
            return Err(EndpointError::SubjectToken(Unacceptable::Deprovisioned));
        }
        other => other?,
    };
    let claims = parent.claims();
    evidence.subject = Some(claims.sub.to_string());
    evidence.chain = claims.chain().into_iter().map(ToString::to_string).collect();
    evidence.parent_jti = Some(claims.jti.clone());
    // DESIGN.md §2.3: only an agent the token is addressed to may exchange it.
    if !claims.aud.is_agent(agent.id()) {
        return Err(EndpointError::SubjectToken(Unacceptable::NotAddressedToActor));
    }
    if claims.may_act.as_ref().is_some_and(|may_act| !may_act.names(agent.id(), &context.settings().issuer)) {
        return Err(EndpointError::SubjectToken(Unacceptable::MayActViolation));
    }
    // DESIGN.md §2.3: a bound chain stays bound, so its child is bound to
    // the exchanging agent's key; a token bound to the agent's own key
    // is used only with a proof of that key.
    if claims.cnf.is_some() && proof.is_none() {
        return Err(ProofError::Required.into());
    }
    if let Some(jkt) = claims.jkt().filter(|_| claims.client_id == *agent.id()) {
        proves(proof, jkt)?;
    }
    Ok(Parent::Token(parent))
}

/// A person's token from the trusted provider `issuer` as the parent: valid
/// at that provider, presented by an agent allowed to start chains from it,
/// and neither the sign-in revoked nor the person deprovisioned.
async fn person(
    context: &Context,
    policy: &Policy,
    agent: &AuthenticatedAgent,
    presented: PersonToken<'_>,
    proof: Option<&Proof>,
    evidence: &mut Evidence,
) -> Result<Parent, EndpointError> {
    let PersonToken { token: subject_token, issuer, declared } = presented;
    let trusted = policy.issuers().get(issuer).ok_or(EndpointError::SubjectToken(Unacceptable::UntrustedIssuer))?;
    if !trusted.agents.contains(agent.id()) {
        return Err(EndpointError::SubjectToken(Unacceptable::MayNotStartChain));
    }
    let leeway = context.settings().clock_leeway_seconds;
    let person = match context.providers().verify(trusted, subject_token, declared, leeway).await {
        Ok(person) => person,
        Err(UpstreamError::Invalid(reason)) => return Err(EndpointError::SubjectToken(Unacceptable::Upstream(reason))),
        Err(UpstreamError::Unreachable(reason)) => return Err(EndpointError::IdentityProvider(reason)),
    };
    evidence.subject = Some(person.subject().to_string());
    evidence.parent_jti = Some(person.token_id().clone());
    // RFC 8693 §4.4, as for Baton's own tokens: the person allowed this one
    // agent, named exactly.
    if person.may_act().is_some_and(|may_act| !may_act.names(agent.id(), &context.settings().issuer)) {
        return Err(EndpointError::SubjectToken(Unacceptable::MayActViolation));
    }
    // A person must never pass for an agent in policy or in revocation.
    // Typed ids keep the kinds apart in code only: the inventory, the
    // policy's rules and the store name principals by their text.
    if policy.inventory().target(person.subject()).is_some() {
        return Err(EndpointError::SubjectToken(Unacceptable::SubjectIsRegistered));
    }
    // A provider's token bound to a key (RFC 9449 §6.1) is used only with a
    // proof of that key.
    if let Some(jkt) = person.jkt() {
        proves(proof, jkt)?;
    }
    // No parent token names the acting agent here: a blocked agent is
    // refused explicitly.
    context.ensure_not_blocked(agent.id(), None).await?;
    let lineage = Lineage::at(
        vec![person.token_id().clone()],
        UnixMicros::start_of(person.issued_at()),
        [Principal::Subject(person.subject().to_owned())],
    );
    match context.lineage_status(policy, &lineage).await? {
        Status::Active => Ok(Parent::Person(person)),
        Status::Revoked => Err(EndpointError::SubjectToken(Unacceptable::Revoked)),
        Status::Deprovisioned => Err(EndpointError::SubjectToken(Unacceptable::Deprovisioned)),
    }
}

/// A `subject_token` whose `iss` names another issuer than this broker.
struct PersonToken<'a> {
    token: &'a str,
    /// Its `iss`, read unverified: it only chooses the configured issuer.
    issuer: &'a str,
    declared: Declared,
}

/// The `iss` a token claims, read unverified: it only chooses which
/// configured issuer checks the token, and is never fetched from.
fn issuer_of(token: &str) -> Option<String> {
    /// Only `iss`: the other claims are skipped, not built.
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    jose::insecure_payload::<Issuer>(token)?.iss
}

/// A `subject_token_type`: Baton's tokens, or a person's ID token or JWT
/// access token (RFC 8693 §3).
fn subject_type(kind: &str) -> Result<&'static str, EndpointError> {
    match kind {
        ID_TOKEN_TYPE => Ok(ID_TOKEN_TYPE),
        other => accepted_type(other, "subject_token_type"),
    }
}

/// The request proves the key `jkt` (RFC 9449 §4.3 step 13, at the broker).
fn proves(proof: Option<&Proof>, jkt: &str) -> Result<(), ProofError> {
    match proof {
        None => Err(ProofError::Required),
        Some(proof) if proof.jkt() != jkt => Err(ProofError::KeyMismatch),
        Some(_) => Ok(()),
    }
}

/// Baton tokens are access tokens and JWTs; both names are accepted.
fn accepted_type(kind: &str, parameter: &'static str) -> Result<&'static str, EndpointError> {
    match kind {
        ACCESS_TOKEN_TYPE => Ok(ACCESS_TOKEN_TYPE),
        JWT_TOKEN_TYPE => Ok(JWT_TOKEN_TYPE),
        _ => Err(RequestError::UnsupportedTokenType(parameter).into()),
    }
}

/// A Baton token that verifies, is addressed to `audience`, and is neither
/// revoked nor descended from a revoked token. A store failure is not a
/// verdict on the token: it fails the request as unavailable.
async fn live_token(
    context: &Context,
    policy: &Policy,
    token: &str,
    unacceptable: fn(Unacceptable) -> EndpointError,
) -> Result<Verified<Claims>, EndpointError> {
    let verified = context.verify(token).map_err(|error| unacceptable(Unacceptable::Invalid(error)))?;
    match context.token_status(policy, verified.claims()).await? {
        Status::Active => Ok(verified),
        Status::Revoked => Err(unacceptable(Unacceptable::Revoked)),
        Status::Deprovisioned => Err(unacceptable(Unacceptable::Deprovisioned)),
    }
}
