//! Dry runs: a token request put to the policy without issuing anything,
//! answered scope by scope with the rules that permitted or forbade each
//! (`baton policy explain`, `POST /admin/policy/explain`, and the requests of
//! policy test cases).
//!
//! The overall answer is [`Policy::decide`]'s own, so a dry run can never
//! disagree with what the broker would do; the per-scope detail comes from
//! [`Rules::explain`](super::Rules::explain), which evaluates the same
//! request once more against the permits alone and the forbids alone.

use serde::{Deserialize, Serialize};

use super::cedar::{Action, ScopeVerdict};
use super::{Ask, Policy, PolicyError, Refusal};
use crate::claims::{Scope, ScopeSet};
use crate::clock::UnixTime;
use crate::ids::{AgentId, Audience, Subject};

/// A token request to put to the policy. Unknown fields are refused by name
/// (DESIGN.md §10): a misspelt `parent_scope` must not silently ask another
/// question.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// `issue` (an agent's own token) or `exchange`.
    pub action: Action,
    /// The acting agent.
    pub agent: AgentId,
    /// The chain's subject; for `issue` the agent itself when omitted.
    #[serde(default)]
    pub subject: Option<Subject>,
    /// The named target (`audience` / `resource`); the agent's
    /// `default_audience` when omitted.
    #[serde(default)]
    pub target: Option<Audience>,
    /// The asked scopes (`scope`); every permitted one when omitted.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The parent token's scopes; required for `exchange`, except for the
    /// first hop of a person's chain (empty `chain`) when the sign-in
    /// carries none.
    #[serde(default)]
    pub parent_scopes: Option<Vec<String>>,
    /// The new token's depth; for `exchange` one more than the chain's
    /// length when omitted, 0 for `issue`.
    #[serde(default)]
    pub depth: Option<u32>,
    /// The agents that already acted, newest first.
    #[serde(default)]
    pub chain: Vec<AgentId>,
    /// Whether the new token would be DPoP-bound.
    #[serde(default)]
    pub dpop_bound: bool,
    /// Whether it and every token Baton issued before it in the chain would
    /// be: the whole path sender-constrained.
    #[serde(default)]
    pub chain_dpop_bound: bool,
    /// The most seconds the new token may live: what the parent (or actor)
    /// token has left. The target's and the broker's lifetimes cap it further.
    #[serde(default)]
    pub ttl: Option<i64>,
}

/// A question that cannot be put to the policy as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuestionError {
    /// A scope is not a valid scope token (RFC 6749 §3.3).
    #[error("`{0}` is not a valid scope")]
    MalformedScope(String),
    /// An exchange needs the chain's subject.
    #[error("an exchange needs `subject`: whose authority the parent token carries")]
    MissingSubject,
    /// An exchange past a chain's first hop needs the parent token's scopes.
    #[error("an exchange needs `parent_scopes`: the scopes of the token being exchanged")]
    MissingParentScopes,
    /// An agent's own token has no parent, chain or depth.
    #[error("`issue` starts a chain: it takes no `parent_scopes`, `chain`, `ttl` or depth above 0")]
    ParentOnIssue,
}

/// Why a dry run gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The question is malformed.
    #[error(transparent)]
    Question(#[from] QuestionError),
    /// The rules could not be evaluated.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// The answer to a [`Question`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The target the request resolves to, when it names or defaults to one.
    pub target: Option<String>,
    /// What the broker would do.
    pub outcome: Outcome,
    /// Each scope put to the rules, with the rules that decided it. Empty
    /// when the request is refused before the rules are asked (an unknown
    /// target or scope, a scope beyond the parent's).
    pub scopes: Vec<ScopeExplanation>,
}

/// The overall answer: a token with these scopes, or a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// A token would be issued.
    Granted {
        /// Its scopes.
        scopes: Vec<String>,
        /// Its lifetime in seconds.
        expires_in: i64,
        /// The permits behind them.
        rules: Vec<String>,
        /// The scopes a person must approve first (the broker answers
        /// `authorization_pending` until then), and what marked them.
        #[serde(skip_serializing_if = "Option::is_none")]
        approval: Option<ApprovalNeeded>,
    },
    /// Nothing would be issued.
    Refused {
        /// Why.
        #[serde(flatten)]
        refusal: Refusal,
    },
}

/// What a granted request must wait for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalNeeded {
    /// The scopes that need a person's approval.
    pub scopes: Vec<String>,
    /// What marked them: `resources.toml: <uri>` or `<rule id>: <annotation>`.
    pub marked_by: Vec<String>,
}

