//! Cedar rules (`*.cedar`), validated against the schema Baton ships and
//! evaluated once per asked scope (DESIGN.md §5).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, ValidationWarning, Validator,
};

use super::inventory::Inventory;
use super::{diagnostic, PolicyError};
use crate::claims::Scope;
use memo::{Memo, RequestKey};

mod memo;

/// The schema shipped with Baton.
pub const SCHEMA: &str = include_str!("schema.cedarschema");

/// Which authorization is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An agent's own token (`client_credentials`).
    Issue,
    /// A token exchange (RFC 8693).
    Exchange,
}

impl Action {
    /// The Cedar action's id (`Action::"issue"`, `Action::"exchange"`).
    pub fn name(self) -> &'static str {
        match self {
            Action::Issue => "issue",
            Action::Exchange => "exchange",
        }
    }
}

/// The facts a rule may look at, besides principal, action and scope.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The chain's subject.
    pub subject: &'a str,
    /// The target.
    pub target: &'a str,
    /// Whether the target is an agent.
    pub target_is_agent: bool,
    /// The new token's depth.
    pub depth: u32,
    /// Agents that already acted.
    pub chain: Vec<&'a str>,
    /// The parent's scopes.
    pub parent_scopes: Vec<&'a str>,
    /// Whether the new token is DPoP-bound.
    pub dpop_bound: bool,
    /// Whether the new token and every token of the chain Baton issued
    /// before it are DPoP-bound.
    pub chain_dpop_bound: bool,
    /// The new token's lifetime in seconds.
    pub ttl: i64,
}

/// The outcome for one scope, with the rules that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the scope is granted.
    pub allowed: bool,
    /// Ids of the rules that decided (`file.cedar#n`).
    pub reasons: Vec<String>,
}

/// The outcome for one scope with every rule that had a say, for a dry run
/// ([`Rules::explain`]): unlike [`Verdict`], it names the permits that
/// matched even when a forbid won, and the rules that failed to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScopeVerdict {
    /// Whether the scope is granted: exactly what [`Rules::decide`] says.
    pub allowed: bool,
    /// Ids of the permits whose conditions held.
    pub permitted_by: Vec<String>,
    /// Ids of the forbids whose conditions held.
    pub forbidden_by: Vec<String>,
    /// Ids of the rules whose evaluation failed; any failure denies.
    pub failed: Vec<String>,
}

/// Loaded, validated rules and the entities they are evaluated against.
pub struct Rules {
    schema: Schema,
    policies: PolicySet,
    /// The permits alone and the forbids alone, so that a dry run can name
    /// both the permits and the forbids that match one request: Cedar's own
    /// diagnostics name only the side that decided.
    permits: PolicySet,
    forbids: PolicySet,
    /// Rules the validator proved can never apply, with its reason.
    inert: Vec<(String, String)>,
    /// The entities for a token addressed to an agent: a scope is `in`
    /// every resource that lists it.
    entities: Entities,
    /// The entities for a token addressed to a resource that shares a scope:
    /// there the scope is `in` that resource alone, so that a rule written as
    /// `resource in Resource::"A"` grants nothing for another resource B that
    /// lists the same scope.
    by_target: HashMap<String, Entities>,
    authorizer: Authorizer,
    /// Permit rules annotated `@approval("…")`, by id, with the annotation's
    /// text: a scope they permit needs a person's approval.
    approvals: HashMap<String, String>,
    /// The verdicts given so far under these rules.
    memo: Memo,
}

