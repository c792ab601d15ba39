//! `baton token trace <token>`: verify a token against its issuer's JWKS,
//! then print its chain as a tree: each agent with its owner and purpose
//! from the local inventory, each hop's target, scopes and times, and, with
//! the admin API, every token's status and the descendants.

use std::sync::Arc;

use serde_json::{json, Value};

use super::admin::AdminClient;
use crate::claims::Claims;
use crate::clock::{Clock, FixedClock, SystemClock};
use crate::ids::Issuer;
use crate::keys::Algorithm;
use crate::policy::Inventory;
use crate::token::{self, AudienceRule, Validation};

/// What a trace prints, as JSON too.
struct Trace {
    claims: Claims,
    kid: String,
    expired: bool,
    /// From the admin API: ancestors, token and descendants with statuses.
    admin: Option<Value>,
}

/// Runs the trace. `inventory` names owners and purposes where known.
pub(super) fn run(
    token: &str,
    json_output: bool,
    issuer: &str,
    inventory: Option<&Inventory>,
    admin: Option<AdminClient>,
) -> Result<(), String> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| error.to_string())?;
    let trace = runtime.block_on(gather(token.trim(), issuer, admin))?;
    let text = if json_output {
        serde_json::to_string_pretty(&as_json(&trace, inventory)).map_err(|error| error.to_string())? + "\n"
    } else {
        render(&trace, inventory)
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

async fn gather(token: &str, issuer: &str, admin: Option<AdminClient>) -> Result<Trace, String> {
    let unverified = token::insecure_peek(token).map_err(|error| format!("cannot read the token: {error}"))?;
    if unverified.claims.iss != issuer {
        return Err(format!(
            "the token was issued by {}, not by {issuer} (pass --url to trace it there)",
            unverified.claims.iss
        ));
    }
    let keys =
        crate::verifier::published_keys(issuer, &reqwest::Client::new()).await.map_err(|error| error.to_string())?;
    // Checked as of its issue time, so that an expired token found in a log
    // can still be traced; whether it has expired is reported beside.
    let then: Arc<dyn Clock> = Arc::new(FixedClock::new(unverified.claims.iat));
    let rules = Validation {
        issuer: Issuer::new(issuer),
        max_token_bytes: 64 * 1024,
        max_depth: 32,
        algorithms: vec![Algorithm::Es256, Algorithm::EdDsa],
        leeway: 0,
        // A trace reads tokens for any audience.
        audience: AudienceRule::Any,
    };
    let verified = token::verify(token, &keys, &rules, then.as_ref())
        .map_err(|error| format!("the token does not verify: {error}"))?;
    let claims = verified.claims().clone();
    let admin = match admin {
        Some(client) => Some(client.trace(&claims.jti.0).await.map_err(|error| error.to_string())?),
        None => None,
    };
    Ok(Trace { expired: claims.exp <= SystemClock.now(), kid: unverified.kid.unwrap_or_default(), claims, admin })
}

/// One line per token of the chain, root first, each indented under its parent.
struct Step<'a> {
    agent: &'a str,
    aud: &'a str,
    scope: String,
    iat: crate::clock::UnixTime,
    exp: crate::clock::UnixTime,
    jti: &'a str,
    /// The identity provider of a person's sign-in at the root.
    provider: Option<&'a str>,
    /// The DPoP key the token is bound to.
    key: Option<&'a str>,
}

fn steps(claims: &Claims) -> Vec<Step<'_>> {
    let mut steps: Vec<Step<'_>> = claims
        .delegation
        .hops
        .iter()
        .map(|hop| Step {
            agent: &hop.agent,
            aud: &hop.aud,
            scope: hop.scope.to_string(),
            iat: hop.iat,
            exp: hop.exp,
            jti: &hop.jti.0,
            provider: hop.iss.as_deref(),
            key: hop.jkt.as_deref(),
        })
        .collect();
    steps.push(Step {
        agent: &claims.client_id,
        aud: &claims.aud,
        scope: claims.scope.to_string(),
        iat: claims.iat,
        exp: claims.exp,
        jti: &claims.jti.0,
        provider: None,
        key: claims.jkt(),
    });
    steps
}