/// One scope put to the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopeExplanation {
    /// The scope.
    pub scope: String,
    /// Whether the request asked for it by name.
    pub asked: bool,
    /// The decision and the rules behind it.
    #[serde(flatten)]
    pub verdict: ScopeVerdict,
}

/// A refusal as data: its stable code, the scope it names and a sentence.
impl Serialize for Refusal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("refusal", self.code())?;
        if let Some(scope) = self.scope() {
            map.serialize_entry("scope", scope.as_str())?;
        }
        map.serialize_entry("reason", &self.to_string())?;
        map.end()
    }
}

/// A question's scope lists and subject, parsed, for the [`Ask`] that
/// borrows them.
struct Parsed {
    requested: Option<ScopeSet>,
    parent: Option<ScopeSet>,
    subject: Subject,
}

impl Question {
    fn parse(&self) -> Result<Parsed, QuestionError> {
        let set = |scopes: &Option<Vec<String>>| -> Result<Option<ScopeSet>, QuestionError> {
            scopes
                .as_ref()
                .map(|scopes| {
                    scopes
                        .iter()
                        .map(|text| text.parse::<Scope>().map_err(|_| QuestionError::MalformedScope(text.clone())))
                        .collect::<Result<ScopeSet, _>>()
                })
                .transpose()
        };
        // An agent's own token: the agent acts for itself.
        let subject = self.subject.clone().unwrap_or_else(|| Subject::of_agent(&self.agent));
        let parsed = Parsed { requested: set(&self.scopes)?, parent: set(&self.parent_scopes)?, subject };
        match self.action {
            Action::Issue => {
                let starts_a_chain = parsed.parent.is_none()
                    && self.chain.is_empty()
                    && self.ttl.is_none()
                    && self.depth.unwrap_or(0) == 0;
                if !starts_a_chain {
                    return Err(QuestionError::ParentOnIssue);
                }
            }
            Action::Exchange => {
                if self.subject.is_none() {
                    return Err(QuestionError::MissingSubject);
                }
                // Only the first hop of a person's chain may have a parent
                // without scopes: a sign-in at an identity provider.
                if parsed.parent.is_none() && !self.chain.is_empty() {
                    return Err(QuestionError::MissingParentScopes);
                }
            }
        }
        Ok(parsed)
    }

    /// The [`Ask`] this question makes at `now`.
    fn ask<'a>(&'a self, parsed: &'a Parsed, now: UnixTime) -> Ask<'a> {
        let depth = match self.action {
            Action::Issue => 0,
            Action::Exchange => {
                self.depth.unwrap_or_else(|| u32::try_from(self.chain.len()).unwrap_or(u32::MAX).saturating_add(1))
            }
        };
        Ask {
            action: self.action,
            agent: &self.agent,
            subject: &parsed.subject,
            target: self.target.clone(),
            requested: parsed.requested.as_ref(),
            parent_scopes: parsed.parent.as_ref(),
            depth,
            chain: self.chain.iter().collect(),
            dpop_bound: self.dpop_bound,
            chain_dpop_bound: self.chain_dpop_bound,
            expires_no_later_than: self.ttl.map(|ttl| now.plus(ttl)),
            now,
        }
    }
}

impl Policy {
    /// Answers `question` at `now` without issuing anything: the overall
    /// outcome exactly as [`Policy::decide`] decides it, and for each scope
    /// put to the rules which permits and forbids matched.
    pub fn explain(&self, question: &Question, now: UnixTime) -> Result<Explanation, ExplainError> {
        let parsed = question.parse()?;
        let ask = question.ask(&parsed, now);
        let outcome = match self.decide(&ask)? {
            Ok(allowance) => Outcome::Granted {
                scopes: allowance.scope().iter().map(ToString::to_string).collect(),
                expires_in: allowance.expires_at().seconds_since(now),
                rules: allowance.reasons().to_vec(),
                approval: allowance.approval().map(|need| ApprovalNeeded {
                    scopes: need.scopes.iter().map(ToString::to_string).collect(),
                    marked_by: need.marked_by.clone(),
                }),
            },
            Err(refusal) => Outcome::Refused { refusal },
        };
        let Ok(prepared) = self.prepare(&ask) else {
            let target = ask.target.as_ref().map(ToString::to_string).or_else(|| self.default_target(&ask));
            return Ok(Explanation { target, outcome, scopes: Vec::new() });
        };
        let verdicts = self.rules().explain(ask.agent, ask.action, prepared.candidates.iter(), &prepared.facts)?;
        let scopes = verdicts
            .into_iter()
            .map(|(scope, verdict)| ScopeExplanation {
                scope: scope.to_string(),
                asked: ask.requested.is_some_and(|requested| requested.contains(scope)),
                verdict,
            })
            .collect();
        Ok(Explanation { target: Some(prepared.target.to_owned()), outcome, scopes })
    }