impl Rules {
    /// Reads every `*.cedar` file in `dir`, validates the set against the
    /// schema in strict mode, and builds the entities from the inventory.
    pub fn load(dir: &Path, inventory: &Inventory) -> Result<Rules, PolicyError> {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA)
            .map_err(|error| PolicyError::Rules(format!("shipped schema: {error}")))?;
        let mut policies = PolicySet::new();
        let mut approvals = HashMap::new();
        // Each file with its text, and each rule's file, for the validator's
        // diagnostics.
        let mut sources = Vec::new();
        let mut source_of: HashMap<String, usize> = HashMap::new();
        for path in &cedar_files(dir)? {
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("rules.cedar");
            let (parsed, text) = parse_file(path)?;
            for (index, policy) in parsed.policies().enumerate() {
                let label = policy.annotation("id").map_or_else(|| index.to_string(), str::to_owned);
                let id = format!("{name}#{label}");
                source_of.insert(id.clone(), sources.len());
                if let Some(text) = policy.annotation("approval") {
                    // On a forbid it could only mean nothing: refuse it rather than ignore it.
                    if policy.effect() != Effect::Permit {
                        return Err(PolicyError::Parse {
                            path: path.clone(),
                            reason: format!("rule {id}: @approval belongs on a permit rule"),
                        });
                    }
                    approvals.insert(id.clone(), text.to_owned());
                }
                let renamed = policy.new_id(PolicyId::new(id));
                policies.add(renamed).map_err(|error| PolicyError::Rules(error.to_string()))?;
            }
            sources.push((path.clone(), text));
        }
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !validation.validation_passed() {
            let mut errors: Vec<String> = validation
                .validation_errors()
                .map(|error| {
                    match source_of.get(&error.policy_id().to_string()).and_then(|index| sources.get(*index)) {
                        Some((path, text)) => diagnostic::render(path, text, error),
                        None => format!("rule {}: {error}", error.policy_id()),
                    }
                })
                .collect();
            // Sorted: the validator's order is not stable from one run to the next.
            errors.sort();
            return Err(PolicyError::Cedar(format!("rules do not match the schema:\n{}", errors.join("\n"))));
        }
        let inert = validation
            .validation_warnings()
            .filter(|warning| {
                matches!(
                    warning,
                    ValidationWarning::ImpossiblePolicy(_) | ValidationWarning::InvalidActionApplication(_)
                )
            })
            .map(|warning| (warning.policy_id().to_string(), warning.to_string()))
            .collect();
        let (permits, forbids) = split_by_effect(&policies)?;
        let entities = build_entities(inventory, &schema, None)?;
        let mut by_target = HashMap::new();
        for resource in inventory.resources() {
            if resource.scopes.iter().any(|scope| inventory.scope_owners(scope).len() > 1) {
                by_target.insert(resource.uri.clone(), build_entities(inventory, &schema, Some(&resource.uri))?);
            }
        }
        let authorizer = Authorizer::new();
        let memo = Memo::default();
        Ok(Rules { schema, policies, permits, forbids, inert, entities, by_target, authorizer, approvals, memo })
    }

    /// Why each `*.cedar` file of `dir` that cannot be read or parsed fails:
    /// [`Rules::load`] stops at the first, `baton policy check` names them all.
    pub fn unparsable_files(dir: &Path) -> Vec<PolicyError> {
        match cedar_files(dir) {
            Ok(files) => files.iter().filter_map(|path| parse_file(path).err()).collect(),
            Err(error) => vec![error],
        }
    }

    /// Every rule, in the order of its file and place.
    pub(crate) fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.policies()
    }

    /// The rules the schema validator proved can never apply to any request
    /// (a condition that is always false, an action that never applies to
    /// the principal and resource named), each with the validator's reason.
    pub fn inert(&self) -> &[(String, String)] {
        &self.inert
    }

    /// The `@approval` text of the permit rule `rule` (`file.cedar#id`), if
    /// it carries one.
    pub fn approval(&self, rule: &str) -> Option<&str> {
        self.approvals.get(rule).map(String::as_str)
    }

    /// The number of rules loaded.
    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    /// Whether no rule is loaded (then nothing is ever granted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entities a request for `target` is evaluated against.
    fn entities_for(&self, target: &str) -> &Entities {
        self.by_target.get(target).unwrap_or(&self.entities)
    }

    /// Decides each scope for `agent` under `action` with `facts`. A scope is
    /// granted only where a permit matches and no forbid does; an evaluation
    /// error counts as a denial (fail closed). A request decided before
    /// under these rules is answered as it was then ([`Memo`]).
    pub fn decide<'s>(
        &self,
        agent: &str,
        action: Action,
        scopes: impl IntoIterator<Item = &'s Scope>,
        facts: &Facts<'_>,
    ) -> Result<Vec<(&'s Scope, Verdict)>, PolicyError> {
        let key = RequestKey::new(agent, action, facts);
        // Built for the first scope not remembered, and shared by the rest.
        let mut parts: Option<RequestParts> = None;
        let mut verdicts = Vec::new();
        for scope in scopes {
            let verdict = match self.memo.get(&key, scope) {
                Some(verdict) => verdict,
                None => {
                    let parts = match &mut parts {
                        Some(parts) => parts,
                        None => parts.insert(RequestParts::new(agent, action, facts)?),
                    };
                    // Not validated against the schema on every request:
                    // requests are built by `RequestParts` alone from fixed
                    // types (a test checks them against the schema), and a
                    // value of the wrong type would only fail a rule's
                    // evaluation, which denies.
                    let request = parts.request(scope, None)?;
                    let response =
                        self.authorizer.is_authorized(&request, &self.policies, self.entities_for(facts.target));
                    let failed = response.diagnostics().errors().next().is_some();
                    let verdict = Verdict {
                        allowed: response.decision() == Decision::Allow && !failed,
                        reasons: response.diagnostics().reason().map(|id| id.to_string()).collect(),
                    };
                    self.memo.put(&key, scope, &verdict);
                    verdict
                }
            };
            verdicts.push((scope, verdict));
        }
        Ok(verdicts)
    }
}

