//! `baton policy check`: the whole policy folder, validated and read for
//! mistakes a loader cannot refuse on its own.
//!
//! Errors (the command exits non-zero): a folder that does not load (syntax,
//! schema, inventory); an agent without owner, purpose or expiry; a rule
//! naming an agent, group, resource, scope or target that is not registered;
//! a test file that does not parse. Warnings: agents past or near their
//! expiry; rules that can never match; no rules at all.
//!
//! What "can never match" covers, and its limit: every rule's scope (its
//! `principal`, `action` and `resource` constraints) is matched against the
//! finite inventory, every agent × action × scope. A rule whose scope
//! matches nothing registered is dead, and so is a permit whose every match
//! is also matched by a forbid without conditions. The Cedar validator adds
//! the rules it proves impossible (a condition that is always false, an
//! action that never applies). Conditions are not solved beyond that: a
//! permit whose `when` can only hold for an unregistered target is reported
//! as naming an unknown target, not as dead, and a permit shadowed by a
//! forbid *with* conditions is not reported at all.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use cedar_policy::{ActionConstraint, Effect, EntityUid, PrincipalConstraint, ResourceConstraint};
use serde_json::Value;

use super::cases;
use super::inventory::Inventory;
use super::lifecycle::{self, AgentWarning};
use super::{Action, Issuers, Lifetimes, Policy, PolicyError, Rules};
use crate::clock::UnixTime;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth a look; the folder is usable.
    Warning,
    /// The folder is wrong; `baton policy check` fails.
    Error,
}

/// What kind of thing a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Named {
    /// An agent (`Agent::"…"`, or a string in `context.chain`).
    Agent,
    /// A group (`Group::"…"`).
    Group,
    /// A resource (`Resource::"…"`).
    Resource,
    /// A scope (`Scope::"…"`, or a string in `context.parent_scopes`).
    Scope,
    /// A target (a string compared with `context.target`).
    Target,
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Named::Agent => "agent",
            Named::Group => "group",
            Named::Resource => "resource",
            Named::Scope => "scope",
            Named::Target => "target",
        })
    }
}

/// A field every agent must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentField {
    /// `owner`.
    Owner,
    /// `purpose`.
    Purpose,
    /// `expires`.
    Expires,
}

/// Why a rule can never match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadRule {
    /// Its scope matches no registered agent, action and scope together.
    MatchesNothingRegistered,
    /// The schema validator proved it can never apply.
    Impossible(String),
    /// Every request it matches is also matched by these forbids, which
    /// have no conditions.
    Overridden(Vec<String>),
}

/// One thing `baton policy check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The folder does not load.
    DoesNotLoad(String),
    /// An agent in `agents.toml` lacks a required field, or has it empty.
    AgentLacks {
        /// The agent (`?` when it has no `id` either).
        agent: String,
        /// The field.
        field: AgentField,
    },
    /// An agent's registration needs attention (expired, expiring soon).
    Agent {
        /// The agent.
        agent: String,
        /// What about it.
        warning: AgentWarning,
    },
    /// A rule names something that is not registered.
    UnknownName {
        /// The rule's id.
        rule: String,
        /// What kind of thing.
        kind: Named,
        /// The name.
        name: String,
    },
    /// A rule can never match.
    NeverMatches {
        /// The rule's id.
        rule: String,
        /// Why.
        why: DeadRule,
    },
    /// A scope several resources share needs a person's approval at some of
    /// them and not at others: a booking right marked at the API could be
    /// had without anyone approving it through the other.
    ApprovalDiffers {
        /// The scope.
        scope: String,
        /// The resources that mark it for approval.
        marked: Vec<String>,
        /// Those that share it without the mark.
        unmarked: Vec<String>,
    },
    /// There are no rules: every request is denied.
    NoRules,
    /// A test file in `tests/` does not parse.
    BadTestFile(String),
}

