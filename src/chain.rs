//! The delegation chain: how a child token is derived from its parent, and the
//! rules that make a token's path checkable from the token alone.
//!
//! DESIGN.md §2 promises 1 and 2 live here: a child is never broader, longer
//! lived or deeper than allowed, and its `act` is written by the broker from the
//! authenticated agent and the parent's `act`, never from request input.

use crate::claims::{Actor, Claims, Confirmation, Delegation, Hop, TokenId};
use crate::client_auth::AuthenticatedAgent;
use crate::clock::{UnixMicros, UnixTime};
use crate::jose::Verified;
use crate::policy::PolicyGrant;
use crate::upstream::Person;

/// The facts of one issuance that are not derived from the chain.
#[derive(Debug, Clone)]
pub struct Issuance {
    /// This broker's issuer identifier.
    pub issuer: String,
    /// Now.
    pub issued_at: UnixTime,
    /// Now, in microseconds: orders the issue against a deprovisioning's
    /// cut-off within the same second.
    pub iat_micros: UnixMicros,
    /// A fresh token id.
    pub jti: TokenId,
    /// The thumbprint of the DPoP key the requester proved, if it did: the
    /// token is bound to it (RFC 9449 §5).
    pub bound_to: Option<String>,
}

/// A token whose path breaks the narrowing rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Deeper than the limit allows.
    #[error("depth {depth} exceeds the limit {limit}")]
    TooDeep {
        /// The depth the token has or would have.
        depth: u32,
        /// The configured limit.
        limit: u32,
    },
    /// A scope not held by the parent.
    #[error("scopes are not a subset of the parent's")]
    ScopeWidened,
    /// An expiry after the parent's.
    #[error("expiry is later than the parent's")]
    LifetimeExtended,
    /// A child of a DPoP-bound token that would not be bound: once a chain
    /// is sender-constrained it stays so.
    #[error("the parent is DPoP-bound and the child would not be")]
    Unbound,
    /// The acting agent already acted in the parent's chain (it obtained
    /// the parent or an ancestor) and its registration does not allow it
    /// to act again (DESIGN.md §2.2: no cycles).
    #[error("the acting agent already acted in this chain")]
    ActsAgain,
}

/// Whether an agent that already acted in a chain may act in it again: only
/// where its registration says so (`may_act_again` in `agents.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    /// The default: an agent acts at most once in a chain.
    Refuse,
    /// The agent's registration allows it explicitly; the hop is marked.
    Allow,
}

/// Refuses `actor` on `parent` when it already acted in the parent's chain
/// and `reentry` does not allow that; else whether it acts again.
pub fn acts_again(parent: &Claims, actor: &str, reentry: Reentry) -> Result<bool, ChainError> {
    match (parent.has_acted(actor), reentry) {
        (true, Reentry::Refuse) => Err(ChainError::ActsAgain),
        (again, _) => Ok(again),
    }
}

/// The root of a chain: an agent's own token (`client_credentials`), with no `act`.
pub fn root(agent: &AuthenticatedAgent, grant: &PolicyGrant, issuance: Issuance) -> Claims {
    Claims {
        iss: issuance.issuer,
        sub: agent.id().to_owned(),
        aud: grant.target().to_owned(),
        client_id: agent.id().to_owned(),
        scope: grant.scope().clone(),
        iat: issuance.issued_at,
        exp: grant.expires_at(),
        jti: issuance.jti,
        act: None,
        may_act: None,
        cnf: issuance.bound_to.map(|jkt| Confirmation { jkt }),
        delegation: Delegation { iat_micros: Some(issuance.iat_micros), ..Delegation::default() },
    }
}

