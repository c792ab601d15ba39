//! Policy as code on a running broker (DESIGN.md §5): a changed folder is
//! loaded whole and swapped in atomically, a broken one is refused while the
//! policy in force keeps serving, and any request can be explained without
//! issuing anything.

use std::path::Path;
use std::sync::Arc;

use crate::context::Context;
use crate::policy::explain::{ExplainError, Explanation, Question};
use crate::policy::{Policy, PolicyError};

/// Swaps in `policy`. Requests already under way finish on the snapshot
/// they took; the next ones see the new policy.
pub fn replace_policy(context: &Context, policy: Policy) {
    let policy = Arc::new(policy);
    match context.policy.write() {
        Ok(mut current) => *current = policy,
        Err(poisoned) => *poisoned.into_inner() = policy,
    }
}

/// Loads the folder `dir` whole, validates it, and swaps it in. A folder
/// that does not load is refused and the policy in force stays (deny by
/// default never means "deny everything because of a typo"). Either way
/// the reload is counted in the metrics.
pub fn reload_policy(context: &Context, dir: &Path) -> Result<(), PolicyError> {
    match Policy::load(dir, context.settings.lifetimes) {
        Ok(policy) => {
            replace_policy(context, policy);
            context.metrics.count_policy_reload(true);
            Ok(())
        }
        Err(error) => {
            context.metrics.count_policy_reload(false);
            Err(error)
        }
    }
}

/// A dry run of `question` against the policy in force, at the broker's
/// now (`POST /admin/policy/explain`).
///
/// Nothing is issued and nothing is recorded. A dry run decides no
/// token, so it is not the evidence DESIGN.md §2.7 asks for; and an audit
/// event naming the agent would count as that agent's last use, hiding an
/// idle agent from the lifecycle warnings.
pub fn explain(context: &Context, question: &Question) -> Result<Explanation, ExplainError> {
    context.policy().explain(question, context.now())
}
