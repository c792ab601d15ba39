//! Policy: the inventory of agents and resources, and the Cedar rules that
//! decide which scopes an agent may obtain for which target (DESIGN.md §5).
//!
//! Deny by default: a scope is granted only where a rule permits it, and a
//! folder that does not load gives no policy at all.

mod approval;
pub mod cases;
pub mod cedar;
pub mod check;
mod diagnostic;
pub mod explain;
pub mod inventory;
pub mod issuers;
pub mod lifecycle;

use std::path::{Path, PathBuf};

pub use approval::ApprovalNeed;
pub use cedar::{Action, Facts, Rules, ScopeVerdict, Verdict};
pub use inventory::{Agent, Client, Credentials, Inventory, Resource, Target};
pub use issuers::{Issuers, TrustedIssuer};

use crate::claims::{Scope, ScopeSet};
use crate::clock::UnixTime;
use crate::ids::{AgentId, Audience, Subject};

/// A policy folder that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file does not parse (unknown keys are named here).
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The inventory is inconsistent.
    #[error("{file}: {reason}")]
    Inventory {
        /// The file.
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The Cedar rules or their evaluation failed.
    #[error("rules: {0}")]
    Rules(String),
    /// Rules files that Cedar refuses, as its diagnostics, each naming its
    /// file, line and column.
    #[error("{0}")]
    Cedar(String),
}

/// Lifetimes the policy applies.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// No token lives longer than this, in seconds.
    pub max_token_ttl: i64,
    /// Lifetime of tokens addressed to an agent that sets none, in seconds.
    pub agent_token_ttl: i64,
}

/// What is asked of the policy for one token.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    /// Issue or exchange.
    pub action: Action,
    /// The authenticated acting agent.
    pub agent: &'a AgentId,
    /// The chain's subject.
    pub subject: &'a Subject,
    /// The target the request names, if any: not yet known to be registered.
    pub target: Option<Audience>,
    /// The asked scopes, if any.
    pub requested: Option<&'a ScopeSet>,
    /// The parent's scopes; `None` for an agent's own token.
    pub parent_scopes: Option<&'a ScopeSet>,
    /// The new token's depth.
    pub depth: u32,
    /// Agents that already acted.
    pub chain: Vec<&'a AgentId>,
    /// The latest expiry the new token may have (parent's, actor token's).
    pub expires_no_later_than: Option<UnixTime>,
    /// Whether the new token would be DPoP-bound.
    pub dpop_bound: bool,
    /// Whether it and every token Baton issued before it in the chain would be.
    pub chain_dpop_bound: bool,
    /// Now.
    pub now: UnixTime,
}

/// What the policy allows for one request: target, scopes and expiry. Only [`Policy::decide`]
/// makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    target: Audience,
    scope: ScopeSet,
    expires_at: UnixTime,
    reasons: Vec<String>,
    approval: Option<ApprovalNeed>,
}

impl Allowance {
    /// The target (`aud`).
    pub fn target(&self) -> &Audience {
        &self.target
    }

    /// The granted scopes.
    pub fn scope(&self) -> &ScopeSet {
        &self.scope
    }

    /// The expiry.
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }

    /// The rules that permitted the scopes.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// The granted scopes that need a person's approval, if any.
    pub fn approval(&self) -> Option<&ApprovalNeed> {
        self.approval.as_ref()
    }

    /// An allowance of `scope` for `target` until `expires_at`, as if the
    /// rules permitted it: for unit tests of what is derived from one.
    #[cfg(test)]
    pub(crate) fn for_tests(target: &str, scope: ScopeSet, expires_at: UnixTime) -> Allowance {
        Allowance { target: Audience::new(target), scope, expires_at, reasons: Vec::new(), approval: None }
    }
}

/// Why the policy grants nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No target named and the agent has no `default_audience`.
    #[error("no target named and no default target")]
    NoTarget,
    /// The target is neither a registered resource nor agent.
    #[error("target is not registered")]
    UnknownTarget,
    /// The target agent is past its expiry.
    #[error("target agent is deprovisioned")]
    TargetDeprovisioned,
    /// No rule permits any scope for this target.
    #[error("no rule permits this target")]
    TargetNotPermitted,
    /// An asked scope is not registered.
    #[error("scope `{0}` is not registered")]
    UnknownScope(Scope),
    /// An asked scope is beyond the parent's.
    #[error("scope `{0}` is beyond the parent token's")]
    BeyondParent(Scope),
    /// An asked scope belongs to another resource than the target.
    #[error("scope `{0}` does not belong to the target")]
    OutsideTarget(Scope),
    /// An asked scope is not permitted by the rules.
    #[error("scope `{0}` is not permitted")]
    NotPermitted(Scope),
    /// The parent already expires now.
    #[error("no lifetime left")]
    NoLifetime,
}