impl Finding {
    /// How much it matters.
    pub fn severity(&self) -> Severity {
        match self {
            Finding::DoesNotLoad(_)
            | Finding::AgentLacks { .. }
            | Finding::UnknownName { .. }
            | Finding::BadTestFile(_) => Severity::Error,
            Finding::Agent { .. }
            | Finding::NeverMatches { .. }
            | Finding::ApprovalDiffers { .. }
            | Finding::NoRules => Severity::Warning,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::DoesNotLoad(reason) => write!(f, "the folder does not load: {reason}"),
            Finding::AgentLacks { agent, field } => {
                let field = match field {
                    AgentField::Owner => "`owner`: no one answers for it",
                    AgentField::Purpose => "`purpose`",
                    AgentField::Expires => "`expires` date: it would never be retired",
                };
                write!(f, "agent `{agent}` has no {field}")
            }
            Finding::Agent { agent, warning } => write!(f, "agent `{agent}` {warning}"),
            Finding::UnknownName { rule, kind, name } => {
                write!(f, "rule `{rule}` names the {kind} `{name}`, which is not registered")
            }
            Finding::NeverMatches { rule, why } => match why {
                DeadRule::MatchesNothingRegistered => {
                    write!(f, "rule `{rule}` can never match: no registered agent, action and scope fit it")
                }
                DeadRule::Impossible(reason) => write!(f, "rule `{rule}` can never match: {reason}"),
                DeadRule::Overridden(forbids) => write!(
                    f,
                    "rule `{rule}` can never grant anything: unconditional forbid {} covers all it permits",
                    forbids.iter().map(|id| format!("`{id}`")).collect::<Vec<_>>().join(", ")
                ),
            },
            Finding::ApprovalDiffers { scope, marked, unmarked } => write!(
                f,
                "scope `{scope}` needs approval at {} but not at {}, which share it",
                marked.join(", "),
                unmarked.join(", ")
            ),
            Finding::NoRules => f.write_str("no rules: every request will be denied"),
            Finding::BadTestFile(reason) => write!(f, "test file: {reason}"),
        }
    }
}

/// What `baton policy check` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The folder checked.
    pub dir: PathBuf,
    /// Agents, resources and rules loaded; `None` when the folder does not load.
    pub counts: Option<(usize, usize, usize)>,
    /// Test cases found in `tests/`.
    pub test_cases: usize,
    /// Every finding, errors first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|finding| finding.severity() == Severity::Error)
    }
}

/// Scopes shared by resources that disagree on whether a person approves them.
fn shared_scope_findings(inventory: &super::inventory::Inventory) -> Vec<Finding> {
    let mut findings = Vec::new();
    for scope in inventory.all_scopes().iter() {
        let (marked, unmarked): (Vec<_>, Vec<_>) = inventory
            .resources()
            .filter(|resource| resource.scopes.contains(scope))
            .partition(|resource| resource.approval.contains(scope));
        if !marked.is_empty() && !unmarked.is_empty() {
            let uris = |resources: Vec<&super::inventory::Resource>| resources.iter().map(|r| r.uri.clone()).collect();
            findings.push(Finding::ApprovalDiffers {
                scope: scope.to_string(),
                marked: uris(marked),
                unmarked: uris(unmarked),
            });
        }
    }
    findings
}

/// Checks the policy folder `dir` at `now`.
pub fn check(dir: &Path, lifetimes: Lifetimes, now: UnixTime) -> Report {
    let mut findings = missing_agent_fields(&dir.join("agents.toml"));
    let mut counts = None;
    match Policy::load(dir, lifetimes) {
        Err(error) => findings.extend(load_problems(dir, &error).into_iter().map(Finding::DoesNotLoad)),
        Ok(policy) => {
            let inventory = policy.inventory();
            counts = Some((inventory.agents().count(), inventory.resources().count(), policy.rules().len()));
            for agent in inventory.agents() {
                for warning in lifecycle::registration_warnings(agent, now) {
                    findings.push(Finding::Agent { agent: agent.id.clone(), warning });
                }
            }
            findings.extend(shared_scope_findings(inventory));
            findings.extend(rule_findings(&policy));
        }
    }
    let mut test_cases = 0;
    match cases::files(&dir.join("tests")) {
        Err(error) => findings.push(Finding::BadTestFile(error.to_string())),
        Ok(files) => {
            for file in files {
                match cases::load(&file) {
                    Ok(cases) => test_cases += cases.len(),
                    Err(error) => findings.push(Finding::BadTestFile(error.to_string())),
                }
            }
        }
    }
    // Stable: errors first, then in the order found.
    findings.sort_by_key(|finding| std::cmp::Reverse(finding.severity()));
    Report { dir: dir.to_path_buf(), counts, test_cases, findings }
}