/// The status the admin API reported for the `index`th step, root first.
fn status_of(trace: &Trace, index: usize, count: usize) -> Option<String> {
    let admin = trace.admin.as_ref()?;
    let node =
        if index + 1 == count { admin.get("token") } else { admin.get("ancestors").and_then(|list| list.get(index)) };
    node.and_then(|node| node.get("status")).and_then(Value::as_str).map(str::to_owned)
}

fn who(agent: &str, inventory: Option<&Inventory>) -> String {
    match inventory.and_then(|inventory| inventory.agent(agent)) {
        Some(known) => format!("{agent} (owner {}; {})", known.owner, known.purpose),
        None => agent.to_owned(),
    }
}

fn render(trace: &Trace, inventory: Option<&Inventory>) -> String {
    let claims = &trace.claims;
    let mut out = format!("verified: signed by key {} of {}\n", trace.kid, claims.iss);
    out.push_str(&format!("subject {}\n", claims.sub));
    let steps = steps(claims);
    let count = steps.len();
    for (index, step) in steps.iter().enumerate() {
        let branch = if index == 0 { String::new() } else { format!("{}└─ ", "   ".repeat(index - 1)) };
        let how = if index == 0 { "obtained" } else { "exchanged for" };
        let status = status_of(trace, index, count).map(|status| format!("  [{status}]")).unwrap_or_default();
        let key = step.key.map(|key| format!("  DPoP key {key}")).unwrap_or_default();
        let what = match step.provider {
            Some(provider) => format!("the person signed in at {provider} (client {})", step.agent),
            None => format!("{} {how} a token for {}  scope \"{}\"", who(step.agent, inventory), step.aud, step.scope),
        };
        out.push_str(&format!("{branch}{what}  {} .. {}  jti {}{key}{status}\n", step.iat, step.exp, step.jti));
    }
    if let Some(children) =
        trace.admin.as_ref().and_then(|admin| admin.get("token")).and_then(|token| token.get("children"))
    {
        descendants(&mut out, children, count, inventory);
    }
    if trace.expired {
        out.push_str("this token has expired\n");
    }
    if trace.admin.is_none() {
        out.push_str("(statuses and descendants need the admin API: pass --admin-token or set BATON_ADMIN_TOKEN)\n");
    }
    out
}

fn descendants(out: &mut String, children: &Value, depth: usize, inventory: Option<&Inventory>) {
    for child in children.as_array().map(Vec::as_slice).unwrap_or_default() {
        let field = |name: &str| child.get(name).and_then(Value::as_str).unwrap_or("?").to_owned();
        out.push_str(&format!(
            "{}└─ {} exchanged for a token for {}  scope \"{}\"  jti {}  [{}]\n",
            "   ".repeat(depth.saturating_sub(1)),
            who(&field("agent"), inventory),
            field("target"),
            field("scope"),
            field("jti"),
            field("status"),
        ));
        if let Some(grandchildren) = child.get("children") {
            descendants(out, grandchildren, depth + 1, inventory);
        }
    }
}

fn as_json(trace: &Trace, inventory: Option<&Inventory>) -> Value {
    let steps = steps(&trace.claims);
    let count = steps.len();
    let chain: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let known = inventory.and_then(|inventory| inventory.agent(step.agent));
            json!({
                "agent": step.agent,
                "owner": known.map(|agent| agent.owner.clone()),
                "purpose": known.map(|agent| agent.purpose.clone()),
                "aud": step.aud,
                "scope": step.scope,
                "iat": step.iat,
                "exp": step.exp,
                "jti": step.jti,
                "status": status_of(trace, index, count),
            })
        })
        .collect();
    json!({
        "verified": true,
        "kid": trace.kid,
        "issuer": trace.claims.iss,
        "subject": trace.claims.sub,
        "expired": trace.expired,
        "chain": chain,
        "act": trace.claims.act,
        "descendants": trace.admin.as_ref().and_then(|admin| admin.get("token")).and_then(|token| token.get("children")).cloned().unwrap_or(json!([])),
    })
}
