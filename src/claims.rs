//! The claims of a Baton access token (RFC 9068 §2.2, RFC 8693 §4) and the
//! values inside them.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clock::{UnixMicros, UnixTime};
use crate::ids::{AgentId, Audience, Issuer, Subject};

/// The claims of a Baton access token.
///
/// Unknown claims are refused when a token is parsed: Baton only reads tokens
/// it wrote, and a claim it did not write means the token is not one of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Issuer (RFC 7519 §4.1.1).
    pub iss: Issuer,
    /// The original subject whose authority flows down the chain.
    pub sub: Subject,
    /// The single target: a resource URI or an agent id (RFC 8707, RFC 8693 §2.1).
    pub aud: Audience,
    /// The acting agent that obtained this token (RFC 9068 §2.2).
    pub client_id: AgentId,
    /// Granted scopes (RFC 9068 §2.2.3).
    pub scope: ScopeSet,
    /// Issued at.
    pub iat: UnixTime,
    /// Expires at.
    pub exp: UnixTime,
    /// Unique token id.
    pub jti: TokenId,
    /// The chain of agents, newest outermost (RFC 8693 §4.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// Who may act for the subject (RFC 8693 §4.4). Honoured, never copied into a child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<MayAct>,
    /// The key the token is bound to, when it is DPoP-bound (RFC 9449 §6.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// The path of this token's authority: depth and every ancestor, root first.
    pub delegation: Delegation,
}

impl Claims {
    /// The agents of the `act` chain, newest first.
    pub fn chain(&self) -> Vec<&AgentId> {
        let mut agents = Vec::new();
        let mut next = self.act.as_ref();
        while let Some(actor) = next {
            agents.push(&actor.sub);
            next = actor.act.as_deref();
        }
        agents
    }

    /// The agents that obtained this token and each ancestor Baton issued,
    /// oldest first, each with whether it was marked as acting again: the
    /// root's agent, then the `act` chain's. A person's sign-in at the root
    /// is the identity provider's client, not an agent, and is left out.
    pub(crate) fn obtainers(&self) -> impl Iterator<Item = (&AgentId, bool)> {
        self.delegation
            .hops
            .iter()
            .filter(|hop| hop.iss.is_none())
            .map(|hop| (&hop.agent, hop.acts_again))
            .chain(std::iter::once((&self.client_id, self.delegation.acts_again)))
    }

    /// Whether `agent` already acted in this token's chain: it obtained this
    /// token or an ancestor (DESIGN.md §2.2: an agent acts at most once in a
    /// chain, unless its registration allows it explicitly). The comparison
    /// is exact, byte for byte.
    pub fn has_acted(&self, agent: &AgentId) -> bool {
        self.obtainers().any(|(obtainer, _)| obtainer == agent)
    }

    /// This token as an entry in a child's `delegation.hops`.
    pub fn as_hop(&self) -> Hop {
        Hop {
            jti: self.jti.clone(),
            agent: self.client_id.clone(),
            aud: self.aud.clone(),
            scope: self.scope.clone(),
            iat: self.iat,
            exp: self.exp,
            jkt: self.cnf.as_ref().map(|cnf| cnf.jkt.clone()),
            iss: None,
            approval: self.delegation.approval.clone(),
            acts_again: self.delegation.acts_again,
            iat_micros: self.delegation.iat_micros,
        }
    }

    /// The thumbprint of the key this token is bound to, if it is.
    pub fn jkt(&self) -> Option<&str> {
        self.cnf.as_ref().map(|cnf| cnf.jkt.as_str())
    }

    /// Whether this token and every ancestor Baton issued are DPoP-bound:
    /// the whole path so far is sender-constrained. (A person's token from
    /// an identity provider, at the root, is not Baton's to bind.)
    pub fn path_is_bound(&self) -> bool {
        self.cnf.is_some() && self.delegation.hops.iter().all(|hop| hop.jkt.is_some() || hop.iss.is_some())
    }
}

/// Confirmation of the key a token is bound to (RFC 7800 §3.1, RFC 9449 §6.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// The JWK SHA-256 thumbprint of the key (RFC 7638).
    pub jkt: String,
}

/// One actor of the `act` chain (RFC 8693 §4.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// The agent that acted.
    pub sub: AgentId,
    /// The actor before it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

/// The party a token's subject allows to act for it (RFC 8693 §4.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MayAct {
    /// The agent that may act.
    pub sub: AgentId,
    /// The issuer that names the agent, when given: for an agent, this broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<Issuer>,
}

impl MayAct {
    /// Whether the claim names `agent` as the broker `issuer` knows it: `sub`
    /// equal to the agent's id byte for byte (no case folding, trimming or
    /// Unicode normalisation: a lookalike is another name), and `iss`, where
    /// given, this broker.
    pub fn names(&self, agent: &AgentId, issuer: &Issuer) -> bool {
        self.sub.as_bytes() == agent.as_bytes() && self.iss.as_ref().is_none_or(|iss| iss == issuer)
    }
}

/// The `delegation` extension claim: how deep the token is and every token it
/// descends from, so that narrowing can be checked from the token alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    /// Exchanges between the root and this token; a root token has depth 0.
    pub depth: u32,
    /// One entry per ancestor token, root first.
    pub hops: Vec<Hop>,
    /// The person's approval this token was issued under, when a scope of it
    /// needed one; it moves into [`Hop::approval`] when the token becomes an
    /// ancestor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<HopApproval>,
    /// Set when the agent that obtained this token had already acted in its
    /// chain, which its registration allows (`may_act_again` in
    /// `agents.toml`); it moves into [`Hop::acts_again`] with the token.
    /// Absent otherwise, and a verifier refuses a repeated agent without it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub acts_again: bool,
    /// When this token was issued, in microseconds: ordered finer than
    /// `iat`, so that a deprovisioning's cut-off in the same second as the
    /// issue tells which came first. It moves into [`Hop::iat_micros`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_micros: Option<UnixMicros>,
}