impl Rules {
    /// Like [`Rules::decide`], for a dry run: each scope's decision together
    /// with every permit and every forbid that matched and every rule that
    /// failed. The decision comes from the same evaluation `decide` makes.
    pub fn explain<'s>(
        &self,
        agent: &str,
        action: Action,
        scopes: impl IntoIterator<Item = &'s Scope>,
        facts: &Facts<'_>,
    ) -> Result<Vec<(&'s Scope, ScopeVerdict)>, PolicyError> {
        let entities = self.entities_for(facts.target);
        let mut verdicts = Vec::new();
        for (scope, request) in requests(agent, action, scopes, facts, Some(&self.schema))? {
            let whole = self.authorizer.is_authorized(&request, &self.policies, entities);
            let permits = self.authorizer.is_authorized(&request, &self.permits, entities);
            let forbids = self.authorizer.is_authorized(&request, &self.forbids, entities);
            let mut failed: Vec<String> =
                whole.diagnostics().errors().map(|error| policy_of(error).to_string()).collect();
            failed.sort();
            failed.dedup();
            let ids = |response: &cedar_policy::Response| {
                let mut ids: Vec<String> = response.diagnostics().reason().map(ToString::to_string).collect();
                ids.sort();
                ids
            };
            let verdict = ScopeVerdict {
                allowed: whole.decision() == Decision::Allow && failed.is_empty(),
                permitted_by: ids(&permits),
                forbidden_by: ids(&forbids),
                failed,
            };
            verdicts.push((scope, verdict));
        }
        Ok(verdicts)
    }
}

fn policy_of(error: &cedar_policy::AuthorizationError) -> &PolicyId {
    match error {
        cedar_policy::AuthorizationError::PolicyEvaluationError(error) => error.policy_id(),
    }
}

/// The permits and the forbids of `policies`, as two sets.
fn split_by_effect(policies: &PolicySet) -> Result<(PolicySet, PolicySet), PolicyError> {
    let mut permits = PolicySet::new();
    let mut forbids = PolicySet::new();
    for policy in policies.policies() {
        let side = match policy.effect() {
            Effect::Permit => &mut permits,
            Effect::Forbid => &mut forbids,
        };
        side.add(policy.clone()).map_err(|error| PolicyError::Rules(error.to_string()))?;
    }
    Ok((permits, forbids))
}

/// One Cedar request per scope: principal the agent, the action, resource
/// the scope, and the facts as context; checked against `schema` when one is
/// given.
fn requests<'s>(
    agent: &str,
    action: Action,
    scopes: impl IntoIterator<Item = &'s Scope>,
    facts: &Facts<'_>,
    schema: Option<&Schema>,
) -> Result<Vec<(&'s Scope, Request)>, PolicyError> {
    let parts = RequestParts::new(agent, action, facts)?;
    scopes.into_iter().map(|scope| Ok((scope, parts.request(scope, schema)?))).collect()
}