impl Refusal {
    /// A stable name for the kind of refusal, without its scope: what policy
    /// test cases expect and what metrics count by (a bounded set).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoTarget => "no_target",
            Refusal::UnknownTarget => "unknown_target",
            Refusal::TargetDeprovisioned => "target_deprovisioned",
            Refusal::TargetNotPermitted => "target_not_permitted",
            Refusal::UnknownScope(_) => "unknown_scope",
            Refusal::BeyondParent(_) => "beyond_parent",
            Refusal::OutsideTarget(_) => "outside_target",
            Refusal::NotPermitted(_) => "not_permitted",
            Refusal::NoLifetime => "no_lifetime",
        }
    }

    /// The scope the refusal names, if it names one.
    pub fn scope(&self) -> Option<&Scope> {
        match self {
            Refusal::UnknownScope(scope)
            | Refusal::BeyondParent(scope)
            | Refusal::OutsideTarget(scope)
            | Refusal::NotPermitted(scope) => Some(scope),
            Refusal::NoTarget
            | Refusal::UnknownTarget
            | Refusal::TargetDeprovisioned
            | Refusal::TargetNotPermitted
            | Refusal::NoLifetime => None,
        }
    }
}

/// What [`Policy::decide`] settles before the rules are asked: the target,
/// the scopes to put to the rules, the expiry and the facts.
struct Prepared<'a> {
    target: &'a str,
    candidates: ScopeSet,
    expires_at: UnixTime,
    facts: Facts<'a>,
}

/// A loaded policy folder.
pub struct Policy {
    inventory: Inventory,
    issuers: Issuers,
    rules: Rules,
    lifetimes: Lifetimes,
}

impl Policy {
    /// Loads and validates the whole folder.
    pub fn load(dir: &Path, lifetimes: Lifetimes) -> Result<Policy, PolicyError> {
        let inventory = Inventory::load(dir)?;
        let issuers = Issuers::load(dir)?;
        issuers.check_agents(|id| inventory.agent(id).is_some())?;
        let rules = Rules::load(dir, &inventory)?;
        Ok(Policy { inventory, issuers, rules, lifetimes })
    }

