//! The delegation chain: how a child token is derived from its parent, and the
//! one narrowing rule that makes a token's path checkable from the token alone.
//!
//! DESIGN.md §2 promises 1 and 2 live here: a child is never broader, longer
//! lived or deeper than allowed, and its `act` is written by the broker from the
//! authenticated agent and the parent's `act`, never from request input.
//!
//! The rule between a parent and its child is [`Bounds::narrow_to`] (scopes,
//! expiry, depth) with [`stays_bound`] (DPoP binding). [`derive()`] and
//! [`start`] apply it before they build a child, as
//! [`crate::narrowing::check_path`] applies it to every pair of hops of a
//! token being verified. Only this module builds a [`Derived`], and only a
//! `Derived` is signed into a token ([`Derived::sign`]).

use crate::claims::{Actor, Claims, Confirmation, Delegation, Hop, HopApproval, TokenId};
use crate::client_auth::AuthenticatedAgent;
use crate::clock::{UnixMicros, UnixTime};
use crate::ids::{AgentId, Issuer, Subject};
use crate::keys::SigningKey;
use crate::narrowing::{child_depth, Bounds, Widening};
use crate::policy::Allowance;
use crate::token::{MintError, Verified, ACCESS_TOKEN_TYP};
use crate::upstream::Person;

#[cfg(test)]
mod tests;

/// The facts of one issuance that are not derived from the chain.
#[derive(Debug, Clone)]
pub struct Issuance {
    /// This broker's issuer identifier.
    pub issuer: Issuer,
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
    /// The person's approval the token is issued under, where a granted
    /// scope needed one (DESIGN.md §11); recorded in `delegation.approval`.
    pub approval: Option<HopApproval>,
}

/// Claims derived by this module under the narrowing rule: the only claims
/// that are signed into a token ([`Derived::sign`]), so a child that skipped
/// the rule does not compile into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived(Claims);

impl Derived {
    /// The derived claims.
    pub fn claims(&self) -> &Claims {
        &self.0
    }

    /// The derived claims, once the token is signed.
    pub fn into_claims(self) -> Claims {
        self.0
    }

    /// Signs the claims with `key` as an `at+jwt` (RFC 9068 §2.1, RFC 7515
    /// §7.1 compact serialization): the token [`crate::token::verify`] reads.
    pub fn sign(&self, key: &SigningKey) -> Result<String, MintError> {
        let header = serde_json::json!({ "typ": ACCESS_TOKEN_TYP, "kid": key.kid(), "alg": key.algorithm().name() });
        let header = serde_json::to_vec(&header).map_err(|error| MintError::new(&error.to_string()))?;
        let payload = serde_json::to_vec(&self.0).map_err(|error| MintError::new(&error.to_string()))?;
        crate::jose::sign(&header, &payload, key).map_err(|error| MintError::new(&error.to_string()))
    }
}

/// A bound chain stays bound (DESIGN.md §2 promise 3): the child of a
/// DPoP-bound token is bound too.
pub fn stays_bound(parent_bound: bool, child_bound: bool) -> Result<(), ChainError> {
    if parent_bound && !child_bound {
        return Err(ChainError::Unbound);
    }
    Ok(())
}

