//! The parameters of a token request (RFC 6749 §3.2, RFC 8693 §2.1), read
//! from form pairs: each at most once, empty values treated as omitted
//! (RFC 6749 §3.1), unknown ones ignored.

use std::collections::HashMap;

use crate::error::RequestError;

/// The parameters Baton reads. Anything else is ignored.
const KNOWN: &[&str] = &[
    "grant_type",
    "scope",
    "audience",
    "resource",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "token",
    "token_type_hint",
    "approval_id",
];

/// Parameters that RFC 8693 §2.1 lets appear more than once; Baton issues a
/// token for exactly one target, so a second one is refused as a target.
const TARGETS: &[&str] = &["audience", "resource"];

/// A token request's parameters.
#[derive(Default, Clone)]
pub struct TokenParams {
    values: HashMap<&'static str, String>,
}

/// Names only: values include secrets, assertions and tokens.
impl std::fmt::Debug for TokenParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.values.keys().copied().collect();
        names.sort_unstable();
        f.debug_struct("TokenParams").field("names", &names).finish_non_exhaustive()
    }
}

impl TokenParams {
    /// Reads form pairs, refusing any parameter sent twice.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<TokenParams, RequestError>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut values = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (name, value) in pairs {
            let name = name.as_ref();
            let known = KNOWN.iter().copied().find(|known| *known == name);
            if !seen.insert(name.to_owned()) {
                return Err(match known {
                    Some(target) if TARGETS.contains(&target) => RequestError::SeveralTargets,
                    other => RequestError::Repeated(other),
                });
            }
            let value: String = value.into();
            // RFC 6749 §3.1: a parameter without a value is treated as omitted.
            if let (Some(known), false) = (known, value.is_empty()) {
                values.insert(known, value);
            }
        }
        Ok(TokenParams { values })
    }

    /// The value of a parameter, if sent and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of a required parameter.
    pub fn require(&self, name: &'static str) -> Result<&str, RequestError> {
        self.get(name).ok_or(RequestError::Missing(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        let twice = TokenParams::from_pairs([("scope", "a"), ("scope", "b")]);
        assert_eq!(twice.unwrap_err(), RequestError::Repeated(Some("scope")));
        let unknown_twice = TokenParams::from_pairs([("x", "a"), ("x", "b")]);
        assert_eq!(unknown_twice.unwrap_err(), RequestError::Repeated(None));
        let empty_then_full = TokenParams::from_pairs([("scope", ""), ("scope", "b")]);
        assert!(empty_then_full.is_err());
        let two_targets = TokenParams::from_pairs([("audience", "a"), ("audience", "b")]);
        assert_eq!(two_targets.unwrap_err(), RequestError::SeveralTargets);
    }

    #[test]
    fn debug_output_names_parameters_without_values() {
        let params = TokenParams::from_pairs([("client_secret", "s3cret"), ("subject_token", "eyJtoken")]).unwrap();
        let printed = format!("{params:?}");
        assert!(printed.contains("client_secret") && !printed.contains("s3cret") && !printed.contains("eyJtoken"));
    }

    #[test]
    fn empty_values_are_omitted_and_unknown_ignored() {
        let params = TokenParams::from_pairs([("scope", ""), ("x", "1"), ("grant_type", "g")]).unwrap();
        assert_eq!(params.get("scope"), None);
        assert_eq!(params.get("x"), None);
        assert_eq!(params.require("grant_type").unwrap(), "g");
        assert_eq!(params.require("audience").unwrap_err(), RequestError::Missing("audience"));
    }

    /// DESIGN.md §10, RFC 8693 §2.1: a second `resource` names a second
    /// target, like a second `audience`; one of each is not a repetition.
    #[test]
    fn a_second_target_is_refused_but_one_of_each_is_kept() {
        let two_resources =
            TokenParams::from_pairs([("resource", "https://a.example"), ("resource", "https://b.example")]);
        assert_eq!(two_resources.unwrap_err(), RequestError::SeveralTargets);
        let one_of_each = TokenParams::from_pairs([("audience", "booker"), ("resource", "https://a.example")]).unwrap();
        assert_eq!(
            (one_of_each.get("audience"), one_of_each.get("resource")),
            (Some("booker"), Some("https://a.example"))
        );
    }

    /// DESIGN.md §10: a repetition is refused whatever its values, an empty
    /// one after a full one included (RFC 6749 §3.1 omits empty values, but
    /// the name was still sent twice).
    #[test]
    fn a_repetition_is_refused_whatever_its_values() {
        let full_then_empty = TokenParams::from_pairs([("grant_type", "client_credentials"), ("grant_type", "")]);
        assert_eq!(full_then_empty.unwrap_err(), RequestError::Repeated(Some("grant_type")));
        let same_twice = TokenParams::from_pairs([("token", "t"), ("token", "t")]);
        assert_eq!(same_twice.unwrap_err(), RequestError::Repeated(Some("token")));
    }

    /// RFC 6749 §3.2: unknown parameters are ignored, and names are exact:
    /// `Scope` is not `scope`, so it neither sets nor repeats it.
    #[test]
    fn unknown_parameters_never_stand_for_known_ones() {
        let params = TokenParams::from_pairs([("Scope", "admin"), ("scope", "flights.read"), ("scope ", "x")]).unwrap();
        assert_eq!(params.get("scope"), Some("flights.read"));
        assert_eq!(params.get("Scope"), None);
        assert_eq!(TokenParams::from_pairs([("Scope", "admin")]).unwrap().get("scope"), None);
    }

    /// RFC 6749 §3.1: `require` treats a parameter sent empty as missing.
    #[test]
    fn a_required_parameter_sent_empty_is_missing() {
        let params = TokenParams::from_pairs([("subject_token", "")]).unwrap();
        assert_eq!(params.require("subject_token").unwrap_err(), RequestError::Missing("subject_token"));
    }
}
