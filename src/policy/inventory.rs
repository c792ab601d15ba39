//! The inventory: registered agents (`agents.toml`) and resources
//! (`resources.toml`). Unknown keys are errors that name the key.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use josekit::jwk::Jwk;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::PolicyError;
use crate::claims::{Scope, ScopeSet};
use crate::clock::UnixTime;
use crate::keys::VerifyingKey;

/// A registered agent (an OAuth client).
pub struct Agent {
    /// Client id.
    pub id: String,
    /// Who answers for it.
    pub owner: String,
    /// What it is for.
    pub purpose: String,
    /// The last day (UTC) it may act; after it the agent is deprovisioned.
    pub expires: time::Date,
    /// Groups, for policy.
    pub groups: Vec<String>,
    /// Lifetime of tokens addressed to this agent, in seconds.
    pub token_ttl: Option<i64>,
    /// The target used when a request names none.
    pub default_audience: Option<String>,
    /// How it authenticates.
    pub credentials: Credentials,
    /// Whether it may act again in a chain it already acted in
    /// (`may_act_again`, off by default: DESIGN.md §2.2, no cycles). Tokens
    /// it obtains that way are marked, so verifiers see the repetition was
    /// allowed.
    pub may_act_again: bool,
}

impl Agent {
    /// Whether the agent is within its registered life at `now`.
    pub fn is_active(&self, now: UnixTime) -> bool {
        now.date().is_some_and(|today| today <= self.expires)
    }
}

/// How an agent proves who it is.
pub enum Credentials {
    /// `client_secret_basic` / `client_secret_post`: the SHA-256 of a generated,
    /// high-entropy secret.
    Secret(SecretHash),
    /// `private_key_jwt` (RFC 7523): the agent's public keys.
    Keys(Vec<VerifyingKey>),
    /// No way to authenticate.
    None,
}

/// The SHA-256 digest of a client secret. Only the digest is ever stored.
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Whether `presented` hashes to this digest, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        let digest = ring::digest::digest(&ring::digest::SHA256, presented.as_bytes());
        bool::from(digest.as_ref().ct_eq(&self.0))
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<SecretHash> {
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            let pair = text.get(index * 2..index * 2 + 2)?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(SecretHash(bytes))
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(***)")
    }
}

/// A registered API.
pub struct Resource {
    /// Its URI: the `resource` / `audience` value naming it.
    pub uri: String,
    /// Human name.
    pub name: String,
    /// The scopes it defines.
    pub scopes: ScopeSet,
    /// Lifetime of tokens addressed to it, in seconds.
    pub token_ttl: i64,
    /// Its scopes that a person must approve before a token carrying them is
    /// issued for this API.
    pub approval: ScopeSet,
    /// How the API authenticates to introspect tokens addressed to it, if it does.
    pub introspection: Option<(String, Credentials)>,
}

/// A party that authenticates to Baton.
pub enum Client<'a> {
    /// An agent: it obtains and exchanges tokens.
    Agent(&'a Agent),
    /// An API: it introspects tokens addressed to it.
    Resource(&'a Resource),
}

impl Client<'_> {
    /// How it authenticates.
    pub fn credentials(&self) -> &Credentials {
        match self {
            Client::Agent(agent) => &agent.credentials,
            Client::Resource(resource) => match &resource.introspection {
                Some((_, credentials)) => credentials,
                // Unreachable: only resources with credentials are clients.
                None => &Credentials::None,
            },
        }
    }

    /// Whether it may authenticate at `now`.
    pub fn is_active(&self, now: UnixTime) -> bool {
        match self {
            Client::Agent(agent) => agent.is_active(now),
            Client::Resource(_) => true,
        }
    }
}