/// Why the folder does not load, file by file: the loader stops at its first
/// problem (`first`), the check loads each part on its own and names every
/// one that fails, so that one broken file does not hide the others.
fn load_problems(dir: &Path, first: &PolicyError) -> Vec<String> {
    let inventory = Inventory::load(dir);
    let mut found: Vec<PolicyError> = Vec::new();
    match (&inventory, Issuers::load(dir)) {
        (Ok(inventory), Ok(issuers)) => found.extend(issuers.check_agents(|id| inventory.agent(id).is_some()).err()),
        (_, issuers) => found.extend(issuers.err()),
    }
    let unparsable = Rules::unparsable_files(dir);
    // The rules are validated against the schema only once every file parses
    // and the inventory they are checked with loads.
    if let (true, Ok(inventory)) = (unparsable.is_empty(), &inventory) {
        found.extend(Rules::load(dir, inventory).err());
    }
    found.extend(unparsable);
    let mut problems = vec![first.to_string()];
    let inventory_problem = inventory.err().map(|error| error.to_string());
    for problem in inventory_problem.into_iter().chain(found.iter().map(ToString::to_string)) {
        if !problems.contains(&problem) {
            problems.push(problem);
        }
    }
    problems
}

/// Agents lacking `owner`, `purpose` or `expires`, read from the raw file so
/// that each is named even though the loader stops at the first.
fn missing_agent_fields(path: &Path) -> Vec<Finding> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let Ok(table) = text.parse::<toml::Table>() else { return Vec::new() };
    let Some(agents) = table.get("agents").and_then(toml::Value::as_array) else { return Vec::new() };
    let mut findings = Vec::new();
    for agent in agents.iter().filter_map(toml::Value::as_table) {
        let id = agent.get("id").and_then(toml::Value::as_str).unwrap_or("?").to_owned();
        for (key, field) in
            [("owner", AgentField::Owner), ("purpose", AgentField::Purpose), ("expires", AgentField::Expires)]
        {
            let present = match agent.get(key) {
                Some(toml::Value::String(text)) => !text.trim().is_empty(),
                Some(_) => true,
                None => false,
            };
            if !present {
                findings.push(Finding::AgentLacks { agent: id.clone(), field });
            }
        }
    }
    findings
}

/// One point of the space a rule's scope is matched against.
type Request = (usize, Action, usize);

