//! The tail every grant shares once it has read its request: the policy
//! decides, a person approves where a granted scope needs it, the chain
//! module derives the token, and it is signed. What each step learns goes
//! into the request's evidence.

use super::{Issued, CLIENT_CREDENTIALS, TOKEN_EXCHANGE};
use crate::approvals::{Approvals, Asked};
use crate::audit::Evidence;
use crate::chain::{ChainError, Derived, Issuance};
use crate::claims::TokenId;
use crate::context::Context;
use crate::dpop::Proof;
use crate::error::EndpointError;
use crate::params::TokenParams;
use crate::policy::{Action, Allowance, Ask, Policy};

/// What a grant handler reads: the shared context, the approvals, and the
/// request's policy snapshot, parameters and DPoP proof.
pub(super) struct Handler<'a> {
    pub context: &'a Context,
    pub approvals: &'a Approvals,
    pub policy: &'a Policy,
    pub params: &'a TokenParams,
    pub proof: Option<&'a Proof>,
}

impl Handler<'_> {
    /// Puts `ask` to the policy and, where a granted scope needs one, to a
    /// person (the request's parent is `parent_jti`), then issues the token
    /// `derive` makes of what was allowed, as `issued_token_type`.
    pub(super) async fn issue(
        &self,
        ask: &Ask<'_>,
        parent_jti: Option<&TokenId>,
        evidence: &mut Evidence,
        derive: impl FnOnce(&Allowance, Issuance) -> Result<Derived, ChainError>,
        issued_token_type: Option<&'static str>,
    ) -> Result<Issued, EndpointError> {
        let allowance = self.policy.decide(ask)??;
        evidence.target = Some(allowance.target().to_string());
        evidence.rules = allowance.reasons().to_vec();
        let grant_type = match ask.action {
            Action::Issue => CLIENT_CREDENTIALS,
            Action::Exchange => TOKEN_EXCHANGE,
        };
        let asked = Asked { grant_type, subject: ask.subject, agent: ask.agent, parent_jti };
        let approval = self.approvals.check(self.context, &asked, &allowance, self.params, evidence).await?;
        let issuance = Issuance {
            issuer: self.context.settings().issuer.clone(),
            issued_at: ask.now,
            iat_micros: self.context.now_micros(),
            jti: self.context.new_jti()?,
            bound_to: self.proof.map(|proof| proof.jkt().to_owned()),
            approval,
        };
        let derived = derive(&allowance, issuance)?;
        let access_token = derived.sign(self.context.keys().signing())?;
        Ok(Issued::new(derived.into_claims(), access_token, issued_token_type, ask.now))
    }
}
