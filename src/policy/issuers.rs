//! Trusted identity providers (`issuers.toml`): whose sign-ins may start a
//! chain, and how their tokens are read. The file is optional; without it
//! no person's token is accepted.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::PolicyError;
use crate::ids::{AgentId, Issuer, Subject};

/// One trusted identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    /// Its issuer identifier, exactly as its tokens' `iss`; discovery starts here.
    pub issuer: Issuer,
    /// The `aud` its tokens must carry (the client id Baton's users sign in to).
    pub audience: String,
    /// The signature algorithms accepted from it.
    pub algorithms: Vec<String>,
    /// The claim that names the person.
    pub subject_claim: String,
    /// Put before the person's name, so that two providers' subjects never collide.
    pub subject_prefix: String,
    /// The agents that may start a chain from its tokens.
    pub agents: BTreeSet<AgentId>,
}

impl TrustedIssuer {
    /// The chain's subject for a person this provider names `name`.
    pub fn subject(&self, name: &str) -> Subject {
        Subject::new(format!("{}{name}", self.subject_prefix))
    }
}

/// Every trusted identity provider.
#[derive(Debug, Clone, Default)]
pub struct Issuers(Vec<TrustedIssuer>);

/// Asymmetric algorithms an identity provider may sign with (RFC 8725 §3.1:
/// an allow-list; never `none` nor a shared secret).
const ALLOWED: [&str; 7] = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    issuers: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    issuer: Issuer,
    audience: String,
    #[serde(default = "default_algorithms")]
    algorithms: Vec<String>,
    #[serde(default = "default_subject_claim")]
    subject_claim: String,
    #[serde(default)]
    subject_prefix: String,
    agents: BTreeSet<AgentId>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

fn default_subject_claim() -> String {
    "sub".into()
}

impl Issuers {
    /// Loads `issuers.toml` from the folder, if there is one.
    pub fn load(dir: &Path) -> Result<Issuers, PolicyError> {
        let path = dir.join("issuers.toml");
        if !path.exists() {
            return Ok(Issuers::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read { path: path.clone(), source })?;
        Issuers::parse(&text).map_err(|reason| match reason {
            Problem::Parse(reason) => PolicyError::Parse { path, reason },
            Problem::Invalid(reason) => PolicyError::Inventory { file: "issuers.toml", reason },
        })
    }

    fn parse(text: &str) -> Result<Issuers, Problem> {
        let file: File = toml::from_str(text).map_err(|error| Problem::Parse(error.to_string()))?;
        let mut issuers = Vec::new();
        let mut prefixes = BTreeSet::new();
        for entry in file.issuers {
            let invalid = |reason: &str| Problem::Invalid(format!("issuer `{}`: {reason}", entry.issuer));
            let url = url::Url::parse(&entry.issuer).map_err(|_| invalid("not a URL"))?;
            // OIDC Discovery §4.3: an https URL, without query or fragment
            // (http only for a provider on this machine, as in tests).
            let local =
                url.host_str().is_some_and(|host| host == "127.0.0.1" || host == "localhost" || host == "[::1]");
            if !(url.scheme() == "https" || (url.scheme() == "http" && local))
                || url.query().is_some()
                || url.fragment().is_some()
            {
                return Err(invalid("must be an https URL without query or fragment"));
            }
            if let Some(algorithm) = entry.algorithms.iter().find(|algorithm| !ALLOWED.contains(&algorithm.as_str())) {
                return Err(invalid(&format!("algorithm `{algorithm}` is not allowed")));
            }
            if entry.algorithms.is_empty() || entry.audience.is_empty() || entry.subject_claim.is_empty() {
                return Err(invalid("algorithms, audience and subject_claim must not be empty"));
            }
            if entry.agents.is_empty() {
                return Err(invalid("name at least one agent in `agents`"));
            }
            // Two providers whose prefixes are equal, or one the start of
            // the other ("" and "b|"), could name two people alike.
            let overlapping = prefixes.iter().any(|other: &String| {
                other.starts_with(&entry.subject_prefix) || entry.subject_prefix.starts_with(other)
            });
            if overlapping {
                return Err(invalid("its subject_prefix overlaps another issuer's; subjects could collide"));
            }
            prefixes.insert(entry.subject_prefix.clone());
            issuers.push(TrustedIssuer {
                issuer: entry.issuer,
                audience: entry.audience,
                algorithms: entry.algorithms,
                subject_claim: entry.subject_claim,
                subject_prefix: entry.subject_prefix,
                agents: entry.agents,
            });
        }
        Ok(Issuers(issuers))
    }

    /// The provider whose issuer identifier is exactly `issuer`.
    pub fn get(&self, issuer: &str) -> Option<&TrustedIssuer> {
        self.0.iter().find(|trusted| trusted.issuer == issuer)
    }

    /// Every provider.
    pub fn iter(&self) -> impl Iterator<Item = &TrustedIssuer> {
        self.0.iter()
    }

    /// Checks that every agent named is registered.
    pub(super) fn check_agents(&self, is_agent: impl Fn(&str) -> bool) -> Result<(), PolicyError> {
        for trusted in &self.0 {
            if let Some(unknown) = trusted.agents.iter().find(|agent| !is_agent(agent)) {
                return Err(PolicyError::Inventory {
                    file: "issuers.toml",
                    reason: format!("issuer `{}`: agent `{unknown}` is not registered", trusted.issuer),
                });
            }
        }
        Ok(())
    }
}

enum Problem {
    Parse(String),
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"
        [[issuers]]
        issuer = "https://login.example.com"
        audience = "baton"
        agents = ["orchestrator"]
    "#;

    #[test]
    fn defaults_are_sub_and_common_asymmetric_algorithms() {
        let issuers = Issuers::parse(ONE).ok().unwrap();
        let trusted = issuers.get("https://login.example.com").unwrap();
        assert_eq!(trusted.subject_claim, "sub");
        assert_eq!(trusted.algorithms, vec!["RS256", "ES256"]);
        assert_eq!(trusted.subject("alice"), "alice");
        assert!(issuers.get("https://login.example.com/").is_none(), "the issuer matches exactly");
    }

    #[test]
    fn unsafe_or_ambiguous_entries_are_refused() {
        let refused = |extra: &str, issuer: &str| {
            let text = format!("[[issuers]]\nissuer = \"{issuer}\"\naudience = \"baton\"\nagents = [\"a\"]\n{extra}");
            Issuers::parse(&text).is_err()
        };
        assert!(refused("", "http://login.example.com"), "plain http off this machine");
        assert!(refused("", "https://login.example.com?x=1"));
        assert!(refused("algorithms = [\"HS256\"]", "https://login.example.com"));
        assert!(refused("algorithms = [\"none\"]", "https://login.example.com"));
        assert!(refused("algorithm = [\"RS256\"]", "https://login.example.com"), "unknown keys are named");
        assert!(!refused("", "http://127.0.0.1:4000"));
        let entry = |issuer: &str, prefix: &str| {
            format!("[[issuers]]\nissuer = \"{issuer}\"\naudience = \"b\"\nagents = [\"a\"]\nsubject_prefix = \"{prefix}\"\n")
        };
        let two = |first: &str, second: &str| {
            Issuers::parse(&(entry("https://one.example", first) + &entry("https://two.example", second)))
        };
        assert!(two("", "").is_err(), "two providers without prefixes");
        assert!(two("", "other|").is_err(), "one's `other|alice` would be the other's `alice`");
        assert!(two("corp|", "corp|eu|").is_err());
        assert!(two("corp|", "partner|").is_ok());
    }
}