/// For `skip_serializing_if`: a flag that is off is not written.
fn is_false(flag: &bool) -> bool {
    !*flag
}

impl Delegation {
    /// The ids of every ancestor, root first.
    pub fn ancestry(&self) -> impl Iterator<Item = &TokenId> {
        self.hops.iter().map(|hop| &hop.jti)
    }
}

/// An ancestor token, as recorded in a descendant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hop {
    /// The ancestor's `jti`.
    pub jti: TokenId,
    /// The agent that obtained the ancestor.
    pub agent: AgentId,
    /// The ancestor's target.
    pub aud: Audience,
    /// The ancestor's scopes (a person's token from an identity provider
    /// may have none).
    #[serde(default, skip_serializing_if = "ScopeSet::is_empty")]
    pub scope: ScopeSet,
    /// When the ancestor was issued.
    pub iat: UnixTime,
    /// When the ancestor expires.
    pub exp: UnixTime,
    /// The thumbprint of the key the ancestor was bound to, if it was DPoP-bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// Set only on a chain's root that a trusted identity provider issued:
    /// that provider's issuer. Such a hop's `aud` is the provider's client,
    /// not an agent, and its `jti` is the token's own or its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<Issuer>,
    /// The person's approval the ancestor was issued under, if it needed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<HopApproval>,
    /// Whether the ancestor's agent had acted before in the chain, as its
    /// registration allowed ([`Delegation::acts_again`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub acts_again: bool,
    /// When the ancestor was issued, in microseconds, where Baton recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_micros: Option<UnixMicros>,
}

/// A person's approval of one token request: which approval, who
/// gave it and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopApproval {
    /// The approval's id.
    pub id: String,
    /// Who approved.
    pub approver: String,
    /// When.
    pub approved_at: UnixTime,
}

/// A token id (`jti`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(pub String);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One scope token (RFC 6749 §3.3: `1*( %x21 / %x23-5B / %x5D-7E )`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(String);

impl Scope {
    /// The scope as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string that is not a valid scope token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid scope token (RFC 6749 §3.3)")]
pub struct InvalidScopeToken;

impl FromStr for Scope {
    type Err = InvalidScopeToken;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let allowed = |byte: u8| byte == 0x21 || (0x23..=0x5B).contains(&byte) || (0x5D..=0x7E).contains(&byte);
        if !text.is_empty() && text.bytes().all(allowed) {
            Ok(Scope(text.to_owned()))
        } else {
            Err(InvalidScopeToken)
        }
    }
}

/// A set of scopes, written as one space-separated string (RFC 6749 §3.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Parses a space-delimited list. Empty items (double spaces) are refused,
    /// as are invalid characters; duplicates collapse.
    pub fn parse(text: &str) -> Result<ScopeSet, InvalidScopeToken> {
        text.split(' ').map(Scope::from_str).collect::<Result<BTreeSet<_>, _>>().map(ScopeSet)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every scope of this set is in `other`.
    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    /// The scopes in both sets.
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// The scopes in either set.
    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.union(&other.0).cloned().collect())
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// The number of scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> Self {
        ScopeSet(scopes.into_iter().collect())
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
            first = false;
        }
        Ok(())
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ScopeSet::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_sets_round_trip_as_one_string() {
        let scopes = ScopeSet::parse("flights.read flights.book").unwrap();
        assert_eq!(serde_json::to_string(&scopes).unwrap(), "\"flights.book flights.read\"");
    }

    #[test]
    fn scope_tokens_follow_rfc6749() {
        assert!(ScopeSet::parse("").is_err());
        assert!(ScopeSet::parse("a  b").is_err());
        assert!(ScopeSet::parse("a\"b").is_err());
        assert!(ScopeSet::parse("a\\b").is_err());
        assert!(ScopeSet::parse("ünï").is_err());
        assert_eq!(ScopeSet::parse("b a a").unwrap().len(), 2);
    }

    #[test]
    fn may_act_names_an_agent_exactly() {
        let may_act = |sub: &str, iss: Option<&str>| MayAct { sub: sub.into(), iss: iss.map(Issuer::new) };
        let broker = "https://baton.example";
        assert!(may_act("orchestrator", None).names(&"orchestrator".into(), &broker.into()));
        assert!(may_act("orchestrator", Some(broker)).names(&"orchestrator".into(), &broker.into()));
        assert!(!may_act("orchestrator", Some("https://idp.example")).names(&"orchestrator".into(), &broker.into()));
        for lookalike in
            ["Orchestrator", "orchestrator ", " orchestrator", "orches\u{200B}trator", "\u{43e}rchestrator", ""]
        {
            assert!(!may_act(lookalike, None).names(&"orchestrator".into(), &broker.into()), "{lookalike:?}");
        }
        assert!(!may_act("planner", None).names(&"orchestrator".into(), &broker.into()));
    }

    #[test]
    fn chain_reads_newest_first() {
        let act = Actor { sub: "booker".into(), act: Some(Box::new(Actor { sub: "planner".into(), act: None })) };
        let claims = Claims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            client_id: "booker".into(),
            scope: ScopeSet::parse("x").unwrap(),
            iat: UnixTime(0),
            exp: UnixTime(1),
            jti: TokenId("j".into()),
            act: Some(act),
            may_act: None,
            cnf: None,
            delegation: Delegation::default(),
        };
        assert_eq!(claims.chain(), vec!["booker", "planner"]);
        assert_eq!(
            serde_json::to_value(&claims.act).unwrap(),
            serde_json::json!({"sub": "booker", "act": {"sub": "planner"}})
        );
    }
}