    fn default_target(&self, ask: &Ask<'_>) -> Option<String> {
        self.inventory().agent(ask.agent).and_then(|agent| agent.default_audience.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Lifetimes;

    /// 2026-12-01: inside the example agents' registered life.
    const NOW: UnixTime = UnixTime(1_796_083_200);

    fn example() -> Policy {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        Policy::load(&dir, Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }).unwrap()
    }

    fn question(json: serde_json::Value) -> Question {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_forbidden_scope_names_both_the_permit_and_the_forbid() {
        let explanation = example()
            .explain(
                &question(serde_json::json!({
                    "action": "exchange", "agent": "booker", "subject": "orchestrator",
                    "target": "https://api.airline.example", "scopes": ["flights.book"],
                    "parent_scopes": ["flights.read", "flights.book"], "chain": ["orchestrator"],
                })),
                NOW,
            )
            .unwrap();
        assert_eq!(
            explanation.outcome,
            Outcome::Refused { refusal: Refusal::NotPermitted("flights.book".parse().unwrap()) }
        );
        let book = explanation.scopes.iter().find(|scope| scope.scope == "flights.book").unwrap();
        assert!(book.asked && !book.verdict.allowed);
        assert_eq!(book.verdict.permitted_by, ["travel.cedar#booker-to-airline"]);
        assert_eq!(book.verdict.forbidden_by, ["travel.cedar#bookings-go-through-the-planner"]);
        let read = explanation.scopes.iter().find(|scope| scope.scope == "flights.read").unwrap();
        assert!(read.verdict.allowed && read.verdict.forbidden_by.is_empty() && !read.asked);
    }

    #[test]
    fn the_outcome_is_the_grant_itself() {
        let policy = example();
        let explanation =
            policy.explain(&question(serde_json::json!({"action": "issue", "agent": "orchestrator"})), NOW).unwrap();
        assert_eq!(explanation.target.as_deref(), Some("planner"));
        let Outcome::Granted { scopes, expires_in, rules, approval } = &explanation.outcome else {
            panic!("{explanation:?}")
        };
        assert_eq!(approval, &None, "an agent's own token for the planner needs nobody's approval");
        assert_eq!(scopes.len(), 4);
        assert_eq!(*expires_in, 3600);
        assert_eq!(rules, &["travel.cedar#orchestrator-to-planner"]);
        assert!(explanation.scopes.iter().all(|scope| scope.verdict.allowed));
    }

    #[test]
    fn a_refusal_before_the_rules_has_no_scopes() {
        let explanation = example()
            .explain(&question(serde_json::json!({"action": "issue", "agent": "booker", "target": "nowhere"})), NOW)
            .unwrap();
        assert_eq!(explanation.outcome, Outcome::Refused { refusal: Refusal::UnknownTarget });
        assert!(explanation.scopes.is_empty());
        let json = serde_json::to_value(&explanation).unwrap();
        assert_eq!(json["outcome"]["result"], "refused");
        assert_eq!(json["outcome"]["refusal"], "unknown_target");
    }

    #[test]
    fn malformed_questions_are_refused_by_name() {
        let unknown = serde_json::from_value::<Question>(
            serde_json::json!({"action": "issue", "agent": "a", "parent_scope": []}),
        );
        assert!(unknown.unwrap_err().to_string().contains("parent_scope"));
        let policy = example();
        let exchange = question(serde_json::json!({"action": "exchange", "agent": "planner", "parent_scopes": []}));
        assert!(matches!(policy.explain(&exchange, NOW), Err(ExplainError::Question(QuestionError::MissingSubject))));
        let issue = question(serde_json::json!({"action": "issue", "agent": "planner", "chain": ["x"]}));
        assert!(matches!(policy.explain(&issue, NOW), Err(ExplainError::Question(QuestionError::ParentOnIssue))));
        let bad = question(serde_json::json!({"action": "issue", "agent": "planner", "scopes": ["a b"]}));
        assert!(matches!(policy.explain(&bad, NOW), Err(ExplainError::Question(QuestionError::MalformedScope(_)))));
    }
}