/// What the requests for every scope of one ask share.
struct RequestParts {
    principal: EntityUid,
    action: EntityUid,
    context: Context,
}

impl RequestParts {
    fn new(agent: &str, action: Action, facts: &Facts<'_>) -> Result<RequestParts, PolicyError> {
        Ok(RequestParts {
            principal: uid("Agent", agent)?,
            action: uid("Action", action.name())?,
            context: context(facts)?,
        })
    }

    /// The request for `scope`; checked against `schema` when one is given.
    fn request(&self, scope: &Scope, schema: Option<&Schema>) -> Result<Request, PolicyError> {
        Request::new(
            self.principal.clone(),
            self.action.clone(),
            uid("Scope", scope.as_str())?,
            self.context.clone(),
            schema,
        )
        .map_err(|error| PolicyError::Rules(format!("request does not match the schema: {error}")))
    }
}

fn context(facts: &Facts<'_>) -> Result<Context, PolicyError> {
    let strings = |items: &[&str]| {
        RestrictedExpression::new_set(items.iter().map(|item| RestrictedExpression::new_string((*item).to_owned())))
    };
    Context::from_pairs([
        ("subject".to_owned(), RestrictedExpression::new_string(facts.subject.to_owned())),
        ("target".to_owned(), RestrictedExpression::new_string(facts.target.to_owned())),
        ("target_is_agent".to_owned(), RestrictedExpression::new_bool(facts.target_is_agent)),
        ("depth".to_owned(), RestrictedExpression::new_long(i64::from(facts.depth))),
        ("chain".to_owned(), strings(&facts.chain)),
        ("parent_scopes".to_owned(), strings(&facts.parent_scopes)),
        ("dpop_bound".to_owned(), RestrictedExpression::new_bool(facts.dpop_bound)),
        ("chain_dpop_bound".to_owned(), RestrictedExpression::new_bool(facts.chain_dpop_bound)),
        ("ttl".to_owned(), RestrictedExpression::new_long(facts.ttl)),
    ])
    .map_err(|error| PolicyError::Rules(format!("context: {error}")))
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let kind = EntityTypeName::from_str(kind).map_err(|error| PolicyError::Rules(error.to_string()))?;
    let id = EntityId::from_str(id).map_err(|error| PolicyError::Rules(format!("{error:?}")))?;
    Ok(EntityUid::from_type_name_and_id(kind, id))
}

/// The inventory as Cedar entities. A scope is `in` every resource that
/// lists it, or, for a request addressed to the resource `target`, in that
/// resource alone when it lists the scope.
fn build_entities(inventory: &Inventory, schema: &Schema, target: Option<&str>) -> Result<Entities, PolicyError> {
    let build = |error: cedar_policy::EntityAttrEvaluationError| PolicyError::Rules(error.to_string());
    let mut all = Vec::new();
    let mut groups = HashSet::new();
    for agent in inventory.agents() {
        let mut parents = HashSet::new();
        for group in &agent.groups {
            parents.insert(uid("Group", group)?);
            groups.insert(group.clone());
        }
        let attrs = HashMap::from([
            ("owner".to_owned(), RestrictedExpression::new_string(agent.owner.clone())),
            ("purpose".to_owned(), RestrictedExpression::new_string(agent.purpose.clone())),
        ]);
        all.push(Entity::new(uid("Agent", &agent.id)?, attrs, parents).map_err(build)?);
    }
    for group in groups {
        all.push(Entity::new_no_attrs(uid("Group", &group)?, HashSet::new()));
    }
    for resource in inventory.resources() {
        let resource_uid = uid("Resource", &resource.uri)?;
        let attrs = HashMap::from([("name".to_owned(), RestrictedExpression::new_string(resource.name.clone()))]);
        all.push(Entity::new(resource_uid, attrs, HashSet::new()).map_err(build)?);
    }
    for scope in inventory.all_scopes().iter() {
        let all_owners = inventory.scope_owners(scope);
        let owners = match target.filter(|target| all_owners.iter().any(|owner| owner == target)) {
            Some(target) => vec![uid("Resource", target)?].into_iter().collect(),
            None => all_owners.iter().map(|uri| uid("Resource", uri)).collect::<Result<_, _>>()?,
        };
        all.push(Entity::new_no_attrs(uid("Scope", scope.as_str())?, owners));
    }
    Entities::from_entities(all, Some(schema)).map_err(|error| PolicyError::Rules(format!("entities: {error}")))
}