/// What a request may name as its target.
pub enum Target<'a> {
    /// A registered API.
    Resource(&'a Resource),
    /// A registered agent (the next hop).
    Agent(&'a Agent),
}

/// Agents and resources, indexed.
///
/// Lookups take a name as text, whatever its kind: the same name may come
/// from a typed id ([`crate::ids::AgentId`] and the others read as `&str`),
/// a request or the store, and policy rules name principals by text too.
pub struct Inventory {
    agents: BTreeMap<String, Agent>,
    resources: BTreeMap<String, Resource>,
    /// Each scope's resources: usually one, several when APIs share a
    /// vocabulary (an API and the MCP server in front of it).
    scope_owners: HashMap<Scope, Vec<String>>,
    /// Introspecting APIs by client id, to their URI.
    introspectors: HashMap<String, String>,
}

impl Inventory {
    /// The agent or introspecting API with this client id.
    pub fn client(&self, id: &str) -> Option<Client<'_>> {
        match self.introspectors.get(id) {
            Some(uri) => self.resources.get(uri).map(Client::Resource),
            None => self.agents.get(id).map(Client::Agent),
        }
    }

    /// The agent with this id.
    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// Every agent.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    /// Every resource.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    /// The registered target named `name`: a resource URI or an agent id.
    pub fn target(&self, name: &str) -> Option<Target<'_>> {
        self.resources.get(name).map(Target::Resource).or_else(|| self.agents.get(name).map(Target::Agent))
    }

    /// The URIs of the resources that define `scope`: empty when none does.
    pub fn scope_owners(&self, scope: &Scope) -> &[String] {
        self.scope_owners.get(scope).map_or(&[], Vec::as_slice)
    }

    /// Whether a registered resource defines `scope`.
    pub fn is_registered_scope(&self, scope: &Scope) -> bool {
        self.scope_owners.contains_key(scope)
    }

    /// Every registered scope.
    pub fn all_scopes(&self) -> ScopeSet {
        self.scope_owners.keys().cloned().collect()
    }

    /// Reads `agents.toml` and `resources.toml` from `dir`.
    pub fn load(dir: &Path) -> Result<Inventory, PolicyError> {
        let agents_file: AgentsFile = read_toml(&dir.join("agents.toml"))?;
        let resources_file: ResourcesFile = read_toml(&dir.join("resources.toml"))?;
        Inventory::build(agents_file, resources_file)
    }

    fn build(agents_file: AgentsFile, resources_file: ResourcesFile) -> Result<Inventory, PolicyError> {
        let mut resources = BTreeMap::new();
        let mut scope_owners: HashMap<Scope, Vec<String>> = HashMap::new();
        let mut introspectors = HashMap::new();
        for entry in resources_file.resources {
            let problem = |reason: String| PolicyError::Inventory { file: "resources.toml", reason };
            if !(entry.uri.starts_with("https://") || entry.uri.starts_with("http://")) {
                return Err(problem(format!("resource `{}`: uri must be an http(s) URI", entry.uri)));
            }
            if entry.ttl <= 0 {
                return Err(problem(format!("resource `{}`: ttl must be positive", entry.uri)));
            }
            let mut scopes = Vec::new();
            for text in &entry.scopes {
                let scope: Scope = text
                    .parse()
                    .map_err(|_| problem(format!("resource `{}`: `{text}` is not a valid scope", entry.uri)))?;
                let owners = scope_owners.entry(scope.clone()).or_default();
                if owners.contains(&entry.uri) {
                    return Err(problem(format!("resource `{}`: scope `{text}` is listed twice", entry.uri)));
                }
                owners.push(entry.uri.clone());
                scopes.push(scope);
            }
            let scopes: ScopeSet = scopes.into_iter().collect();
            let mut approval = Vec::new();
            for text in &entry.approval {
                match text.parse::<Scope>() {
                    Ok(scope) if scopes.contains(&scope) => approval.push(scope),
                    _ => {
                        return Err(problem(format!(
                            "resource `{}`: approval names `{text}`, which is not one of its scopes",
                            entry.uri
                        )))
                    }
                }
            }
            let introspection =
                match (entry.client_id, credentials(entry.secret_sha256.as_deref(), entry.jwks.as_ref())) {
                    (None, None) if entry.secret_sha256.is_none() && entry.jwks.is_none() => None,
                    (Some(client_id), Some(Ok(credentials))) => {
                        if introspectors.insert(client_id.clone(), entry.uri.clone()).is_some() {
                            return Err(problem(format!("client_id `{client_id}` is used twice")));
                        }
                        Some((client_id, credentials))
                    }
                    (_, Some(Err(reason))) => return Err(problem(format!("resource `{}`: {reason}", entry.uri))),
                    _ => {
                        return Err(problem(format!(
                            "resource `{}`: an introspecting API needs `client_id` and exactly one of \
                         `secret_sha256` and `jwks`",
                            entry.uri
                        )))
                    }
                };
            let resource = Resource {
                uri: entry.uri.clone(),
                name: entry.name,
                scopes,
                token_ttl: entry.ttl,
                approval: approval.into_iter().collect(),
                introspection,
            };
            if resources.insert(entry.uri.clone(), resource).is_some() {
                return Err(problem(format!("resource `{}` is registered twice", entry.uri)));
            }
        }
        let mut agents = BTreeMap::new();
        for entry in agents_file.agents {
            let agent = entry.into_agent()?;
            if resources.contains_key(&agent.id) {
                return Err(PolicyError::Inventory {
                    file: "agents.toml",
                    reason: format!("agent `{}` has the same name as a resource", agent.id),
                });
            }
            if agents.contains_key(&agent.id) || introspectors.contains_key(&agent.id) {
                return Err(PolicyError::Inventory {
                    file: "agents.toml",
                    reason: format!("agent `{}` is registered twice", agent.id),
                });
            }
            agents.insert(agent.id.clone(), agent);
        }
        for agent in agents.values() {
            if let Some(target) = &agent.default_audience {
                if !resources.contains_key(target) && !agents.contains_key(target) {
                    return Err(PolicyError::Inventory {
                        file: "agents.toml",
                        reason: format!(
                            "agent `{}`: default_audience `{target}` is not a registered resource or agent",
                            agent.id
                        ),
                    });
                }
            }
        }
        Ok(Inventory { agents, resources, scope_owners, introspectors })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    #[serde(default)]
    agents: Vec<AgentEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentEntry {
    id: String,
    owner: String,
    purpose: String,
    expires: toml::value::Datetime,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    token_ttl: Option<i64>,
    #[serde(default)]
    default_audience: Option<String>,
    #[serde(default)]
    secret_sha256: Option<String>,
    #[serde(default)]
    jwks: Option<serde_json::Value>,
    #[serde(default)]
    may_act_again: bool,
}

impl AgentEntry {
    fn into_agent(self) -> Result<Agent, PolicyError> {
        let problem = |reason: String| PolicyError::Inventory {
            file: "agents.toml",
            reason: format!("agent `{}`: {reason}", self.id),
        };
        if self.id.is_empty() || !self.id.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte)) {
            return Err(problem("id must be non-empty and use only letters, digits, `-`, `_` and `.`".into()));
        }
        for (name, value) in [("owner", &self.owner), ("purpose", &self.purpose)] {
            if value.trim().is_empty() {
                return Err(problem(format!("`{name}` must not be empty")));
            }
        }
        let expires = match (self.expires.date, self.expires.time) {
            (Some(date), None) => time::Date::from_calendar_date(
                i32::from(date.year),
                time::Month::try_from(date.month).map_err(|_| problem("`expires` is not a valid date".into()))?,
                date.day,
            )
            .map_err(|_| problem("`expires` is not a valid date".into()))?,
            _ => return Err(problem("`expires` must be a date such as 2027-06-30".into())),
        };
        if self.token_ttl.is_some_and(|ttl| ttl <= 0) {
            return Err(problem("`token_ttl` must be positive".into()));
        }
        let credentials = credentials(self.secret_sha256.as_deref(), self.jwks.as_ref())
            .ok_or_else(|| problem("give exactly one of `secret_sha256` and `jwks`".into()))?
            .map_err(problem)?;
        Ok(Agent {
            id: self.id,
            owner: self.owner,
            purpose: self.purpose,
            expires,
            groups: self.groups,
            token_ttl: self.token_ttl,
            default_audience: self.default_audience,
            credentials,
            may_act_again: self.may_act_again,
        })
    }
}

