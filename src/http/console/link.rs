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

#[cfg(test)]
mod tests {
    #[test]
    fn a_value_cannot_end_its_parameter() {
        assert_eq!(super::trace("a&b=c d"), "/console/trace?q=a%26b%3Dc+d");
    }
}