/// Unknown names and dead rules, rule by rule.
fn rule_findings(policy: &Policy) -> Vec<Finding> {
    let inventory = policy.inventory();
    let rules = policy.rules();
    if rules.is_empty() {
        return vec![Finding::NoRules];
    }
    let mut findings = Vec::new();
    let agents: Vec<_> = inventory.agents().collect();
    let scopes: Vec<_> = inventory.all_scopes().iter().cloned().collect();
    let groups: HashSet<&str> = agents.iter().flat_map(|agent| agent.groups.iter().map(String::as_str)).collect();

    let reach = |policy: &cedar_policy::Policy| -> HashSet<Request> {
        let mut reached = HashSet::new();
        for (agent_index, agent) in agents.iter().enumerate() {
            if !principal_matches(&policy.principal_constraint(), &agent.id, &agent.groups) {
                continue;
            }
            for action in [Action::Issue, Action::Exchange] {
                if !action_matches(&policy.action_constraint(), action) {
                    continue;
                }
                for (scope_index, scope) in scopes.iter().enumerate() {
                    let owners = inventory.scope_owners(scope);
                    if resource_matches(&policy.resource_constraint(), scope.as_str(), owners) {
                        reached.insert((agent_index, action, scope_index));
                    }
                }
            }
        }
        reached
    };
    let unconditional_forbids: Vec<(String, HashSet<Request>)> = rules
        .policies()
        .filter(|rule| rule.effect() == Effect::Forbid && !rule.has_non_scope_constraint())
        .map(|rule| (rule.id().to_string(), reach(rule)))
        .collect();

    for rule in rules.policies() {
        let id = rule.id().to_string();
        let mut named = BTreeSet::new();
        for uid in rule.entity_literals() {
            if let Some(unknown) = unknown_entity(&uid, inventory, &groups) {
                named.insert(unknown);
            }
        }
        if let Ok(json) = rule.to_json() {
            context_names(&json, &mut |kind, name| {
                let known = match kind {
                    Named::Target => inventory.target(name).is_some(),
                    Named::Agent => inventory.agent(name).is_some(),
                    Named::Scope => name.parse().is_ok_and(|scope| inventory.is_registered_scope(&scope)),
                    Named::Group | Named::Resource => true,
                };
                if !known {
                    named.insert((kind, name.to_owned()));
                }
            });
        }
        findings.extend(named.into_iter().map(|(kind, name)| Finding::UnknownName { rule: id.clone(), kind, name }));

        let reached = reach(rule);
        let why = if let Some((_, reason)) = rules.inert().iter().find(|(inert, _)| *inert == id) {
            Some(DeadRule::Impossible(reason.clone()))
        } else if reached.is_empty() {
            Some(DeadRule::MatchesNothingRegistered)
        } else if rule.effect() == Effect::Permit {
            let covering: Vec<&(String, HashSet<Request>)> = unconditional_forbids
                .iter()
                .filter(|(_, forbidden)| reached.iter().any(|request| forbidden.contains(request)))
                .collect();
            let covered =
                reached.iter().all(|request| covering.iter().any(|(_, forbidden)| forbidden.contains(request)));
            (covered && !covering.is_empty())
                .then(|| DeadRule::Overridden(covering.iter().map(|(forbid, _)| forbid.clone()).collect()))
        } else {
            None
        };
        if let Some(why) = why {
            findings.push(Finding::NeverMatches { rule: id, why });
        }
    }
    findings
}

/// The entity a rule names, when the inventory has no such thing.
fn unknown_entity(uid: &EntityUid, inventory: &Inventory, groups: &HashSet<&str>) -> Option<(Named, String)> {
    let id = uid.id().unescaped();
    let kind = match uid.type_name().basename() {
        "Agent" if inventory.agent(id).is_none() => Named::Agent,
        "Group" if !groups.contains(id) => Named::Group,
        "Resource" if !inventory.resources().any(|resource| resource.uri == id) => Named::Resource,
        "Scope" if !id.parse().is_ok_and(|scope| inventory.is_registered_scope(&scope)) => Named::Scope,
        _ => return None,
    };
    Some((kind, id.to_owned()))
}

/// Whether an agent with `id` and `groups` satisfies a principal constraint.
fn principal_matches(constraint: &PrincipalConstraint, id: &str, groups: &[String]) -> bool {
    let is_agent = |uid: &EntityUid| uid.type_name().basename() == "Agent" && uid.id().unescaped() == id;
    // `in` is reflexive: an agent is `in` itself and in its groups.
    let within = |uid: &EntityUid| {
        is_agent(uid)
            || (uid.type_name().basename() == "Group" && groups.iter().any(|group| group == uid.id().unescaped()))
    };
    match constraint {
        PrincipalConstraint::Any => true,
        PrincipalConstraint::Eq(uid) => is_agent(uid),
        PrincipalConstraint::In(uid) => within(uid),
        PrincipalConstraint::Is(kind) => kind.basename() == "Agent",
        PrincipalConstraint::IsIn(kind, uid) => kind.basename() == "Agent" && within(uid),
    }
}