/// Credentials from `secret_sha256` or `jwks`; `None` unless exactly one is given.
fn credentials(secret_sha256: Option<&str>, jwks: Option<&serde_json::Value>) -> Option<Result<Credentials, String>> {
    match (secret_sha256, jwks) {
        (Some(hex), None) => Some(
            SecretHash::from_hex(hex)
                .map(Credentials::Secret)
                .ok_or_else(|| "`secret_sha256` must be 64 hex digits".into()),
        ),
        (None, Some(jwks)) => Some(public_keys(jwks).map(Credentials::Keys)),
        _ => None,
    }
}

fn public_keys(jwks: &serde_json::Value) -> Result<Vec<VerifyingKey>, String> {
    let keys = jwks
        .get("keys")
        .and_then(|keys| keys.as_array())
        .filter(|keys| !keys.is_empty())
        .ok_or("`jwks` must have a non-empty `keys` array")?;
    let mut verifying = Vec::new();
    for key in keys {
        let map = key.as_object().cloned().ok_or("a JWK must be a table")?;
        let jwk = Jwk::from_map(map).map_err(|error| format!("bad JWK: {error}"))?;
        if jwk.parameter("d").is_some() {
            return Err("`jwks` must hold public keys only".into());
        }
        verifying.push(VerifyingKey::from_jwk(&jwk).map_err(|error| error.to_string())?);
    }
    Ok(verifying)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourcesFile {
    #[serde(default)]
    resources: Vec<ResourceEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceEntry {
    uri: String,
    name: String,
    scopes: Vec<String>,
    ttl: i64,
    /// Scopes that need a person's approval when issued for this API.
    #[serde(default)]
    approval: Vec<String>,
    /// The client id the API uses at the introspection endpoint, if it does.
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    secret_sha256: Option<String>,
    #[serde(default)]
    jwks: Option<serde_json::Value>,
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PolicyError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text).map_err(|error| PolicyError::Parse { path: path.to_path_buf(), reason: error.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(agents: &str, resources: &str) -> Result<Inventory, PolicyError> {
        Inventory::build(
            toml::from_str(agents)
                .map_err(|e| PolicyError::Parse { path: "agents.toml".into(), reason: e.to_string() })?,
            toml::from_str(resources).unwrap(),
        )
    }

    const RESOURCES: &str = r#"
        [[resources]]
        uri = "https://api.example"
        name = "API"
        scopes = ["a.read"]
        ttl = 60
    "#;

    #[test]
    fn unknown_keys_are_named() {
        let error =
            parse("[[agents]]\nid='x'\nowner='o'\npurpose='p'\nexpires=2030-01-01\nsecret_sha257='00'", RESOURCES)
                .err()
                .unwrap();
        assert!(error.to_string().contains("secret_sha257"), "{error}");
    }

    #[test]
    fn secrets_compare_by_digest() {
        let digest = ring::digest::digest(&ring::digest::SHA256, b"s3cret");
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let hash = SecretHash::from_hex(&hex).unwrap();
        assert!(hash.matches("s3cret"));
        assert!(!hash.matches("s3cret "));
        assert_eq!(format!("{hash:?}"), "SecretHash(***)");
    }

    #[test]
    fn an_agent_is_active_through_its_expiry_date() {
        let inventory = parse(
            "[[agents]]\nid='x'\nowner='o'\npurpose='p'\nexpires=1970-01-02\nsecret_sha256='0000000000000000000000000000000000000000000000000000000000000000'",
            RESOURCES,
        )
        .unwrap();
        let agent = inventory.agent("x").unwrap();
        assert!(agent.is_active(UnixTime(86_400 + 86_399)));
        assert!(!agent.is_active(UnixTime(2 * 86_400)));
    }

    #[test]
    fn acting_again_is_off_unless_an_agent_is_registered_for_it() {
        let entry = |extra: &str| {
            format!(
                "[[agents]]\nid='x'\nowner='o'\npurpose='p'\nexpires=2030-01-01\n\
                 secret_sha256='0000000000000000000000000000000000000000000000000000000000000000'\n{extra}"
            )
        };
        assert!(!parse(&entry(""), RESOURCES).unwrap().agent("x").unwrap().may_act_again);
        assert!(parse(&entry("may_act_again = true"), RESOURCES).unwrap().agent("x").unwrap().may_act_again);
        let error = parse(&entry("may_act_again = 'yes'"), RESOURCES).err().unwrap().to_string();
        assert!(error.contains("may_act_again") || error.contains("bool"), "{error}");
    }

    #[test]
    fn approval_names_scopes_of_its_own_resource() {
        let marked = RESOURCES.replace("ttl = 60", "ttl = 60\napproval = [\"a.read\"]");
        let inventory = parse("", &marked).unwrap();
        let resource = inventory.resources().next().unwrap();
        assert_eq!(resource.approval, ScopeSet::parse("a.read").unwrap());
        let foreign = RESOURCES.replace("ttl = 60", "ttl = 60\napproval = [\"b.write\"]");
        let error = parse("", &foreign).err().unwrap().to_string();
        assert!(error.contains("b.write"), "{error}");
    }

    #[test]
    fn a_scope_may_be_shared_by_resources_but_listed_once_by_each() {
        let shared =
            format!("{RESOURCES}\n[[resources]]\nuri='https://other.example'\nname='B'\nscopes=['a.read']\nttl=60");
        let inventory = parse("", &shared).unwrap();
        let scope: Scope = "a.read".parse().unwrap();
        let mut owners = inventory.scope_owners(&scope).to_vec();
        owners.sort();
        assert_eq!(owners.len(), 2, "{owners:?}");
        assert!(owners.contains(&"https://other.example".to_owned()), "{owners:?}");
        let twice = RESOURCES.replace("scopes = [", "scopes = [\"a.read\", ");
        assert!(parse("", &twice).err().unwrap().to_string().contains("listed twice"));
    }
}
