//! `client_credentials` (RFC 6749 §4.4): an agent's own token, the root of a
//! chain. `sub` is the agent, there is no `act`, depth is 0.

use super::{asked_scopes, named_target, Issued, CLIENT_CREDENTIALS};
use crate::approvals::{Approvals, Asked};
use crate::audit::{clip, Evidence};
use crate::chain::{self, Issuance};
use crate::client_auth::AuthenticatedAgent;
use crate::context::Context;
use crate::dpop::Proof;
use crate::error::GrantError;
use crate::params::TokenParams;
use crate::policy::{Action, Ask, Policy};
use crate::token;

pub(super) async fn handle(
    context: &Context,
    approvals: &Approvals,
    policy: &Policy,
    agent: &AuthenticatedAgent,
    params: &TokenParams,
    proof: Option<&Proof>,
    evidence: &mut Evidence,
) -> Result<Issued, GrantError> {
    evidence.subject = Some(agent.id().to_string());
    let requested = asked_scopes(params)?;
    let target = named_target(params)?;
    evidence.target = target.map(clip);
    let now = context.now();
    let ask = Ask {
        action: Action::Issue,
        agent: agent.id(),
        subject: &crate::ids::Subject::of_agent(agent.id()),
        target: target.map(crate::ids::Audience::new),
        requested: requested.as_ref(),
        parent_scopes: None,
        depth: 0,
        chain: Vec::new(),
        expires_no_later_than: None,
        dpop_bound: proof.is_some(),
        chain_dpop_bound: proof.is_some(),
        now,
    };
    let allowance = policy.decide(&ask)??;
    evidence.target = Some(allowance.target().to_string());
    evidence.rules = allowance.reasons().to_vec();
    let asked = Asked { grant_type: CLIENT_CREDENTIALS, subject: agent.id(), agent: agent.id(), parent_jti: None };
    let approval = approvals.check(context, &asked, &allowance, params, evidence).await?;
    let jti = context.new_jti()?;
    let issuance = Issuance {
        issuer: context.settings().issuer.clone(),
        issued_at: now,
        iat_micros: context.now_micros(),
        jti,
        bound_to: proof.map(|proof| proof.jkt().to_owned()),
        approval,
    };
    let derived = chain::root(agent, &allowance, issuance);
    let access_token = token::mint(&derived, context.keys().signing())?;
    Ok(Issued::new(derived.into_claims(), access_token, None, now))
}
