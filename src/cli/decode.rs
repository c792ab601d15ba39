//! `baton token decode`: a token's chain as a readable tree. The signature is
//! not checked, and the output says so.

use crate::claims::Claims;
use crate::token;

pub(super) fn print(token: &str, json: bool) -> Result<(), String> {
    let unverified = token::insecure_peek(token.trim()).map_err(|error| format!("cannot decode token: {error}"))?;
    let text = if json {
        serde_json::to_string_pretty(&unverified.claims).map_err(|error| error.to_string())? + "\n"
    } else {
        tree(&unverified.claims) + "(decoded only: the signature was not checked)\n"
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

/// The chain from the root token down to this one, one line a token, each
/// child indented under its parent.
pub fn tree(claims: &Claims) -> String {
    let mut out = format!("subject {}  (issuer {})\n", claims.sub, claims.iss);
    let hops = claims.delegation.hops.iter().map(|hop| {
        let origin = (hop.iss.as_deref(), hop.jkt.as_deref());
        (&hop.agent, &hop.aud, &hop.scope, hop.iat, hop.exp, &hop.jti, hop.approval.as_ref(), origin)
    });
    let this = (
        &claims.client_id,
        &claims.aud,
        &claims.scope,
        claims.iat,
        claims.exp,
        &claims.jti,
        claims.delegation.approval.as_ref(),
        (None, claims.jkt()),
    );
    for (index, (agent, aud, scope, iat, exp, jti, approval, (provider, key))) in
        hops.chain(std::iter::once(this)).enumerate()
    {
        let branch = if index == 0 { String::new() } else { format!("{}└─ ", "   ".repeat(index - 1)) };
        let how = if index == 0 { "obtained" } else { "exchanged for" };
        let what = match provider {
            Some(provider) => format!("the person signed in at {provider} (client {agent})"),
            None => format!("{agent} {how} a token for {aud}  scope \"{scope}\""),
        };
        let key = key.map(|key| format!("  DPoP key {key}")).unwrap_or_default();
        out.push_str(&format!("{branch}{what}  {iat} .. {exp}  jti {jti}{key}\n"));
        if let Some(approval) = approval {
            let indent = "   ".repeat(index);
            out.push_str(&format!(
                "{indent}   approved by {} at {}  (approval {})\n",
                approval.approver, approval.approved_at, approval.id
            ));
        }
    }
    let chain = claims.chain();
    if !chain.is_empty() {
        out.push_str(&format!(
            "act chain (newest first): {}   depth {}\n",
            chain.iter().map(|agent| agent.as_str()).collect::<Vec<_>>().join(" <- "),
            claims.delegation.depth
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::{Actor, Delegation, HopApproval, ScopeSet, TokenId};
    use crate::clock::UnixTime;

    #[test]
    fn an_approved_token_shows_who_approved_it() {
        let approval =
            HopApproval { id: "ap1".into(), approver: "owner@example.com".into(), approved_at: UnixTime(60) };
        let root = Claims {
            iss: "http://127.0.0.1:8080".into(),
            sub: "a".into(),
            aud: "b".into(),
            client_id: "a".into(),
            scope: ScopeSet::parse("x").unwrap(),
            iat: UnixTime(0),
            exp: UnixTime(600),
            jti: TokenId("root".into()),
            act: None,
            may_act: None,
            cnf: None,
            delegation: Delegation {
                depth: 0,
                hops: vec![],
                approval: Some(approval),
                acts_again: false,
                iat_micros: None,
            },
        };
        let child = Claims {
            aud: "https://api.example".into(),
            client_id: "b".into(),
            jti: TokenId("child".into()),
            act: Some(Actor { sub: "b".into(), act: None }),
            delegation: Delegation {
                depth: 1,
                hops: vec![root.as_hop()],
                approval: None,
                acts_again: false,
                iat_micros: None,
            },
            ..root.clone()
        };
        let text = tree(&child);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("a obtained a token for b"), "{text}");
        assert_eq!(lines[2], "   approved by owner@example.com at 1970-01-01T00:01:00Z  (approval ap1)", "{text}");
        assert!(lines[3].starts_with("└─ b exchanged for a token for https://api.example"), "{text}");
        assert_eq!(lines.len(), 5, "{text}");
    }

    #[test]
    fn a_persons_sign_in_and_bound_keys_are_shown() {
        let sign_in = crate::claims::Hop {
            jti: TokenId("sign-in".into()),
            agent: "web-app".into(),
            aud: "web-app".into(),
            scope: ScopeSet::default(),
            iat: UnixTime(0),
            exp: UnixTime(600),
            jkt: None,
            iss: Some("https://login.example.com".into()),
            approval: None,
            acts_again: false,
            iat_micros: None,
        };
        let token = Claims {
            iss: "http://127.0.0.1:8080".into(),
            sub: "idp|alice".into(),
            aud: "planner".into(),
            client_id: "orchestrator".into(),
            scope: ScopeSet::parse("x").unwrap(),
            iat: UnixTime(10),
            exp: UnixTime(600),
            jti: TokenId("first".into()),
            act: Some(Actor { sub: "orchestrator".into(), act: None }),
            may_act: None,
            cnf: Some(crate::claims::Confirmation { jkt: "key-1".into() }),
            delegation: Delegation {
                depth: 1,
                hops: vec![sign_in],
                approval: None,
                acts_again: false,
                iat_micros: None,
            },
        };
        let text = tree(&token);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("the person signed in at https://login.example.com (client web-app)"), "{text}");
        assert!(lines[2].starts_with("└─ orchestrator exchanged for a token for planner"), "{text}");
        assert!(lines[2].ends_with("DPoP key key-1"), "{text}");
    }
}
