//! Links between the console's pages: every value put in a query string is
//! encoded here, whatever it holds.

/// `text` as a query string value.
pub fn encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The trace page of the token `jti`.
pub fn trace(jti: &str) -> String {
    format!("/console/trace?q={}", encoded(jti))
}

/// The confirmation before revoking the token `jti`.
pub fn revoke(jti: &str) -> String {
    format!("/console/revoke?jti={}", encoded(jti))
}

/// The tokens of `subject`.
pub fn tokens_of_subject(subject: &str) -> String {
    format!("/console/tokens?subject={}", encoded(subject))
}

/// The tokens `agent` obtained.
pub fn tokens_of_agent(agent: &str) -> String {
    format!("/console/tokens?agent={}", encoded(agent))
}

/// The confirmation before deprovisioning `agent`, seen from the tree of
/// `jti` when given, else from its own tokens.
pub fn deprovision(agent: &str, jti: Option<&str>) -> String {
    match jti {
        Some(jti) => format!("/console/deprovision?agent={}&jti={}", encoded(agent), encoded(jti)),
        None => format!("/console/deprovision?agent={}", encoded(agent)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_value_cannot_end_its_parameter() {
        assert_eq!(super::trace("a&b=c d"), "/console/trace?q=a%26b%3Dc+d");
    }
}
