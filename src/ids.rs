//! The identifiers a token names, one type for each kind (DESIGN.md §1, §4):
//! the agent that acts ([`AgentId`]), whose authority flows ([`Subject`]),
//! where a token is addressed ([`Audience`]) and who issued it ([`Issuer`]).
//!
//! Each is text on the wire (`#[serde(transparent)]`) and compared byte for
//! byte. There is deliberately no comparison between two kinds, so code that
//! checks an agent against a subject does not compile:
//!
//! ```compile_fail
//! use baton::ids::{AgentId, Subject};
//!
//! let agent = AgentId::new("orchestrator");
//! let subject = Subject::new("orchestrator");
//! let _ = agent == subject;
//! ```
//!
//! Where one kind really stands for another, a named conversion says so:
//! an agent acting for itself is its chain's subject ([`Subject::of_agent`]),
//! a token for the next agent is addressed to that agent
//! ([`Audience::of_agent`]), and a target is looked up as an agent when the
//! store names who a token reaches ([`AgentId::of_audience`]).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Declares an identifier newtype over `String`, after openidconnect-rs's
/// `new_type!`: transparent on the wire, read as text, equal only to its own
/// kind or to request text.
macro_rules! identifier {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The identifier, exactly as written.
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            /// The identifier's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The identifier's text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Lookups in maps keyed by the identifier accept request text; the
        // derived `Eq`, `Ord` and `Hash` are the text's, as `Borrow` requires.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        // Only for comparisons with text read from a request or a store,
        // either way round: byte for byte.
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                **self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

identifier! {
    /// A registered client's id: the agent that acts (`client_id`, `act.sub`,
    /// a hop's agent), or an API that introspects.
    AgentId
}

identifier! {
    /// Whose authority flows down a chain (`sub`): a person, as a trusted
    /// identity provider names them, or an agent acting for itself.
    Subject
}

identifier! {
    /// The single target a token is addressed to (`aud`): a resource URI or
    /// an agent's id (RFC 8707, RFC 8693 §2.1).
    Audience
}

identifier! {
    /// Who issued a token (`iss`): this broker, or a trusted identity
    /// provider's issuer URL.
    Issuer
}

impl Subject {
    /// An agent acting for itself as its chain's subject: the `sub` of an
    /// agent's own token (`client_credentials`).
    pub fn of_agent(agent: &AgentId) -> Subject {
        Subject(agent.0.clone())
    }
}

impl Audience {
    /// A token addressed to `agent`: the next agent of a chain.
    pub fn of_agent(agent: &AgentId) -> Audience {
        Audience(agent.0.clone())
    }

    /// Whether a token with this audience is addressed to `agent`, byte for
    /// byte: whether `agent` may hold it.
    pub fn is_agent(&self, agent: &AgentId) -> bool {
        self.0 == agent.0
    }
}

impl AgentId {
    /// The agent a token addressed to `audience` reaches, were the audience
    /// an agent's id: the store names a token's audience with its agents, so
    /// that deprovisioning an agent also kills tokens addressed to it.
    pub fn of_audience(audience: &Audience) -> AgentId {
        AgentId(audience.0.clone())
    }
}

/// `N` bytes from the system's generator as base64url text: an unguessable
/// id (a token's `jti`, a request id) or secret (a console session, its
/// CSRF token). `None` when no randomness is to be had.
pub fn random_text<const N: usize>() -> Option<String> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_is_transparent() {
        let agent = AgentId::new("orchestrator");
        assert_eq!(serde_json::to_string(&agent).unwrap(), "\"orchestrator\"");
        assert_eq!(serde_json::from_str::<AgentId>("\"orchestrator\"").unwrap(), agent);
        let subject: Subject = serde_json::from_str("\"user:alice@example.com\"").unwrap();
        assert_eq!(subject, "user:alice@example.com");
        assert_eq!(serde_json::to_value(&subject).unwrap(), serde_json::json!("user:alice@example.com"));
        let audience = Audience::new("https://api.example");
        assert_eq!(serde_json::from_value::<Audience>(serde_json::to_value(&audience).unwrap()).unwrap(), audience);
        let issuer = Issuer::new("https://idp.example");
        assert_eq!(serde_json::to_string(&Some(issuer)).unwrap(), "\"https://idp.example\"");
        // Text in, text out: no trimming, folding or normalisation.
        for raw in ["\" Orchestrator \"", "\"orches\\u200btrator\"", "\"\""] {
            let parsed: AgentId = serde_json::from_str(raw).unwrap();
            assert_eq!(serde_json::to_string(&parsed).unwrap(), serde_json::to_string(parsed.as_str()).unwrap());
        }
    }

    #[test]
    fn display_is_the_text() {
        assert_eq!(AgentId::new("booker").to_string(), "booker");
        assert_eq!(format!("sub={}", Subject::new("user:bob")), "sub=user:bob");
        assert_eq!(Audience::new("https://api.example/").to_string(), "https://api.example/");
        assert_eq!(Issuer::new("https://baton.example").to_string(), "https://baton.example");
    }

    #[test]
    fn kinds_meet_only_through_named_conversions() {
        let agent = AgentId::new("booker");
        assert_eq!(Subject::of_agent(&agent), Subject::new("booker"));
        assert_eq!(Audience::of_agent(&agent), Audience::new("booker"));
        assert!(Audience::of_agent(&agent).is_agent(&agent));
        assert!(!Audience::new("Booker").is_agent(&agent));
        assert_eq!(AgentId::of_audience(&Audience::new("booker")), agent);
    }

    #[test]
    fn comparisons_with_request_text_are_exact() {
        let agent = AgentId::new("orchestrator");
        assert!(agent == "orchestrator");
        assert!(agent != "Orchestrator" && agent != "orchestrator " && !agent.is_empty());
    }

    #[test]
    fn random_text_is_as_long_as_asked_and_not_repeated() {
        let (one, two) = (super::random_text::<32>().unwrap(), super::random_text::<32>().unwrap());
        assert_eq!(one.len(), 43);
        assert_ne!(one, two);
        assert_eq!(super::random_text::<16>().unwrap().len(), 22);
    }
}