/// A child of `parent`, obtained by `actor` under `grant` (RFC 8693 §2.1, §4.1).
///
/// Re-checks the narrowing rules whatever the policy decided, so that a policy
/// bug cannot widen a chain, and refuses an agent that already acted in the
/// chain unless `reentry` allows it ([`Claims::check_path`] holds verified
/// tokens to the same rule).
pub fn derive(
    parent: &Verified<Claims>,
    actor: &AuthenticatedAgent,
    grant: &PolicyGrant,
    max_depth: u32,
    reentry: Reentry,
    issuance: Issuance,
) -> Result<Claims, ChainError> {
    let parent = parent.claims();
    let depth = parent.delegation.depth.saturating_add(1);
    if depth > max_depth {
        return Err(ChainError::TooDeep { depth, limit: max_depth });
    }
    let again = acts_again(parent, actor.id(), reentry)?;
    if !grant.scope().is_subset(&parent.scope) {
        return Err(ChainError::ScopeWidened);
    }
    if grant.expires_at() > parent.exp {
        return Err(ChainError::LifetimeExtended);
    }
    if parent.cnf.is_some() && issuance.bound_to.is_none() {
        return Err(ChainError::Unbound);
    }
    let mut hops = parent.delegation.hops.clone();
    hops.push(parent.as_hop());
    Ok(Claims {
        iss: issuance.issuer,
        sub: parent.sub.clone(),
        aud: grant.target().to_owned(),
        client_id: actor.id().to_owned(),
        scope: grant.scope().clone(),
        iat: issuance.issued_at,
        exp: grant.expires_at(),
        jti: issuance.jti,
        // DESIGN.md §2.2: the broker writes the chain; `may_act` is not inherited.
        act: Some(Actor { sub: actor.id().to_owned(), act: parent.act.clone().map(Box::new) }),
        may_act: None,
        cnf: issuance.bound_to.map(|jkt| Confirmation { jkt }),
        delegation: Delegation {
            depth,
            hops,
            approval: None,
            acts_again: again,
            iat_micros: Some(issuance.iat_micros),
        },
    })
}

/// The first hop of a person's chain: a child of the person's token from a
/// trusted identity provider, obtained by `actor` under `grant`.
///
/// The person's token is the root hop, marked with its issuer and, if the
/// provider bound it, its key; it caps the child's expiry, and its scopes,
/// where it has any, cap the child's.
pub fn start(
    person: &Person,
    actor: &AuthenticatedAgent,
    grant: &PolicyGrant,
    max_depth: u32,
    issuance: Issuance,
) -> Result<Claims, ChainError> {
    let depth = 1;
    if depth > max_depth {
        return Err(ChainError::TooDeep { depth, limit: max_depth });
    }
    if person.scope().is_some_and(|scope| !grant.scope().is_subset(scope)) {
        return Err(ChainError::ScopeWidened);
    }
    if grant.expires_at() > person.expires_at() {
        return Err(ChainError::LifetimeExtended);
    }
    let root = Hop {
        jti: person.token_id().clone(),
        agent: person.client().to_owned(),
        aud: person.audience().to_owned(),
        scope: person.scope().cloned().unwrap_or_default(),
        iat: person.issued_at(),
        exp: person.expires_at(),
        // The key the provider bound the sign-in to, checked by the caller.
        jkt: person.jkt().map(str::to_owned),
        iss: Some(person.issuer().to_owned()),
        approval: None,
        acts_again: false,
        iat_micros: None,
    };
    Ok(Claims {
        iss: issuance.issuer,
        sub: person.subject().to_owned(),
        aud: grant.target().to_owned(),
        client_id: actor.id().to_owned(),
        scope: grant.scope().clone(),
        iat: issuance.issued_at,
        exp: grant.expires_at(),
        jti: issuance.jti,
        act: Some(Actor { sub: actor.id().to_owned(), act: None }),
        may_act: None,
        cnf: issuance.bound_to.map(|jkt| Confirmation { jkt }),
        delegation: Delegation {
            depth,
            hops: vec![root],
            approval: None,
            acts_again: false,
            iat_micros: Some(issuance.iat_micros),
        },
    })
}

impl ChainError {
    /// The label metrics and the audit trail count this refusal by: the
    /// variant, never its numbers.
    pub fn reason(&self) -> &'static str {
        match self {
            ChainError::TooDeep { .. } => "chain_too_deep",
            ChainError::ScopeWidened => "chain_scope_widened",
            ChainError::LifetimeExtended => "chain_lifetime_extended",
            ChainError::Unbound => "chain_unbound",
            ChainError::ActsAgain => "chain_acts_again",
        }
    }
}