/// Whether `action` satisfies an action constraint (the schema's actions
/// have no groups, so `in` is membership of the list).
fn action_matches(constraint: &ActionConstraint, action: Action) -> bool {
    let is = |uid: &EntityUid| uid.id().unescaped() == action.name();
    match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => is(uid),
        ActionConstraint::In(uids) => uids.iter().any(is),
    }
}

/// Whether the scope `scope`, defined by the resource `owner`, satisfies a
/// resource constraint.
fn resource_matches(constraint: &ResourceConstraint, scope: &str, owners: &[String]) -> bool {
    let is_scope = |uid: &EntityUid| uid.type_name().basename() == "Scope" && uid.id().unescaped() == scope;
    let is_owner = |uid: &EntityUid| {
        uid.type_name().basename() == "Resource" && owners.iter().any(|owner| owner == uid.id().unescaped())
    };
    let within = |uid: &EntityUid| is_scope(uid) || is_owner(uid);
    match constraint {
        ResourceConstraint::Any => true,
        ResourceConstraint::Eq(uid) => is_scope(uid),
        ResourceConstraint::In(uid) => within(uid),
        ResourceConstraint::Is(kind) => kind.basename() == "Scope",
        ResourceConstraint::IsIn(kind, uid) => kind.basename() == "Scope" && within(uid),
    }
}

