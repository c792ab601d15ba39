//! Evidence (DESIGN.md §2.7): what is known of a request as it is
//! processed, and the audit event it becomes, issued or refused. Request
//! text is clipped before it is kept, so that a hostile request cannot
//! flood the trail.

use crate::claims::TokenId;
use crate::clock::UnixTime;
use crate::store::{Approval, AuditApproval, AuditDecision, AuditEvent};

/// The `action` of the event for a refusal at the introspection or
/// revocation endpoint after the client proved its credential.
pub const CLIENT_AUTHENTICATION: &str = "client_authentication";

/// A refusal as the audit trail records it: its reason, and whether the
/// request waits for a person rather than being refused.
pub(crate) trait Refusal: std::fmt::Display {
    /// Whether the request waits for a person's decision.
    fn waits(&self) -> bool;
}

/// What is known of a request as it is processed, for its audit event.
#[derive(Debug, Default)]
pub(crate) struct Evidence {
    /// What was asked: a grant type, or the operation (`revoke`, …).
    pub(crate) action: String,
    pub(crate) claimed_client: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) agent: Option<String>,
    pub(crate) chain: Vec<String>,
    pub(crate) target: Option<String>,
    pub(crate) scopes_asked: Option<String>,
    pub(crate) parent_jti: Option<TokenId>,
    pub(crate) rules: Vec<String>,
    pub(crate) approval: Option<AuditApproval>,
    /// The approval this request spent, as it stood approved: not evidence,
    /// but what to put back if no token leaves after all.
    pub(crate) spent_approval: Option<Approval>,
}

/// Who made an admin action, as the audit trail names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// A caller of the admin API (the CLI among them), with the admin token.
    AdminApi,
    /// Someone signed in to the console: `admin token`, or the member an
    /// identity provider signed in.
    Console(String),
}

impl std::fmt::Display for Operator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operator::AdminApi => formatter.write_str("admin API"),
            Operator::Console(who) => write!(formatter, "console: {who}"),
        }
    }
}

impl Evidence {
    /// The event of a refusal; a request put to a person is recorded as
    /// waiting, not refused.
    pub(crate) fn refused(self, time: UnixTime, refusal: &dyn Refusal, client_address: Option<String>) -> AuditEvent {
        let decision = if refusal.waits() { AuditDecision::Pending } else { AuditDecision::Refused };
        self.event(time, decision, Some(refusal.to_string()), client_address)
    }

    /// The event of this request with `decision`.
    pub(crate) fn event(
        self,
        time: UnixTime,
        decision: AuditDecision,
        reason: Option<String>,
        client_address: Option<String>,
    ) -> AuditEvent {
        AuditEvent {
            time,
            decision,
            reason,
            action: self.action,
            subject: self.subject,
            agent: self.agent,
            chain: self.chain,
            target: self.target,
            scopes_asked: self.scopes_asked,
            scopes_granted: None,
            jti: None,
            parent_jti: self.parent_jti,
            expires_at: None,
            iat_micros: None,
            dpop_jkt: None,
            rules: self.rules,
            claimed_client: self.claimed_client,
            client_address,
            by: None,
            approval: self.approval,
            refusals: Vec::new(),
        }
    }
}

/// Request text kept as evidence, cut to a bounded length so that a hostile
/// request cannot flood the audit trail (or paste a token into it whole).
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 256;
    if text.len() <= MAX {
        return text.to_owned();
    }
    format!("{}…", prefix(text, MAX))
}

/// The longest start of `text` of at most `max` bytes that ends on a
/// character boundary.
pub(crate) fn prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    //! Evidence stays bounded (DESIGN.md §12: junk cannot grow the state)
    //! and is always valid text.

    use super::*;

    /// The marker `clip` puts after what it kept.
    const ELLIPSIS: &str = "…";

    /// Text up to the limit is kept whole; one byte more, and it is cut.
    #[test]
    fn text_up_to_the_limit_is_kept_whole() {
        let exact = "a".repeat(256);
        assert_eq!(clip(&exact), exact);
        assert_eq!(clip("booker"), "booker");
        assert_eq!(clip(""), "");
        assert_eq!(clip(&"a".repeat(257)), format!("{exact}{ELLIPSIS}"));
    }

    /// DESIGN.md §12: longer text keeps its first 256 bytes at most, then
    /// the marker, and never splits a character (the kept part is a start
    /// of the text, and valid UTF-8 by construction of `String`).
    #[test]
    fn clip_keeps_at_most_256_bytes_and_never_splits_a_character() {
        // Shifted by 0–3 ASCII bytes so that the limit falls at each offset
        // within a four-byte character, then within a two-byte one.
        for wide in ["𝄞", "é"] {
            for shift in 0..4 {
                let text = format!("{}{}", "a".repeat(shift), wide.repeat(200));
                let clipped = clip(&text);
                let kept = clipped.strip_suffix(ELLIPSIS).unwrap();
                assert!(kept.len() <= 256, "{} bytes kept", kept.len());
                assert!(kept.len() > 256 - wide.len(), "no more cut than needed: {} bytes", kept.len());
                assert!(text.starts_with(kept));
                assert!(text.is_char_boundary(kept.len()));
            }
        }
        // A token pasted whole is not kept whole.
        let token = "eyJ".repeat(1_000);
        assert_eq!(clip(&token), format!("{}{ELLIPSIS}", &token[..256]));
    }

    /// `prefix` ends on a character boundary at or before `max`, as long as
    /// the text allows.
    #[test]
    fn prefix_ends_on_a_character_boundary() {
        let text = "aé𝄞b"; // 1 + 2 + 4 + 1 bytes
        let expected = [(0, ""), (1, "a"), (2, "a"), (3, "aé"), (4, "aé"), (6, "aé"), (7, "aé𝄞"), (8, "aé𝄞b")];
        for (max, kept) in expected {
            assert_eq!(prefix(text, max), kept, "max {max}");
        }
        assert_eq!(prefix(text, 1_000), text);
    }
}