/// The `*.cedar` files of `dir`, in name order.
fn cedar_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| PolicyError::Read { path: dir.to_path_buf(), source })?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().and_then(|ext| ext.to_str()) == Some("cedar"))
        .collect();
    files.sort();
    Ok(files)
}

/// One rules file, read and parsed (not yet validated), with its text for
/// the diagnostics of its rules.
fn parse_file(path: &Path) -> Result<(PolicySet, String), PolicyError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: path.to_path_buf(), source })?;
    match PolicySet::from_str(&text) {
        Ok(policies) => Ok((policies, text)),
        Err(errors) => {
            let rendered: Vec<String> = errors.iter().map(|error| diagnostic::render(path, &text, error)).collect();
            Err(PolicyError::Cedar(rendered.join("\n")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    use crate::claims::ScopeSet;
    use crate::clock::UnixTime;
    use crate::ids::{AgentId, Audience, Subject};
    use crate::policy::{Ask, Lifetimes, Policy, Refusal};

    const AGENTS: &str = "[[agents]]\nid='a'\nowner='o'\npurpose='p'\nexpires=2030-01-01\n\
        secret_sha256='0000000000000000000000000000000000000000000000000000000000000000'\n";
    const RESOURCES: &str = "[[resources]]\nuri='https://api.example'\nname='API'\nscopes=['read','write']\nttl=60\n";

    fn load(rules: &str) -> Result<Policy, PolicyError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agents.toml"), AGENTS).unwrap();
        std::fs::write(dir.path().join("resources.toml"), RESOURCES).unwrap();
        std::fs::write(dir.path().join("rules.cedar"), rules).unwrap();
        Policy::load(dir.path(), Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 })
    }

    static AGENT: LazyLock<AgentId> = LazyLock::new(|| AgentId::new("a"));
    static SUBJECT: LazyLock<Subject> = LazyLock::new(|| Subject::of_agent(&AGENT));

    fn ask(scope: Option<&ScopeSet>) -> Ask<'_> {
        Ask {
            action: Action::Issue,
            agent: &AGENT,
            subject: &SUBJECT,
            target: Some(Audience::new("https://api.example")),
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

    #[test]
    fn rules_can_require_a_bound_token_or_a_bound_chain() {
        let policy = load(
            "permit (principal, action, resource);\n\
             forbid (principal, action, resource == Scope::\"write\") unless { context.chain_dpop_bound };\n\
             forbid (principal, action, resource == Scope::\"read\") unless { context.dpop_bound };",
        )
        .unwrap();
        assert_eq!(policy.decide(&ask(None)).unwrap(), Err(Refusal::TargetNotPermitted));
        let bound = Ask { dpop_bound: true, ..ask(None) };
        assert_eq!(policy.decide(&bound).unwrap().unwrap().scope(), &ScopeSet::parse("read").unwrap());
        let whole_chain = Ask { dpop_bound: true, chain_dpop_bound: true, ..ask(None) };
        assert_eq!(policy.decide(&whole_chain).unwrap().unwrap().scope(), &ScopeSet::parse("read write").unwrap());
    }

    /// DESIGN.md §2.1, §2.6: a rule written for one API's scopes grants them
    /// for that API only, though another resource lists the same scope.
    #[test]
    fn a_rule_on_one_resource_grants_nothing_for_another_sharing_its_scope() {
        let dir = tempfile::tempdir().unwrap();
        let shared =
            format!("{RESOURCES}[[resources]]\nuri='https://mcp.example/mcp'\nname='MCP'\nscopes=['read']\nttl=60\n");
        std::fs::write(dir.path().join("agents.toml"), AGENTS).unwrap();
        std::fs::write(dir.path().join("resources.toml"), shared).unwrap();
        std::fs::write(
            dir.path().join("rules.cedar"),
            "permit (principal, action, resource in Resource::\"https://api.example\");",
        )
        .unwrap();
        let policy = Policy::load(dir.path(), Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }).unwrap();
        let read = ScopeSet::parse("read").unwrap();
        assert_eq!(policy.decide(&ask(Some(&read))).unwrap().unwrap().scope(), &read);
        let elsewhere = Ask { target: Some(Audience::new("https://mcp.example/mcp")), ..ask(Some(&read)) };
        let refused = policy.decide(&elsewhere).unwrap();
        assert!(matches!(refused, Err(Refusal::NotPermitted(_) | Refusal::TargetNotPermitted)), "{refused:?}");
    }

    #[test]
    fn rules_that_do_not_match_the_schema_do_not_load() {
        let unknown_attribute = "permit (principal, action, resource) when { principal.clearance == 3 };";
        assert!(matches!(load(unknown_attribute), Err(PolicyError::Cedar(_))));
        assert!(load("permit (principal, action == Action::\"delete\", resource);").is_err());
        assert!(matches!(load("permit (principal"), Err(PolicyError::Cedar(_))));
    }

    #[test]
    fn no_rules_deny_everything() {
        let policy = load("").unwrap();
        assert!(policy.rules().is_empty());
        assert_eq!(policy.decide(&ask(None)).unwrap(), Err(Refusal::TargetNotPermitted));
    }

    #[test]
    fn a_scope_needs_a_permit_and_no_forbid() {
        let policy = load(
            "permit (principal, action, resource);\n\
             forbid (principal, action, resource == Scope::\"write\") when { context.ttl > 30 };",
        )
        .unwrap();
        let grant = policy.decide(&ask(None)).unwrap().unwrap();
        assert_eq!(grant.scope(), &ScopeSet::parse("read").unwrap());
        assert_eq!(grant.expires_at(), UnixTime(1_800_000_060));
        let write = ScopeSet::parse("write").unwrap();
        assert!(matches!(policy.decide(&ask(Some(&write))).unwrap(), Err(Refusal::NotPermitted(_))));
    }

    #[test]
    fn a_rule_that_errors_denies() {
        // The multiplication overflows at evaluation; Cedar would skip the
        // erroring forbid, Baton denies instead (fail closed).
        let policy = load(
            "permit (principal, action, resource);\n\
             forbid (principal, action, resource) when { context.ttl * 9223372036854775807 > 0 };",
        )
        .unwrap();
        assert_eq!(policy.decide(&ask(None)).unwrap(), Err(Refusal::TargetNotPermitted));
    }

    /// A request decided again under the same rules gets the same answer,
    /// now from the memo: grants with their reasons, refusals, and denials
    /// by a rule that failed.
    #[test]
    fn a_request_decided_again_gets_the_same_answer() {
        let policy = load(
            "@id(\"reads\") permit (principal, action, resource == Scope::\"read\");\n\
             @id(\"broken\") forbid (principal, action, resource == Scope::\"write\") \
             when { context.ttl * 9223372036854775807 > 0 };",
        )
        .unwrap();
        let read = ScopeSet::parse("read").unwrap();
        let write = ScopeSet::parse("write").unwrap();
        let first = (policy.decide(&ask(Some(&read))), policy.decide(&ask(Some(&write))), policy.decide(&ask(None)));
        let remembered = policy.rules().memo.len();
        assert!(remembered >= 2, "{remembered}");
        let again = (policy.decide(&ask(Some(&read))), policy.decide(&ask(Some(&write))), policy.decide(&ask(None)));
        assert_eq!(policy.rules().memo.len(), remembered, "nothing new to remember");
        assert_eq!(format!("{first:?}"), format!("{again:?}"));
        assert_eq!(again.0.unwrap().unwrap().reasons(), ["rules.cedar#reads".to_owned()]);
        assert!(matches!(again.1.unwrap(), Err(Refusal::NotPermitted(_))));
    }

    /// Scopes decided before and scopes never decided, asked together, each
    /// get their own verdict, in the order asked.
    #[test]
    fn remembered_and_new_verdicts_keep_their_scopes() {
        let policy = load("@id(\"reads\") permit (principal, action, resource == Scope::\"read\");").unwrap();
        let rules = policy.rules();
        let facts = Facts {
            subject: "alice",
            target: "https://api.example",
            target_is_agent: false,
            depth: 1,
            chain: vec!["b"],
            parent_scopes: vec!["read", "write"],
            dpop_bound: false,
            chain_dpop_bound: false,
            ttl: 60,
        };
        let (read, write): (Scope, Scope) = ("read".parse().unwrap(), "write".parse().unwrap());
        let first = rules.decide("a", Action::Exchange, [&read], &facts).unwrap();
        assert_eq!(first, [(&read, Verdict { allowed: true, reasons: vec!["rules.cedar#reads".into()] })]);
        for asked in [[&write, &read], [&read, &write]] {
            let verdicts = rules.decide("a", Action::Exchange, asked, &facts).unwrap();
            let named: Vec<(&str, bool)> =
                verdicts.iter().map(|(scope, verdict)| (scope.as_str(), verdict.allowed)).collect();
            let expected: Vec<(&str, bool)> =
                asked.iter().map(|scope| (scope.as_str(), scope.as_str() == "read")).collect();
            assert_eq!(named, expected);
        }
    }

    #[test]
    fn the_request_decide_builds_conforms_to_the_schema() {
        // `decide` skips per-request validation; this is the check it skips.
        let policy = load("permit (principal, action, resource);").unwrap();
        let rules = policy.rules();
        let facts = Facts {
            subject: "alice",
            target: "https://api.example",
            target_is_agent: false,
            depth: 2,
            chain: vec!["b", "c"],
            parent_scopes: vec!["read"],
            dpop_bound: true,
            chain_dpop_bound: false,
            ttl: 60,
        };
        let scopes = ScopeSet::parse("read write").unwrap();
        for action in [Action::Issue, Action::Exchange] {
            let checked = requests("a", action, scopes.iter(), &facts, Some(&rules.schema));
            assert_eq!(checked.map(|requests| requests.len()).map_err(|error| error.to_string()), Ok(2), "{action:?}");
        }
    }

    #[test]
    fn asked_scopes_tell_a_forbidden_target_from_a_forbidden_scope() {
        let policy = load("permit (principal, action, resource == Scope::\"read\");").unwrap();
        let read = ScopeSet::parse("read").unwrap();
        let write = ScopeSet::parse("write").unwrap();
        let both = ScopeSet::parse("read write").unwrap();
        assert_eq!(policy.decide(&ask(Some(&read))).unwrap().unwrap().scope(), &read);
        assert_eq!(
            policy.decide(&ask(Some(&write))).unwrap(),
            Err(Refusal::NotPermitted(write.iter().next().unwrap().clone()))
        );
        assert!(matches!(policy.decide(&ask(Some(&both))).unwrap(), Err(Refusal::NotPermitted(_))));
        let nothing = load("").unwrap();
        assert_eq!(nothing.decide(&ask(Some(&read))).unwrap(), Err(Refusal::TargetNotPermitted));
    }

    #[test]
    fn the_evidence_names_the_rules_behind_the_granted_scopes_only() {
        let policy = load(
            "@id(\"reads\") permit (principal, action, resource == Scope::\"read\");\n\
             @id(\"writes\") permit (principal, action, resource == Scope::\"write\");",
        )
        .unwrap();
        let read = ScopeSet::parse("read").unwrap();
        let grant = policy.decide(&ask(Some(&read))).unwrap().unwrap();
        assert_eq!(grant.reasons(), ["rules.cedar#reads".to_owned()]);
        let all = policy.decide(&ask(None)).unwrap().unwrap();
        assert_eq!(all.reasons(), ["rules.cedar#reads".to_owned(), "rules.cedar#writes".to_owned()]);
    }
}
