//! `client_credentials` (RFC 6749 §4.4): an agent's own token, the root of a
//! chain. `sub` is the agent, there is no `act`, depth is 0.

use super::issue::Handler;
use super::{asked_scopes, named_target, Issued};
use crate::audit::{clip, Evidence};
use crate::chain;
use crate::client_auth::AuthenticatedAgent;
use crate::error::EndpointError;
use crate::ids::{Audience, Subject};
use crate::policy::{Action, Ask};

pub(super) async fn handle(
    handler: &Handler<'_>,
    agent: &AuthenticatedAgent,
    evidence: &mut Evidence,
) -> Result<Issued, EndpointError> {
    let params = handler.params;
    let subject = Subject::of_agent(agent.id());
    // A blocked agent is refused, and so is its own token: it is the subject too.
    handler.context.ensure_not_blocked(agent.id(), Some(&subject)).await?;
    evidence.subject = Some(subject.to_string());
    let requested = asked_scopes(params)?;
    let target = named_target(params)?;
    evidence.target = target.map(clip);
    let ask = Ask {
        action: Action::Issue,
        agent: agent.id(),
        subject: &subject,
        target: target.map(Audience::new),
        requested: requested.as_ref(),
        parent_scopes: None,
        depth: 0,
        chain: Vec::new(),
        expires_no_later_than: None,
        dpop_bound: handler.proof.is_some(),
        chain_dpop_bound: handler.proof.is_some(),
        now: handler.context.now(),
    };
    let root = |allowance: &_, issuance| Ok(chain::root(agent, allowance, issuance));
    handler.issue(&ask, None, evidence, root, None).await
}
