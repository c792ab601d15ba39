//! `baton token decode`: a token's chain as a readable tree. The signature is
//! not checked, and the output says so.

use crate::claims::Claims;
use crate::token;

pub(super) fn print(token: &str, json: bool) -> Result<(), String> {
    let unverified = token::peek(token.trim()).map_err(|error| format!("cannot decode token: {error}"))?;
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
    let hops = claims.delegation.hops.iter().map(|hop| (&hop.agent, &hop.aud, &hop.scope, hop.iat, hop.exp, &hop.jti));
    let this = (&claims.client_id, &claims.aud, &claims.scope, claims.iat, claims.exp, &claims.jti);
    for (index, (agent, aud, scope, iat, exp, jti)) in hops.chain(std::iter::once(this)).enumerate() {
        let branch = if index == 0 { String::new() } else { format!("{}└─ ", "   ".repeat(index - 1)) };
        let how = if index == 0 { "obtained" } else { "exchanged for" };
        out.push_str(&format!(
            "{branch}{agent} {how} a token for {aud}  scope \"{scope}\"  {iat} .. {exp}  jti {jti}\n"
        ));
    }
    let chain = claims.chain();
    if !chain.is_empty() {
        out.push_str(&format!(
            "act chain (newest first): {}   depth {}\n",
            chain.join(" <- "),
            claims.delegation.depth
        ));
    }
    out
}