    /// The inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The trusted identity providers.
    pub fn issuers(&self) -> &Issuers {
        &self.issuers
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Decides target, scopes and lifetime for one token.
    ///
    /// Order: the target must be registered and live; asked scopes must be
    /// registered, within the parent's and within the target API's; then the
    /// asked scopes are put to the rules, and the other candidates too when
    /// one is refused or none was asked. A target for which nothing is
    /// permitted is refused as a target; an asked scope that is not permitted
    /// is refused as a scope (RFC 8693 §2.2.2, RFC 6749 §5.2).
    pub fn decide(&self, ask: &Ask<'_>) -> Result<Result<Allowance, Refusal>, PolicyError> {
        let prepared = match self.prepare(ask) {
            Ok(prepared) => prepared,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let Prepared { target: target_name, candidates, expires_at, facts } = prepared;
        // The asked scopes are decided first. When each is permitted, the
        // other candidates cannot change the answer and are not evaluated;
        // otherwise they tell a target the agent may not use at all
        // (`invalid_target`) from a scope it may not have (`invalid_scope`).
        let asked = ask.requested.filter(|requested| !requested.is_empty());
        let mut verdicts = match asked {
            Some(requested) => {
                debug_assert!(requested.iter().all(|scope| candidates.contains(scope)), "prepare checked this");
                self.rules.decide(ask.agent, ask.action, requested.iter(), &facts)?
            }
            None => Vec::new(),
        };
        let every_asked_permitted = asked.is_some() && verdicts.iter().all(|(_, verdict)| verdict.allowed);
        if !every_asked_permitted {
            let undecided: Vec<&Scope> =
                candidates.iter().filter(|scope| asked.is_none_or(|requested| !requested.contains(scope))).collect();
            verdicts.extend(self.rules.decide(ask.agent, ask.action, undecided, &facts)?);
        }
        let permits: Vec<(Scope, Vec<String>)> = verdicts
            .into_iter()
            .filter(|(_, verdict)| verdict.allowed)
            .map(|(scope, verdict)| (scope.clone(), verdict.reasons))
            .collect();
        let permitted: ScopeSet = permits.iter().map(|(scope, _)| scope.clone()).collect();
        if permitted.is_empty() {
            return Ok(Err(Refusal::TargetNotPermitted));
        }
        let scope = match ask.requested {
            Some(requested) => {
                if let Some(denied) = requested.iter().find(|scope| !permitted.contains(scope)) {
                    return Ok(Err(Refusal::NotPermitted(denied.clone())));
                }
                requested.clone()
            }
            None => permitted,
        };
        // The evidence names the rules behind the scopes granted.
        let mut reasons: Vec<String> = permits
            .iter()
            .filter(|(permitted, _)| scope.contains(permitted))
            .flat_map(|(_, rules)| rules.iter().cloned())
            .collect();
        reasons.sort();
        reasons.dedup();
        let approval = approval::required(&self.inventory, &self.rules, target_name, &scope, &permits);
        Ok(Ok(Allowance { target: Audience::new(target_name), scope, expires_at, reasons, approval }))
    }

    /// The checks before the rules, in order: the target must be registered
    /// and live; asked scopes must be registered, within the parent's and
    /// within the target API's; the token must have some lifetime left.
    ///
    /// The chain's narrowing rule ([`crate::narrowing::Bounds::narrow_to`]) holds
    /// the child to the parent's scopes, expiry and depth again when it is
    /// derived. The parent's scopes and expiry are read here as well, to
    /// name the scope refused (`beyond_parent`, in policy tests and
    /// explanations too) and to fit the lifetime under the parent's.
    fn prepare<'a>(&'a self, ask: &'a Ask<'a>) -> Result<Prepared<'a>, Refusal> {
        let inventory = &self.inventory;
        let target_name = match &ask.target {
            Some(name) => name.as_str(),
            None => match inventory.agent(ask.agent).and_then(|agent| agent.default_audience.as_deref()) {
                Some(name) => name,
                None => return Err(Refusal::NoTarget),
            },
        };
        let (universe, target_ttl, target_is_agent) = match inventory.target(target_name) {
            None => return Err(Refusal::UnknownTarget),
            Some(Target::Agent(agent)) if !agent.is_active(ask.now) => return Err(Refusal::TargetDeprovisioned),
            Some(Target::Agent(agent)) => {
                (inventory.all_scopes(), agent.token_ttl.unwrap_or(self.lifetimes.agent_token_ttl), true)
            }
            Some(Target::Resource(resource)) => (resource.scopes.clone(), resource.token_ttl, false),
        };
        if let Some(requested) = ask.requested {
            for scope in requested.iter() {
                if !inventory.is_registered_scope(scope) {
                    return Err(Refusal::UnknownScope(scope.clone()));
                }
                if ask.parent_scopes.is_some_and(|parent| !parent.contains(scope)) {
                    return Err(Refusal::BeyondParent(scope.clone()));
                }
                if !universe.contains(scope) {
                    return Err(Refusal::OutsideTarget(scope.clone()));
                }
            }
        }
        let candidates = match ask.parent_scopes {
            Some(parent) => universe.intersection(parent),
            None => universe,
        };

        let ttl = target_ttl.min(self.lifetimes.max_token_ttl);
        let mut expires_at = ask.now.plus(ttl);
        if let Some(cap) = ask.expires_no_later_than {
            expires_at = expires_at.min(cap);
        }
        let lifetime = expires_at.seconds_since(ask.now);
        if lifetime <= 0 {
            return Err(Refusal::NoLifetime);
        }

        let facts = Facts {
            subject: ask.subject,
            target: target_name,
            target_is_agent,
            depth: ask.depth,
            chain: ask.chain.iter().map(|agent| agent.as_str()).collect(),
            parent_scopes: ask
                .parent_scopes
                .map(|scopes| scopes.iter().map(Scope::as_str).collect())
                .unwrap_or_default(),
            dpop_bound: ask.dpop_bound,
            chain_dpop_bound: ask.chain_dpop_bound,
            ttl: lifetime,
        };
        Ok(Prepared { target: target_name, candidates, expires_at, facts })
    }
}
