//! Which granted scopes need a person's approval, by either of two
//! marks:
//!
//! - `approval = ["scope", …]` on a resource in `resources.toml`: the scope
//!   needs approval when a token carrying it is issued *for that resource*,
//!   the only token that can exercise it. A token addressed to an agent
//!   carries the right onward without one; the hop that addresses the API is
//!   the impact threshold, and it is asked there.
//! - `@approval("why")` on a Cedar `permit` rule: a scope that rule permits
//!   needs approval whenever the rule matches, on any hop the rule's own
//!   conditions select. A scope permitted by several rules needs approval if
//!   any of them carries the mark: the stricter reading wins.

use super::cedar::Rules;
use super::inventory::{Inventory, Target};
use crate::claims::{Scope, ScopeSet};

/// The scopes of a grant that wait for a person, and what marked them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalNeed {
    /// The granted scopes that need approval.
    pub scopes: ScopeSet,
    /// What marked them: `resources.toml: <uri>` or `<rule id>: <annotation>`.
    pub marked_by: Vec<String>,
}

/// The approval the granted scopes need, if any. `permits` holds, for each
/// permitted scope, the ids of the rules that permitted it.
pub(super) fn required(
    inventory: &Inventory,
    rules: &Rules,
    target: &str,
    granted: &ScopeSet,
    permits: &[(Scope, Vec<String>)],
) -> Option<ApprovalNeed> {
    let mut scopes = Vec::new();
    let mut marked_by = Vec::new();
    if let Some(Target::Resource(resource)) = inventory.target(target) {
        let marked: Vec<Scope> = granted.iter().filter(|scope| resource.approval.contains(scope)).cloned().collect();
        if !marked.is_empty() {
            marked_by.push(format!("resources.toml: {}", resource.uri));
            scopes.extend(marked);
        }
    }
    for (scope, rule_ids) in permits.iter().filter(|(scope, _)| granted.contains(scope)) {
        for rule in rule_ids {
            if let Some(why) = rules.approval(rule) {
                scopes.push(scope.clone());
                marked_by.push(format!("{rule}: {why}"));
            }
        }
    }
    if scopes.is_empty() {
        return None;
    }
    marked_by.sort();
    marked_by.dedup();
    Some(ApprovalNeed { scopes: scopes.into_iter().collect(), marked_by })
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use crate::claims::ScopeSet;
    use crate::clock::UnixTime;
    use crate::ids::{AgentId, Audience, Subject};
    use crate::policy::{Action, Ask, Lifetimes, Policy};

    const AGENTS: &str = "[[agents]]\nid='a'\nowner='o'\npurpose='p'\nexpires=2030-01-01\n\
        secret_sha256='0000000000000000000000000000000000000000000000000000000000000000'\n\
        [[agents]]\nid='b'\nowner='o'\npurpose='p'\nexpires=2030-01-01\n\
        secret_sha256='0000000000000000000000000000000000000000000000000000000000000000'\n";

    fn load(resources: &str, rules: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agents.toml"), AGENTS).unwrap();
        std::fs::write(dir.path().join("resources.toml"), resources).unwrap();
        std::fs::write(dir.path().join("rules.cedar"), rules).unwrap();
        Policy::load(dir.path(), Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }).unwrap()
    }

    static AGENT: LazyLock<AgentId> = LazyLock::new(|| AgentId::new("a"));
    static SUBJECT: LazyLock<Subject> = LazyLock::new(|| Subject::of_agent(&AGENT));

    fn ask<'a>(target: &'a str, scope: Option<&'a ScopeSet>) -> Ask<'a> {
        Ask {
            action: Action::Issue,
            agent: &AGENT,
            subject: &SUBJECT,
            target: Some(Audience::new(target)),
            requested: scope,
            parent_scopes: None,
            depth: 0,
            chain: Vec::new(),
            expires_no_later_than: None,
            dpop_bound: false,
            chain_dpop_bound: false,
            now: UnixTime(1_800_000_000),
        }
    }

    const API: &str = "https://api.example";
    const MARKED: &str =
        "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read','write']\nttl=60\napproval=['write']\n";

    #[test]
    fn a_marked_scope_needs_approval_only_for_its_own_resource() {
        let policy = load(MARKED, "permit (principal, action, resource);");
        let write = ScopeSet::parse("write").unwrap();
        let need = policy.decide(&ask(API, Some(&write))).unwrap().unwrap().approval().cloned().unwrap();
        assert_eq!(need.scopes, write);
        assert_eq!(need.marked_by, vec!["resources.toml: https://api.example".to_owned()]);
        let read = ScopeSet::parse("read").unwrap();
        assert!(policy.decide(&ask(API, Some(&read))).unwrap().unwrap().approval().is_none());
        // Carried onward to an agent, it needs none yet.
        assert!(policy.decide(&ask("b", Some(&write))).unwrap().unwrap().approval().is_none());
    }

    #[test]
    fn an_annotated_permit_needs_approval_where_it_matches() {
        let resources = "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read','write']\nttl=60\n";
        let policy = load(
            resources,
            "@id(\"reads\")\npermit (principal, action, resource == Scope::\"read\");\n\
             @id(\"writes\")\n@approval(\"writes spend money\")\n\
             permit (principal, action, resource == Scope::\"write\") when { context.target_is_agent == false };",
        );
        let both = ScopeSet::parse("read write").unwrap();
        let need = policy.decide(&ask(API, Some(&both))).unwrap().unwrap().approval().cloned().unwrap();
        assert_eq!(need.scopes, ScopeSet::parse("write").unwrap());
        assert_eq!(need.marked_by, vec!["rules.cedar#writes: writes spend money".to_owned()]);
        let read = ScopeSet::parse("read").unwrap();
        assert!(policy.decide(&ask(API, Some(&read))).unwrap().unwrap().approval().is_none());
    }

    #[test]
    fn approval_on_a_forbid_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agents.toml"), AGENTS).unwrap();
        std::fs::write(dir.path().join("resources.toml"), MARKED).unwrap();
        std::fs::write(dir.path().join("rules.cedar"), "@approval(\"x\")\nforbid (principal, action, resource);")
            .unwrap();
        let error = Policy::load(dir.path(), Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }).err().unwrap();
        assert!(error.to_string().contains("@approval belongs on a permit rule"), "{error}");
    }
}