/// Walks a rule's JSON form (Cedar's EST) for string literals compared with
/// `context.target` or looked for in `context.chain` and
/// `context.parent_scopes`, calling `found` with each.
fn context_names(json: &Value, found: &mut impl FnMut(Named, &str)) {
    match json {
        Value::Object(object) => {
            for (operator, operands) in object {
                let left = operands.get("left");
                let right = operands.get("right");
                let kind = |side: Option<&Value>| match context_attribute(side) {
                    Some("target") => Some(Named::Target),
                    Some("chain") => Some(Named::Agent),
                    Some("parent_scopes") => Some(Named::Scope),
                    _ => None,
                };
                match operator.as_str() {
                    "==" | "!=" => {
                        for (attribute, literal) in [(left, right), (right, left)] {
                            if let (Some(Named::Target), Some(name)) = (kind(attribute), string_literal(literal)) {
                                found(Named::Target, name);
                            }
                        }
                    }
                    "contains" => {
                        if let (Some(kind), Some(name)) = (kind(left), string_literal(right)) {
                            found(kind, name);
                        }
                    }
                    "containsAll" | "containsAny" => {
                        let items = right.and_then(|set| set.get("Set")).and_then(Value::as_array);
                        if let (Some(kind), Some(items)) = (kind(left), items) {
                            for name in items.iter().filter_map(|item| string_literal(Some(item))) {
                                found(kind, name);
                            }
                        }
                    }
                    _ => {}
                }
                context_names(operands, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| context_names(item, found)),
        _ => {}
    }
}

/// `attr` when `side` is `context.attr`.
fn context_attribute(side: Option<&Value>) -> Option<&str> {
    let access = side?.get(".")?;
    (access.get("left")?.get("Var")?.as_str()? == "context").then_some(())?;
    access.get("attr")?.as_str()
}

fn string_literal(side: Option<&Value>) -> Option<&str> {
    side?.get("Value")?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = UnixTime(1_796_083_200);
    const UNIX_2029_12_25: UnixTime = UnixTime(1_892_851_200);
    const SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    const RESOURCES: &str = "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read','write']\nttl=60\n";

    fn agents(extra: &str) -> String {
        format!(
            "[[agents]]\nid='a'\nowner='o'\npurpose='p'\nexpires=2030-01-01\ngroups=['g']\nsecret_sha256='{SECRET}'\n{extra}"
        )
    }

    fn folder(agents: &str, rules: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agents.toml"), agents).unwrap();
        std::fs::write(dir.path().join("resources.toml"), RESOURCES).unwrap();
        std::fs::write(dir.path().join("rules.cedar"), rules).unwrap();
        dir
    }

    fn run(agents_text: &str, rules: &str) -> Report {
        let dir = folder(agents_text, rules);
        check(dir.path(), Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }, NOW)
    }

    #[test]
    fn a_shared_scope_approved_at_one_resource_only_is_a_warning() {
        let dir = folder(&agents(""), "permit (principal, action, resource);");
        let shared = format!(
            "{}approval=['write']\n[[resources]]\nuri='https://mcp.example/mcp'\nname='MCP'\nscopes=['write']\nttl=60\n",
            RESOURCES
        );
        std::fs::write(dir.path().join("resources.toml"), shared).unwrap();
        let report = check(dir.path(), Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }, NOW);
        let expected = Finding::ApprovalDiffers {
            scope: "write".into(),
            marked: vec!["https://api.example".into()],
            unmarked: vec!["https://mcp.example/mcp".into()],
        };
        assert!(report.findings.contains(&expected), "{:?}", report.findings);
        assert_eq!(expected.severity(), Severity::Warning);
    }

    #[test]
    fn the_example_folder_is_clean() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let report = check(&dir, Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }, NOW);
        assert_eq!(report.findings, [], "{:?}", report.findings);
        assert_eq!(report.counts, Some((4, 3, 8)));
        assert!(report.test_cases > 0);
    }

    #[test]
    fn unknown_names_in_scopes_and_conditions_are_errors() {
        let report = run(
            &agents(""),
            "@id(\"r\")\npermit (principal == Agent::\"ghost\", action, resource in Resource::\"https://nowhere\")\n\
             when { context.target == \"elsewhere\" && context.chain.contains(\"phantom\") \
             && context.parent_scopes.containsAny([\"read\", \"delete\"]) };\n\
             @id(\"s\")\npermit (principal in Group::\"nobody\", action, resource == Scope::\"erase\");",
        );
        let unknown: Vec<String> = report
            .findings
            .iter()
            .filter_map(|finding| match finding {
                Finding::UnknownName { rule, kind, name } => Some(format!("{rule}:{kind}:{name}")),
                _ => None,
            })
            .collect();
        for expected in [
            "rules.cedar#r:agent:ghost",
            "rules.cedar#r:resource:https://nowhere",
            "rules.cedar#r:target:elsewhere",
            "rules.cedar#r:agent:phantom",
            "rules.cedar#r:scope:delete",
            "rules.cedar#s:group:nobody",
            "rules.cedar#s:scope:erase",
        ] {
            assert!(unknown.contains(&expected.to_owned()), "{expected} not in {unknown:?}");
        }
        assert_eq!(unknown.len(), 7, "{unknown:?}");
        assert!(report.has_errors());
        let dead = |rule: &str| {
            report
                .findings
                .contains(&Finding::NeverMatches { rule: rule.into(), why: DeadRule::MatchesNothingRegistered })
        };
        assert!(dead("rules.cedar#r") && dead("rules.cedar#s"), "{:?}", report.findings);
    }

    #[test]
    fn a_permit_under_an_unconditional_forbid_is_dead_and_one_with_a_condition_is_not() {
        let report = run(
            &agents(""),
            "@id(\"read\")\npermit (principal == Agent::\"a\", action, resource == Scope::\"read\");\n\
             @id(\"write\")\npermit (principal in Group::\"g\", action == Action::\"issue\", resource == Scope::\"write\");\n\
             @id(\"no-reads\")\nforbid (principal, action, resource == Scope::\"read\");\n\
             @id(\"late-writes\")\nforbid (principal, action, resource == Scope::\"write\") when { context.ttl > 60 };",
        );
        assert!(!report.has_errors(), "{:?}", report.findings);
        assert_eq!(
            report.findings,
            [Finding::NeverMatches {
                rule: "rules.cedar#read".into(),
                why: DeadRule::Overridden(vec!["rules.cedar#no-reads".into()]),
            }]
        );
    }

    #[test]
    fn the_validator_s_impossible_rules_are_dead() {
        let report = run(&agents(""), "@id(\"never\")\npermit (principal, action, resource) when { false };");
        assert!(
            matches!(&report.findings[..], [Finding::NeverMatches { why: DeadRule::Impossible(_), .. }]),
            "{:?}",
            report.findings
        );
    }

    #[test]
    fn agents_without_owner_purpose_or_expiry_are_each_named() {
        let text = agents(&format!(
            "[[agents]]\nid='b'\nowner=' '\nsecret_sha256='{SECRET}'\n[[agents]]\nid='c'\npurpose='p'\nexpires=2030-01-01\n"
        ));
        let report = run(&text, "");
        let lacks: Vec<(String, AgentField)> = report
            .findings
            .iter()
            .filter_map(|finding| match finding {
                Finding::AgentLacks { agent, field } => Some((agent.clone(), *field)),
                _ => None,
            })
            .collect();
        assert_eq!(
            lacks,
            [
                ("b".into(), AgentField::Owner),
                ("b".into(), AgentField::Purpose),
                ("b".into(), AgentField::Expires),
                ("c".into(), AgentField::Owner)
            ]
        );
        assert!(report.findings.iter().any(|finding| matches!(finding, Finding::DoesNotLoad(_))));
        assert_eq!(report.counts, None);
    }

    #[test]
    fn expiring_agents_and_an_empty_rule_set_are_warnings() {
        // 2029-12-25: a week before the agent's last day.
        let dir = folder(&agents(""), "");
        let report = check(dir.path(), Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }, UNIX_2029_12_25);
        assert!(!report.has_errors());
        assert!(report.findings.contains(&Finding::NoRules));
        assert!(report.findings.iter().any(|finding| matches!(
            finding,
            Finding::Agent { warning: AgentWarning::ExpiresSoon { days_left: 7, .. }, .. }
        )));
    }

    #[test]
    fn every_file_that_does_not_load_is_named_not_only_the_first() {
        let dir = folder(&agents("flavour='x'\n"), "permit (principal, action, resource);");
        std::fs::write(dir.path().join("zz-broken.cedar"), "permit (principal, action, resource").unwrap();
        std::fs::write(dir.path().join("also-broken.cedar"), "forbid principal;").unwrap();
        std::fs::write(dir.path().join("issuers.toml"), "[[issuers]]\nissuer = 'not a url'\n").unwrap();
        let report = check(dir.path(), Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }, NOW);
        let problems: Vec<&str> = report
            .findings
            .iter()
            .filter_map(|finding| match finding {
                Finding::DoesNotLoad(reason) => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        for part in ["flavour", "zz-broken.cedar", "also-broken.cedar", "issuers.toml"] {
            assert!(problems.iter().any(|problem| problem.contains(part)), "{part} missing from {problems:#?}");
        }
        let distinct: HashSet<&&str> = problems.iter().collect();
        assert_eq!(distinct.len(), problems.len(), "each problem once: {problems:#?}");
        assert!(report.has_errors());
    }

    #[test]
    fn rules_that_break_the_schema_are_named_beside_an_inventory_that_loads() {
        let dir = folder(&agents(""), "permit (principal, action, resource) when { context.no_such_thing };");
        let report = check(dir.path(), Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }, NOW);
        assert!(
            matches!(&report.findings[..], [Finding::DoesNotLoad(reason)] if reason.contains("schema")),
            "{:?}",
            report.findings
        );
    }

    #[test]
    fn a_broken_test_file_is_an_error() {
        let dir = folder(&agents(""), "permit (principal, action, resource);");
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(dir.path().join("tests/bad.toml"), "[[case]]\nnom = 'x'\n").unwrap();
        let report = check(dir.path(), Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }, NOW);
        assert!(matches!(&report.findings[..], [Finding::BadTestFile(reason)] if reason.contains("nom")));
    }
}