/// A child that would break the narrowing rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Deeper, broader or longer lived than its parent allows.
    #[error(transparent)]
    Widened(#[from] Widening),
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
pub fn acts_again(parent: &Claims, actor: &AgentId, reentry: Reentry) -> Result<bool, ChainError> {
    match (parent.has_acted(actor), reentry) {
        (true, Reentry::Refuse) => Err(ChainError::ActsAgain),
        (again, _) => Ok(again),
    }
}

/// The root of a chain: an agent's own token (`client_credentials`), with no `act`.
pub fn root(agent: &AuthenticatedAgent, allowance: &Allowance, issuance: Issuance) -> Derived {
    own_token(agent.id(), allowance, issuance)
}

/// [`root`] for the agent named `agent`.
fn own_token(agent: &AgentId, allowance: &Allowance, issuance: Issuance) -> Derived {
    // An agent's own token: the agent acts for itself.
    issued(issuance, allowance, Subject::of_agent(agent), agent, None, Delegation::default())
}

/// A child of `parent`, obtained by `actor` under `allowance` (RFC 8693 §2.1, §4.1).
///
/// Applies the narrowing rule whatever the policy decided, so that a policy
/// bug cannot widen a chain, and refuses an agent that already acted in the
/// chain unless `reentry` allows it ([`crate::narrowing::check_path`] holds verified
/// tokens to the same rule).
pub fn derive(
    parent: &Verified<Claims>,
    actor: &AuthenticatedAgent,
    allowance: &Allowance,
    max_depth: u32,
    reentry: Reentry,
    issuance: Issuance,
) -> Result<Derived, ChainError> {
    child_of(parent.claims(), actor.id(), allowance, max_depth, reentry, issuance)
}

/// [`derive()`] for the agent named `actor`, from claims already verified.
fn child_of(
    parent: &Claims,
    actor: &AgentId,
    allowance: &Allowance,
    max_depth: u32,
    reentry: Reentry,
    issuance: Issuance,
) -> Result<Derived, ChainError> {
    // The depth first, then a repeated agent, then the rest of the rule: the
    // order in which the refusals have always been reported.
    child_depth(parent.delegation.depth, max_depth)?;
    let again = acts_again(parent, actor, reentry)?;
    let bounds = Bounds::of_token(parent).narrow_to(allowance.scope(), allowance.expires_at(), max_depth)?;
    stays_bound(parent.cnf.is_some(), issuance.bound_to.is_some())?;
    let mut hops = parent.delegation.hops.clone();
    hops.push(parent.as_hop());
    // DESIGN.md §2.2: the broker writes the chain.
    let act = Actor { sub: actor.clone(), act: parent.act.clone().map(Box::new) };
    let path = Delegation { depth: bounds.depth(), hops, acts_again: again, ..Delegation::default() };
    Ok(issued(issuance, allowance, parent.sub.clone(), actor, Some(act), path))
}

/// The first hop of a person's chain: a child of the person's token from a
/// trusted identity provider, obtained by `actor` under `allowance`.
///
/// The person's token is the root hop, marked with its issuer and, if the
/// provider bound it, its key; it caps the child's expiry, and its scopes,
/// where it has any, cap the child's.
pub fn start(
    person: &Person,
    actor: &AuthenticatedAgent,
    allowance: &Allowance,
    max_depth: u32,
    issuance: Issuance,
) -> Result<Derived, ChainError> {
    let root = Hop {
        jti: person.token_id().clone(),
        agent: person.client().clone(),
        aud: person.audience().clone(),
        scope: person.scope().cloned().unwrap_or_default(),
        iat: person.issued_at(),
        exp: person.expires_at(),
        // The key the provider bound the sign-in to, checked by the caller.
        jkt: person.jkt().map(str::to_owned),
        iss: Some(person.issuer().clone()),
        approval: None,
        acts_again: false,
        iat_micros: None,
    };
    first_hop(root, person.subject(), actor.id(), allowance, max_depth, issuance)
}

/// [`start`] from the person's token as its root hop, for `subject`.
fn first_hop(
    root: Hop,
    subject: &Subject,
    actor: &AgentId,
    allowance: &Allowance,
    max_depth: u32,
    issuance: Issuance,
) -> Result<Derived, ChainError> {
    // The person's binding is the caller's to prove; Baton's own binding
    // starts with the child.
    let bounds = Bounds::of_hop(&root, 0).narrow_to(allowance.scope(), allowance.expires_at(), max_depth)?;
    let act = Actor { sub: actor.clone(), act: None };
    let path = Delegation { depth: bounds.depth(), hops: vec![root], ..Delegation::default() };
    Ok(issued(issuance, allowance, subject.clone(), actor, Some(act), path))
}

/// The claims of a token for `sub`, obtained by `agent` with the chain
/// `act` and the path `path`, under `allowance`: the one place that says
/// what of the policy's answer and of this issuance a token carries. Never
/// a `may_act`, which is the subject token's and not inherited (DESIGN.md
/// §2.2).
fn issued(
    issuance: Issuance,
    allowance: &Allowance,
    sub: Subject,
    agent: &AgentId,
    act: Option<Actor>,
    path: Delegation,
) -> Derived {
    Derived(Claims {
        iss: issuance.issuer,
        sub,
        aud: allowance.target().clone(),
        client_id: agent.clone(),
        scope: allowance.scope().clone(),
        iat: issuance.issued_at,
        exp: allowance.expires_at(),
        jti: issuance.jti,
        act,
        may_act: None,
        cnf: issuance.bound_to.map(|jkt| Confirmation { jkt }),
        delegation: Delegation { approval: issuance.approval, iat_micros: Some(issuance.iat_micros), ..path },
    })
}

/// Escape hatches around the narrowing rule. The broker never uses them.
pub mod danger {
    use super::Derived;
    use crate::claims::Claims;

    /// Takes `claims` as derived without applying any rule, so that
    /// [`Derived::sign`] signs them as they are: for benchmarks and
    /// tools that need a token with exact claims. Every use is a token the
    /// broker's rules did not check; audit each one.
    pub fn derived_unchecked(claims: Claims) -> Derived {
        Derived(claims)
    }
}

impl ChainError {
    /// The label metrics and the audit trail count this refusal by: the
    /// variant, never its numbers.
    pub fn reason(&self) -> &'static str {
        match self {
            ChainError::Widened(Widening::TooDeep { .. }) => "chain_too_deep",
            ChainError::Widened(Widening::ScopeWidened) => "chain_scope_widened",
            ChainError::Widened(Widening::LifetimeExtended) => "chain_lifetime_extended",
            ChainError::Unbound => "chain_unbound",
            ChainError::ActsAgain => "chain_acts_again",
        }
    }
}
