//! Configuration: an optional `baton.toml`, every key overridable by a
//! `BATON_<KEY>` variable, safe local defaults for everything. Unknown keys,
//! in the file or as variables, are refused by name (DESIGN.md §10).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::abuse::{RefusalSettings, ThrottleSettings};
use crate::approvals::Approver;
use crate::ids::Issuer;
use crate::keys::Algorithm;
use crate::store::redis_target::{RedisTls, RedisUrl, Topology, MAX_REPLICA_ACKS};

/// The variable that names the config file; not itself a config key.
pub const CONFIG_VARIABLE: &str = "BATON_CONFIG";

/// The variable holding the admin token for the command line's admin calls;
/// the broker itself only ever sees its hash (`admin_token_sha256`).
pub const ADMIN_TOKEN_VARIABLE: &str = "BATON_ADMIN_TOKEN";

/// Appended to a secret's variable, names a variable whose value is the path
/// of a file holding the secret (`BATON_REDIS_URL_FILE`): the way container
/// secrets are mounted, and the secret stays out of the process list and
/// the environment other tools dump.
pub const FILE_SUFFIX: &str = "_FILE";

/// The config keys that are secrets, and so also read from
/// `BATON_<KEY>_FILE`: the admin token's hash, the Redis URL, which may
/// carry a password, and the console's client secret at its provider.
const SECRET_KEYS: &[&str] = &["admin_token_sha256", "redis_url", "console_client_secret"];

/// A secret from the environment: the value of `variable`, or the content of
/// the file that `<variable>_FILE` names, without its trailing newline.
/// `lookup` reads a variable. Both set is an error naming both; neither is
/// `None`.
pub fn secret_variable(variable: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Option<String>, ConfigError> {
    let file_variable = format!("{variable}{FILE_SUFFIX}");
    match (lookup(variable), lookup(&file_variable)) {
        (Some(_), Some(_)) => Err(ConfigError::SecretTwice { variable: variable.to_owned(), file_variable }),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let mut value = std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                variable: file_variable,
                path,
                source,
            })?;
            // Trimmed in place, so that no copy of the secret is left behind.
            let kept = value.trim_end_matches(['\n', '\r']).len();
            value.truncate(kept);
            Ok(Some(value))
        }
        (None, None) => Ok(None),
    }
}

/// The default `clock_leeway_seconds`: enough for clocks kept by NTP.
pub const DEFAULT_CLOCK_LEEWAY: i64 = 30;

/// The largest `clock_leeway_seconds`: revocations are kept 300 seconds
/// past the end of the tokens they cover, so no larger leeway may accept a
/// token whose revocation was already swept.
pub const MAX_CLOCK_LEEWAY: i64 = 300;

/// Where to listen: `host:port`, the host an IP address (IPv6 in brackets)
/// or a name resolved when the broker binds (`localhost:8080`). Checked for
/// its shape when the config loads; [`crate::app::serve`] binds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen(String);

impl Listen {
    /// `text` as a listen address, if it is `host:port`.
    pub fn parse(text: &str) -> Result<Listen, ConfigError> {
        let invalid = |problem: &str| ConfigError::Invalid { key: "listen", problem: format!("`{text}`: {problem}") };
        if text.parse::<SocketAddr>().is_ok() {
            return Ok(Listen(text.to_owned()));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| invalid("must be host:port"))?;
        port.parse::<u16>().map_err(|_| invalid("the port must be a number from 0 to 65535"))?;
        // A name as DNS writes it (RFC 1123 labels): nothing that is a URL,
        // a path or an unbracketed IPv6 address.
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
            return Err(invalid("the host must be an IP address (IPv6 in brackets) or a host name"));
        }
        Ok(Listen(text.to_owned()))
    }

    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on, resolved when the broker binds it.
    pub listen: Listen,
    /// Issuer identifier (`iss`), also the base of every endpoint URL.
    pub issuer: Issuer,
    /// Key folder.
    pub keys_dir: PathBuf,
    /// Policy folder.
    pub policies_dir: PathBuf,
    /// Data folder.
    pub data_dir: PathBuf,
    /// Algorithm for newly generated keys.
    pub signing_algorithm: Algorithm,
    /// Largest delegation depth (RFC-open point, DESIGN.md §10).
    pub max_depth: u32,
    /// No token lives longer than this, in seconds.
    pub max_token_ttl: i64,
    /// Lifetime of tokens addressed to an agent that sets none, in seconds.
    pub agent_token_ttl: i64,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest token accepted in a request, in bytes.
    pub max_token_bytes: usize,
    /// Redis for shared state: one server, Sentinel or Cluster, over TLS or
    /// not (the forms of [`RedisUrl`]); the embedded store when absent.
    pub redis_url: Option<RedisUrl>,
    /// Prefix of every Redis key, so that brokers can share a server; on a
    /// Redis Cluster it carries a hash tag (default `{baton}:` there).
    pub redis_prefix: String,
    /// TLS files for a `rediss` Redis URL (`redis_tls_ca`, `redis_tls_cert`,
    /// `redis_tls_key`).
    pub redis_tls: RedisTls,
    /// Replicas that must acknowledge a revocation before it is; by default
    /// 1 under Sentinel, else 0.
    pub redis_replica_acks: Option<u32>,
    /// SHA-256 (hex) of the admin token; the admin API is off when absent.
    pub admin_token_sha256: Option<String>,
    /// Whether DPoP proofs at the token endpoint must carry a server nonce
    /// (RFC 9449 §8).
    pub dpop_nonce: bool,
    /// Who approves a request whose scopes need a person's approval.
    pub approver: Approver,
    /// Seconds an approval stays usable.
    pub approval_ttl: i64,
    /// `http://` URL that new pending approvals are posted to.
    pub approval_webhook: Option<String>,
    /// Seconds of clock difference tolerated with other nodes, clients and
    /// identity providers, where times are checked.
    pub clock_leeway_seconds: i64,
    /// Failed client authentications allowed per minute from one address
    /// for one claimed client, before that address is answered 429 for it.
    pub auth_failures_per_client: u32,
    /// Failed client authentications allowed per minute from one address,
    /// whatever client it claims, before that address is answered 429.
    pub auth_failures_per_address: u32,
    /// Seconds between two audit events counting the refusals of
    /// unauthenticated requests.
    pub refusal_interval: u64,
    /// Most distinct (reason, claimed client, address) counts kept per
    /// interval; past it, refusals are counted by reason alone.
    pub refusal_max_keys: usize,
    /// How many approvals one agent may have pending at once.
    pub max_pending_approvals_per_agent: usize,
    /// Milliseconds a client has to send a request's headers: from the
    /// connection's start for its first request, from the first byte for
    /// later ones. A client slower than that is disconnected.
    pub header_timeout_ms: u64,
    /// Milliseconds a client has to send a request's whole body, counted from
    /// its headers; past that it is answered 408 and disconnected.
    pub body_timeout_ms: u64,
    /// Milliseconds a keep-alive connection may wait, idle, for its next
    /// request before it is closed; also the longest a response may wait,
    /// unread, for a client that stopped reading.
    pub idle_timeout_ms: u64,
    /// Most connections open at once; one more is closed as soon as accepted.
    /// Kept under the descriptor limit, which the broker raises if it may.
    pub max_connections: usize,
    /// Most connections open at once from one client address, so that one
    /// address cannot take the slots that others need.
    pub max_connections_per_address: usize,
    /// Proxies whose forwarded client address (`Forwarded`, else
    /// `X-Forwarded-For`) is believed for throttling and the audit trail;
    /// none by default, so that no client can choose its own address.
    pub trusted_proxies: Vec<IpAddr>,
    /// Days audit events are kept (both stores); the issuance of a token
    /// still alive is kept however old. At least one day, the longest any
    /// token lives, so trimming by age never reaches a live token's events.
    pub audit_retention_days: u32,
    /// Signing in to the console at an identity provider, besides the admin
    /// credential; off unless configured.
    pub console_sign_in: Option<ConsoleSignIn>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Where request spans are sent over OTLP/HTTP (JSON), the collector's
    /// `/v1/traces` URL; none are made when absent.
    pub otlp_endpoint: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people, coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object a line, for log collectors; an audit event is one
    /// record with its fields.
    Json,
}

/// The console's registration at an identity provider, and who may sign in
/// there: the keys `console_issuer`, `console_client_id`,
/// `console_client_secret` and `console_members`, all or none.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleSignIn {
    /// The provider's issuer URL: https, or http on a loopback address.
    pub issuer: String,
    /// The console's client id at the provider.
    pub client_id: String,
    client_secret: String,
    /// Who may sign in: subjects (`sub`) at the provider, or email
    /// addresses it has verified.
    pub members: Vec<String>,
}

impl ConsoleSignIn {
    /// The console's client secret at the provider.
    pub fn client_secret(&self) -> secrecy::SecretString {
        secrecy::SecretString::from(self.client_secret.clone())
    }
}

impl std::fmt::Debug for ConsoleSignIn {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConsoleSignIn")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("members", &self.members)
            .finish()
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file or a variable does not parse, or names an unknown key.
    #[error("config: {0}")]
    Parse(String),
    /// A secret is given both as a variable and as a file.
    #[error("both {variable} and {file_variable} are set: set only one")]
    SecretTwice {
        /// The variable holding the value.
        variable: String,
        /// The variable naming a file that holds it.
        file_variable: String,
    },
    /// The file a `*_FILE` variable names cannot be read.
    #[error("{variable}: cannot read {}: {source}", path.display())]
    SecretFile {
        /// The variable that names the file.
        variable: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key has a value outside what is allowed.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<String>,
    issuer: Option<String>,
    keys_dir: Option<PathBuf>,
    policies_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    signing_algorithm: Option<Algorithm>,
    max_depth: Option<u32>,
    max_token_ttl: Option<i64>,
    agent_token_ttl: Option<i64>,
    max_body_bytes: Option<usize>,
    max_token_bytes: Option<usize>,
    redis_url: Option<RedisUrl>,
    redis_prefix: Option<String>,
    redis_tls_ca: Option<PathBuf>,
    redis_tls_cert: Option<PathBuf>,
    redis_tls_key: Option<PathBuf>,
    redis_replica_acks: Option<u32>,
    admin_token_sha256: Option<String>,
    dpop_nonce: Option<bool>,
    approver: Option<Approver>,
    approval_ttl: Option<i64>,
    approval_webhook: Option<String>,
    clock_leeway_seconds: Option<i64>,
    auth_failures_per_client: Option<u32>,
    auth_failures_per_address: Option<u32>,
    refusal_interval: Option<u64>,
    refusal_max_keys: Option<usize>,
    max_pending_approvals_per_agent: Option<usize>,
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    trusted_proxies: Option<Vec<IpAddr>>,
    audit_retention_days: Option<u32>,
    console_issuer: Option<String>,
    console_client_id: Option<String>,
    console_client_secret: Option<String>,
    console_members: Option<Vec<String>>,
    log_format: Option<LogFormat>,
    otlp_endpoint: Option<String>,
}

impl Config {
    /// Loads the file (if any) and applies `variables` (`BATON_*` pairs).
    pub fn load(
        file: Option<&Path>,
        variables: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                text.parse::<toml::Table>()
                    .map_err(|error| ConfigError::Parse(format!("{}: {error}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let mut variables: std::collections::BTreeMap<String, String> = variables.into_iter().collect();
        for key in SECRET_KEYS {
            let variable = format!("BATON_{}", key.to_ascii_uppercase());
            if let Some(value) = secret_variable(&variable, |name| variables.get(name).cloned())? {
                table.insert((*key).to_owned(), toml::Value::String(value));
            }
            variables.remove(&format!("{variable}{FILE_SUFFIX}"));
            variables.remove(&variable);
        }
        // The command line's own secret, not a config key.
        variables.remove(&format!("{ADMIN_TOKEN_VARIABLE}{FILE_SUFFIX}"));
        for (name, value) in variables {
            let Some(key) = name.strip_prefix("BATON_") else { continue };
            if name == CONFIG_VARIABLE || name == ADMIN_TOKEN_VARIABLE || key.is_empty() {
                continue;
            }
            let key = key.to_ascii_lowercase();
            let value = if LIST_KEYS.contains(&key.as_str()) { list_value(&value) } else { variable_value(&value) };
            table.insert(key, value);
        }
        let raw = Raw::deserialize(toml::Value::Table(table)).map_err(|error| ConfigError::Parse(error.to_string()))?;
        Config::resolve(raw)
    }

    fn resolve(raw: Raw) -> Result<Config, ConfigError> {
        let console_sign_in = console_sign_in(&raw)?;
        let listen = Listen::parse(raw.listen.as_deref().unwrap_or("127.0.0.1:8080"))?;
        let issuer = raw.issuer.unwrap_or_else(|| format!("http://{listen}"));
        check_issuer(&issuer)?;
        // The defaults are the broker's own, defined once beside the code.
        let (throttle, refusals) = (ThrottleSettings::default(), RefusalSettings::default());
        let redis_prefix = raw.redis_prefix.clone().unwrap_or_else(|| default_redis_prefix(raw.redis_url.as_ref()));
        let config = Config {
            listen,
            issuer: Issuer::new(issuer),
            keys_dir: raw.keys_dir.unwrap_or_else(|| "keys".into()),
            policies_dir: raw.policies_dir.unwrap_or_else(|| "policies".into()),
            data_dir: raw.data_dir.unwrap_or_else(|| "data".into()),
            signing_algorithm: raw.signing_algorithm.unwrap_or(Algorithm::Es256),
            max_depth: raw.max_depth.unwrap_or(5),
            max_token_ttl: raw.max_token_ttl.unwrap_or(3600),
            agent_token_ttl: raw.agent_token_ttl.unwrap_or(900),
            max_body_bytes: raw.max_body_bytes.unwrap_or(64 * 1024),
            max_token_bytes: raw.max_token_bytes.unwrap_or(16 * 1024),
            redis_url: raw.redis_url,
            redis_prefix,
            redis_tls: RedisTls { ca: raw.redis_tls_ca, cert: raw.redis_tls_cert, key: raw.redis_tls_key },
            redis_replica_acks: raw.redis_replica_acks,
            admin_token_sha256: raw.admin_token_sha256,
            dpop_nonce: raw.dpop_nonce.unwrap_or(false),
            approver: raw.approver.unwrap_or_default(),
            approval_ttl: raw.approval_ttl.unwrap_or(crate::approvals::DEFAULT_APPROVAL_TTL),
            approval_webhook: raw.approval_webhook,
            clock_leeway_seconds: raw.clock_leeway_seconds.unwrap_or(DEFAULT_CLOCK_LEEWAY),
            auth_failures_per_client: raw.auth_failures_per_client.unwrap_or(throttle.per_client),
            auth_failures_per_address: raw.auth_failures_per_address.unwrap_or(throttle.per_address),
            refusal_interval: raw.refusal_interval.unwrap_or(refusals.interval),
            refusal_max_keys: raw.refusal_max_keys.unwrap_or(refusals.max_keys),
            max_pending_approvals_per_agent: raw
                .max_pending_approvals_per_agent
                .unwrap_or(crate::approvals::DEFAULT_MAX_PENDING_PER_AGENT),
            header_timeout_ms: raw.header_timeout_ms.unwrap_or(5_000),
            body_timeout_ms: raw.body_timeout_ms.unwrap_or(10_000),
            idle_timeout_ms: raw.idle_timeout_ms.unwrap_or(60_000),
            max_connections: raw.max_connections.unwrap_or(4_096),
            max_connections_per_address: raw.max_connections_per_address.unwrap_or(128),
            trusted_proxies: raw.trusted_proxies.unwrap_or_default(),
            audit_retention_days: raw.audit_retention_days.unwrap_or(crate::store::DEFAULT_AUDIT_RETENTION_DAYS),
            console_sign_in,
            log_format: raw.log_format.unwrap_or_default(),
            otlp_endpoint: raw.otlp_endpoint,
        };
        if config
            .otlp_endpoint
            .as_deref()
            .is_some_and(|url| !(url.starts_with("http://") || url.starts_with("https://")))
        {
            return Err(ConfigError::Invalid {
                key: "otlp_endpoint",
                problem: "must be an http:// or https:// URL".into(),
            });
        }
        if config.console_sign_in.is_some() && config.admin_token_sha256.is_none() {
            return Err(ConfigError::Invalid {
                key: "console_issuer",
                problem: "the console is on only with the admin API: set admin_token_sha256 too".into(),
            });
        }
        // The code and the session cookie come back to the issuer's URL:
        // in clear only on this machine.
        if config.console_sign_in.is_some() && !is_https_or_loopback(config.issuer.as_str()) {
            return Err(ConfigError::Invalid {
                key: "console_issuer",
                problem: "signing in at a provider needs an https issuer (http only on a loopback address)".into(),
            });
        }
        if config.approval_webhook.as_deref().is_some_and(|url| !url.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                key: "approval_webhook",
                problem: "must be an http:// URL (this build has no TLS client)".into(),
            });
        }
        within("approval_ttl", config.approval_ttl, 30, 86_400)?;
        within("clock_leeway_seconds", config.clock_leeway_seconds, 0, MAX_CLOCK_LEEWAY)?;
        let max_pending = i64::try_from(config.max_pending_approvals_per_agent).unwrap_or(i64::MAX);
        within("max_pending_approvals_per_agent", max_pending, 1, 10_000)?;
        check_redis(&config)?;
        if let Some(hash) = &config.admin_token_sha256 {
            if hash.len() != 64 || !hash.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid {
                    key: "admin_token_sha256",
                    problem: "must be 64 hex digits".into(),
                });
            }
        }
        within("max_depth", i64::from(config.max_depth), 1, 32)?;
        within("max_token_ttl", config.max_token_ttl, 1, crate::token::MAX_LIFETIME)?;
        within("agent_token_ttl", config.agent_token_ttl, 1, config.max_token_ttl)?;
        within("max_token_bytes", i64::try_from(config.max_token_bytes).unwrap_or(i64::MAX), 512, 1 << 20)?;
        within("max_body_bytes", i64::try_from(config.max_body_bytes).unwrap_or(i64::MAX), 1024, 1 << 22)?;
        within("auth_failures_per_client", i64::from(config.auth_failures_per_client), 1, 10_000)?;
        within("auth_failures_per_address", i64::from(config.auth_failures_per_address), 1, 100_000)?;
        within("refusal_interval", i64::try_from(config.refusal_interval).unwrap_or(i64::MAX), 1, 3600)?;
        within("refusal_max_keys", i64::try_from(config.refusal_max_keys).unwrap_or(i64::MAX), 1, 100_000)?;
        let wide = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        within("header_timeout_ms", wide(config.header_timeout_ms), 100, 120_000)?;
        within("body_timeout_ms", wide(config.body_timeout_ms), 100, 600_000)?;
        within("idle_timeout_ms", wide(config.idle_timeout_ms), 100, 3_600_000)?;
        let count = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
        within("max_connections", count(config.max_connections), 1, 1_000_000)?;
        within(
            "max_connections_per_address",
            count(config.max_connections_per_address),
            1,
            count(config.max_connections),
        )?;
        within("trusted_proxies", i64::try_from(config.trusted_proxies.len()).unwrap_or(i64::MAX), 0, 1000)?;
        within("audit_retention_days", i64::from(config.audit_retention_days), 1, 3650)?;
        Ok(config)
    }
}

/// The keys whose value is a list: as a variable, comma-separated.
const LIST_KEYS: &[&str] = &["trusted_proxies", "console_members"];

/// Whether `url` is https, or http on a loopback address.
fn is_https_or_loopback(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else { return false };
    let loopback = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || url.host_str() == Some("localhost");
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

/// The console's sign-in at an identity provider: every key of it, or none.
fn console_sign_in(raw: &Raw) -> Result<Option<ConsoleSignIn>, ConfigError> {
    let members = raw.console_members.clone().unwrap_or_default();
    let (issuer, client_id, client_secret) =
        match (&raw.console_issuer, &raw.console_client_id, &raw.console_client_secret) {
            (None, None, None) if members.is_empty() => return Ok(None),
            (Some(issuer), Some(id), Some(secret)) if !members.is_empty() => (issuer, id, secret),
            _ => {
                return Err(ConfigError::Invalid {
                    key: "console_issuer",
                    problem: "console_issuer, console_client_id, console_client_secret and console_members go together"
                        .into(),
                })
            }
        };
    // Anything but loopback is reached over TLS: the ID token it hands back
    // opens the console.
    if !is_https_or_loopback(issuer) {
        return Err(ConfigError::Invalid {
            key: "console_issuer",
            problem: "must be an https:// URL (http:// only on a loopback address)".into(),
        });
    }
    // A name with a space could pass for the admin credential's sessions
    // (`admin token`) in the audit trail.
    if members.iter().any(|member| member.is_empty() || member.contains(char::is_whitespace)) {
        return Err(ConfigError::Invalid {
            key: "console_members",
            problem: "an entry is empty or has a space".into(),
        });
    }
    Ok(Some(ConsoleSignIn {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
        members,
    }))
}

/// A variable's comma-separated text as a TOML array of strings, blanks
/// dropped (so that an empty variable is an empty list).
fn list_value(text: &str) -> toml::Value {
    toml::Value::Array(
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| toml::Value::String(item.to_owned()))
            .collect(),
    )
}

/// A variable's text as a TOML value: numbers and booleans as such, anything
/// else as a string.
fn variable_value(text: &str) -> toml::Value {
    if let Ok(number) = text.parse::<i64>() {
        return toml::Value::Integer(number);
    }
    match text {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(text.to_owned()),
    }
}

fn check_issuer(issuer: &str) -> Result<(), ConfigError> {
    let invalid = |problem: &str| ConfigError::Invalid { key: "issuer", problem: problem.to_owned() };
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .ok_or_else(|| invalid("must be an http:// or https:// URL"))?;
    // RFC 8414 §2: no query or fragment; a trailing slash would make `iss` ambiguous.
    if rest.is_empty() || rest.contains(['?', '#']) || issuer.ends_with('/') {
        return Err(invalid("must have a host and no query, fragment or trailing slash"));
    }
    Ok(())
}

fn within(key: &'static str, value: i64, low: i64, high: i64) -> Result<(), ConfigError> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid { key, problem: format!("must be between {low} and {high}, not {value}") })
    }
}

/// `baton:`, or `{baton}:` on a Redis Cluster, where every key must hash to
/// one slot.
fn default_redis_prefix(url: Option<&RedisUrl>) -> String {
    match url.map(RedisUrl::check) {
        Some(Ok(Topology::Cluster)) => "{baton}:".into(),
        _ => "baton:".into(),
    }
}

/// The Redis URL is a form the store reads, a cluster's prefix carries a
/// hash tag, and the TLS files go with a TLS URL, a certificate with its key.
fn check_redis(config: &Config) -> Result<(), ConfigError> {
    if let Some(acks) = config.redis_replica_acks {
        within("redis_replica_acks", i64::from(acks), 0, i64::from(MAX_REPLICA_ACKS))?;
    }
    // A cluster promotes a replica by itself: a revocation only its old
    // master held is lost then. Whether there are replicas to wait for is
    // not known here, so the operator says it.
    let cluster = matches!(config.redis_url.as_ref().map(RedisUrl::check), Some(Ok(Topology::Cluster)));
    if cluster && config.redis_replica_acks.is_none() {
        return Err(ConfigError::Invalid {
            key: "redis_replica_acks",
            problem: "on a Redis Cluster, set how many replicas must hold a revocation before it is acknowledged: \
                      1 or more, or 0 for a cluster without replicas (whose failover loses revocations)"
                .into(),
        });
    }
    let tls = &config.redis_tls;
    if tls.cert.is_some() != tls.key.is_some() {
        return Err(ConfigError::Invalid {
            key: if tls.cert.is_some() { "redis_tls_key" } else { "redis_tls_cert" },
            problem: "redis_tls_cert and redis_tls_key go together".into(),
        });
    }
    let Some(url) = &config.redis_url else {
        let named = [("redis_tls_ca", &tls.ca), ("redis_tls_cert", &tls.cert), ("redis_tls_key", &tls.key)];
        return match named.into_iter().find(|(_, path)| path.is_some()) {
            Some((key, _)) => Err(ConfigError::Invalid { key, problem: "set without redis_url".into() }),
            None => Ok(()),
        };
    };
    // The problem never echoes the URL: it may carry a password.
    let topology =
        url.check().map_err(|error| ConfigError::Invalid { key: "redis_url", problem: error.detail().to_owned() })?;
    if topology == Topology::Cluster && crate::store::redis::hash_tag(&config.redis_prefix).is_none() {
        return Err(ConfigError::Invalid {
            key: "redis_prefix",
            problem: "on a Redis Cluster it needs a hash tag, such as {baton}:, so that every key lands in one slot"
                .into(),
        });
    }
    if tls.is_set() && !url.is_tls() {
        return Err(ConfigError::Invalid {
            key: "redis_url",
            problem: "redis_tls_ca, redis_tls_cert and redis_tls_key need a rediss URL".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_are_local_and_safe() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.issuer, "http://127.0.0.1:8080");
        assert_eq!(config.keys_dir, PathBuf::from("keys"));
        assert_eq!(config.policies_dir, PathBuf::from("policies"));
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.signing_algorithm, Algorithm::Es256);
        assert_eq!(config.max_depth, 5);
        assert_eq!((config.approver, config.approval_ttl, config.approval_webhook), (Approver::Owner, 600, None));
        let subject = Config::load(None, vars(&[("BATON_APPROVER", "subject")])).unwrap();
        assert_eq!(subject.approver, Approver::Subject);
        assert_eq!(config.clock_leeway_seconds, 30);
    }

    #[test]
    fn secrets_are_read_from_the_files_that_file_variables_name() {
        let dir = tempfile::tempdir().unwrap();
        let hash = "a".repeat(64);
        let hash_file = dir.path().join("admin.sha256");
        std::fs::write(&hash_file, format!("{hash}\n")).unwrap();
        let redis_file = dir.path().join("redis-url");
        std::fs::write(&redis_file, "redis://:pass@127.0.0.1:6379/0\r\n").unwrap();
        let config = Config::load(
            None,
            vars(&[
                ("BATON_ADMIN_TOKEN_SHA256_FILE", hash_file.to_str().unwrap()),
                ("BATON_REDIS_URL_FILE", redis_file.to_str().unwrap()),
                // The command line's, which the broker ignores either way.
                ("BATON_ADMIN_TOKEN_FILE", "/nonexistent"),
            ]),
        )
        .unwrap();
        assert_eq!(config.admin_token_sha256.as_deref(), Some(hash.as_str()), "the trailing newline is trimmed");
        assert_eq!(config.redis_url.as_ref().map(RedisUrl::expose), Some("redis://:pass@127.0.0.1:6379/0"));

        let both = Config::load(
            None,
            vars(&[("BATON_REDIS_URL", "redis://127.0.0.1"), ("BATON_REDIS_URL_FILE", redis_file.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(both.contains("BATON_REDIS_URL ") && both.contains("BATON_REDIS_URL_FILE"), "{both}");
        let missing = dir.path().join("missing");
        let unreadable = Config::load(None, vars(&[("BATON_ADMIN_TOKEN_SHA256_FILE", missing.to_str().unwrap())]))
            .unwrap_err()
            .to_string();
        assert!(unreadable.contains("BATON_ADMIN_TOKEN_SHA256_FILE") && unreadable.contains("missing"), "{unreadable}");
        // What a file holds is checked as the value itself is.
        std::fs::write(&hash_file, "abc\n").unwrap();
        let short = Config::load(None, vars(&[("BATON_ADMIN_TOKEN_SHA256_FILE", hash_file.to_str().unwrap())]));
        assert!(short.unwrap_err().to_string().contains("admin_token_sha256"));
        // Only secrets have a file variant: any other is an unknown key, named.
        let other = Config::load(None, vars(&[("BATON_MAX_DEPTH_FILE", "/x")])).unwrap_err().to_string();
        assert!(other.contains("max_depth_file"), "{other}");
        let lookup = |name: &str| (name == "TOKEN").then(|| "t".to_owned());
        assert_eq!(secret_variable("TOKEN", lookup).unwrap().as_deref(), Some("t"));
        assert_eq!(secret_variable("OTHER", lookup).unwrap(), None);
    }

    #[test]
    fn listen_takes_an_address_or_a_host_name_with_a_port() {
        for good in ["127.0.0.1:9000", "[::1]:9000", "0.0.0.0:0", "localhost:9000", "baton.internal.example:443"] {
            let config = Config::load(None, vars(&[("BATON_LISTEN", good)])).unwrap();
            assert_eq!(config.listen.as_str(), good);
            assert_eq!(config.issuer, format!("http://{good}"), "the default issuer follows it");
        }
        for bad in
            ["localhost", "localhost:http", "localhost:65536", ":8080", "http://localhost:8080", "::1:8080", "a/b:1"]
        {
            let error = Config::load(None, vars(&[("BATON_LISTEN", bad)])).unwrap_err().to_string();
            assert!(error.contains("`listen`") && error.contains(bad), "{bad}: {error}");
        }
    }

    #[test]
    fn clock_leeway_is_small_and_bounded() {
        let none = Config::load(None, vars(&[("BATON_CLOCK_LEEWAY_SECONDS", "0")])).unwrap();
        assert_eq!(none.clock_leeway_seconds, 0);
        let most = Config::load(None, vars(&[("BATON_CLOCK_LEEWAY_SECONDS", "300")])).unwrap();
        assert_eq!(most.clock_leeway_seconds, 300);
        for bad in ["301", "-1", "86400"] {
            let error = Config::load(None, vars(&[("BATON_CLOCK_LEEWAY_SECONDS", bad)])).unwrap_err().to_string();
            assert!(error.contains("clock_leeway_seconds"), "{bad}: {error}");
        }
    }

    #[test]
    fn pending_approvals_per_agent_are_capped_within_bounds() {
        assert_eq!(Config::load(None, Vec::new()).unwrap().max_pending_approvals_per_agent, 20);
        let five = Config::load(None, vars(&[("BATON_MAX_PENDING_APPROVALS_PER_AGENT", "5")])).unwrap();
        assert_eq!(five.max_pending_approvals_per_agent, 5);
        for bad in ["0", "10001", "-1", "many"] {
            let error = Config::load(None, vars(&[("BATON_MAX_PENDING_APPROVALS_PER_AGENT", bad)])).unwrap_err();
            assert!(error.to_string().contains("max_pending_approvals_per_agent"), "{bad}: {error}");
        }
    }

    #[test]
    fn connection_limits_have_safe_defaults_and_bounds() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert_eq!((config.header_timeout_ms, config.body_timeout_ms, config.idle_timeout_ms), (5_000, 10_000, 60_000));
        assert_eq!((config.max_connections, config.max_connections_per_address), (4_096, 128));
        // The same defaults as the server's own, used where no config is read.
        let served = crate::http::Limits::default();
        let millis = |duration: std::time::Duration| u64::try_from(duration.as_millis()).unwrap();
        assert_eq!(
            (millis(served.header_timeout), millis(served.body_timeout), millis(served.idle_timeout)),
            (config.header_timeout_ms, config.body_timeout_ms, config.idle_timeout_ms)
        );
        assert_eq!(
            (served.max_connections, served.max_connections_per_address),
            (config.max_connections, config.max_connections_per_address)
        );
        let set = Config::load(
            None,
            vars(&[
                ("BATON_HEADER_TIMEOUT_MS", "1000"),
                ("BATON_BODY_TIMEOUT_MS", "2000"),
                ("BATON_IDLE_TIMEOUT_MS", "3000"),
                ("BATON_MAX_CONNECTIONS", "100"),
                ("BATON_MAX_CONNECTIONS_PER_ADDRESS", "10"),
            ]),
        )
        .unwrap();
        assert_eq!((set.header_timeout_ms, set.body_timeout_ms, set.idle_timeout_ms), (1_000, 2_000, 3_000));
        assert_eq!((set.max_connections, set.max_connections_per_address), (100, 10));
        for (key, value) in [
            ("HEADER_TIMEOUT_MS", "0"),
            ("HEADER_TIMEOUT_MS", "600000"),
            ("BODY_TIMEOUT_MS", "10"),
            ("IDLE_TIMEOUT_MS", "0"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_CONNECTIONS_PER_ADDRESS", "0"),
            ("MAX_CONNECTIONS_PER_ADDRESS", "5000"),
        ] {
            let error = Config::load(None, vars(&[(&format!("BATON_{key}"), value)])).unwrap_err().to_string();
            assert!(error.contains(&key.to_ascii_lowercase()), "{key}={value}: {error}");
        }
        // A negative number is refused when read, not wrapped around.
        assert!(Config::load(None, vars(&[("BATON_MAX_CONNECTIONS", "-1")])).is_err());
    }

    #[test]
    fn variables_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.toml");
        std::fs::write(&path, "max_depth = 3\nsigning_algorithm = \"EdDSA\"\n").unwrap();
        let config = Config::load(
            Some(&path),
            vars(&[("BATON_MAX_DEPTH", "4"), ("BATON_LISTEN", "127.0.0.1:9000"), ("HOME", "/")]),
        )
        .unwrap();
        assert_eq!(config.max_depth, 4);
        assert_eq!(config.signing_algorithm, Algorithm::EdDsa);
        assert_eq!(config.issuer, "http://127.0.0.1:9000");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let typo = Config::load(None, vars(&[("BATON_MAX_DEPHT", "3")])).unwrap_err().to_string();
        assert!(typo.contains("max_depht"), "{typo}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let file_typo = Config::load(Some(&path), Vec::new()).unwrap_err().to_string();
        assert!(file_typo.contains("lisen"), "{file_typo}");
        let deep = Config::load(None, vars(&[("BATON_MAX_DEPTH", "0")])).unwrap_err().to_string();
        assert!(deep.contains("max_depth"), "{deep}");
        let issuer = Config::load(None, vars(&[("BATON_ISSUER", "ftp://x")])).unwrap_err().to_string();
        assert!(issuer.contains("issuer"), "{issuer}");
        let redis = Config::load(None, vars(&[("BATON_REDIS_URL", "http://x")])).unwrap_err().to_string();
        assert!(redis.contains("redis_url"), "{redis}");
        let admin = Config::load(None, vars(&[("BATON_ADMIN_TOKEN_SHA256", "abc")])).unwrap_err().to_string();
        assert!(admin.contains("admin_token_sha256"), "{admin}");
        let approver = Config::load(None, vars(&[("BATON_APPROVER", "anyone")])).unwrap_err().to_string();
        assert!(approver.contains("anyone"), "{approver}");
        let hook = Config::load(None, vars(&[("BATON_APPROVAL_WEBHOOK", "https://x")])).unwrap_err().to_string();
        assert!(hook.contains("approval_webhook"), "{hook}");
        let ttl = Config::load(None, vars(&[("BATON_APPROVAL_TTL", "5")])).unwrap_err().to_string();
        assert!(ttl.contains("approval_ttl"), "{ttl}");
        let alg = Config::load(None, vars(&[("BATON_SIGNING_ALGORITHM", "HS256")])).unwrap_err().to_string();
        assert!(alg.contains("HS256") || alg.contains("signing_algorithm"), "{alg}");
    }

    #[test]
    fn abuse_limits_default_safe_and_are_bounded() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert_eq!((config.auth_failures_per_client, config.auth_failures_per_address), (10, 100));
        assert_eq!((config.refusal_interval, config.refusal_max_keys), (60, 200));
        let set = Config::load(
            None,
            vars(&[
                ("BATON_AUTH_FAILURES_PER_CLIENT", "3"),
                ("BATON_AUTH_FAILURES_PER_ADDRESS", "30"),
                ("BATON_REFUSAL_INTERVAL", "5"),
                ("BATON_REFUSAL_MAX_KEYS", "50"),
            ]),
        )
        .unwrap();
        assert_eq!((set.auth_failures_per_client, set.auth_failures_per_address), (3, 30));
        assert_eq!((set.refusal_interval, set.refusal_max_keys), (5, 50));
        for (key, value) in [
            ("BATON_AUTH_FAILURES_PER_CLIENT", "0"),
            ("BATON_AUTH_FAILURES_PER_ADDRESS", "1000000"),
            ("BATON_REFUSAL_INTERVAL", "0"),
            ("BATON_REFUSAL_MAX_KEYS", "0"),
        ] {
            let error = Config::load(None, vars(&[(key, value)])).unwrap_err().to_string();
            assert!(error.contains(&key["BATON_".len()..].to_ascii_lowercase()), "{error}");
        }
    }

    #[test]
    fn trusted_proxies_are_a_list_of_addresses_and_none_by_default() {
        assert!(Config::load(None, Vec::new()).unwrap().trusted_proxies.is_empty());
        let ips = |list: &[&str]| list.iter().map(|ip| ip.parse::<IpAddr>().unwrap()).collect::<Vec<_>>();
        let two = Config::load(None, vars(&[("BATON_TRUSTED_PROXIES", "10.0.0.1, ::1")])).unwrap();
        assert_eq!(two.trusted_proxies, ips(&["10.0.0.1", "::1"]));
        let one = Config::load(None, vars(&[("BATON_TRUSTED_PROXIES", "10.0.0.1")])).unwrap();
        assert_eq!(one.trusted_proxies, ips(&["10.0.0.1"]));
        let empty = Config::load(None, vars(&[("BATON_TRUSTED_PROXIES", "")])).unwrap();
        assert!(empty.trusted_proxies.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.toml");
        std::fs::write(&path, "trusted_proxies = [\"192.0.2.1\", \"2001:db8::1\"]\n").unwrap();
        let file = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(file.trusted_proxies, ips(&["192.0.2.1", "2001:db8::1"]));
        for bad in ["10.0.0.0/8", "proxy.example", "10.0.0.1;10.0.0.2"] {
            let error = Config::load(None, vars(&[("BATON_TRUSTED_PROXIES", bad)])).unwrap_err().to_string();
            assert!(error.contains("trusted_proxies") || error.contains("IP address"), "{bad}: {error}");
        }
    }

    #[test]
    fn abuse_defaults_are_the_brokers_own() {
        let config = Config::load(None, Vec::new()).unwrap();
        let (throttle, refusals) = (ThrottleSettings::default(), RefusalSettings::default());
        assert_eq!(
            (config.auth_failures_per_client, config.auth_failures_per_address),
            (throttle.per_client, throttle.per_address)
        );
        assert_eq!((config.refusal_interval, config.refusal_max_keys), (refusals.interval, refusals.max_keys));
    }

    #[test]
    fn audit_retention_defaults_to_ninety_days_and_is_bounded() {
        assert_eq!(Config::load(None, Vec::new()).unwrap().audit_retention_days, 90);
        let kept = Config::load(None, vars(&[("BATON_AUDIT_RETENTION_DAYS", "7")])).unwrap();
        assert_eq!(kept.audit_retention_days, 7);
        for bad in ["0", "3651"] {
            let error = Config::load(None, vars(&[("BATON_AUDIT_RETENTION_DAYS", bad)])).unwrap_err().to_string();
            assert!(error.contains("audit_retention_days"), "{error}");
        }
    }

    #[test]
    fn redis_forms_tls_files_and_cluster_prefixes_are_checked() {
        let sentinel = "redis+sentinel://baton:s3cret@10.0.0.1:26379,10.0.0.2:26379/mymaster";
        let config = Config::load(None, vars(&[("BATON_REDIS_URL", sentinel)])).unwrap();
        assert_eq!(config.redis_prefix, "baton:");
        assert!(!format!("{config:?}").contains("s3cret"), "the Redis password is not printed");
        let cluster = vars(&[("BATON_REDIS_URL", "redis+cluster://a:7000,b:7000"), ("BATON_REDIS_REPLICA_ACKS", "1")]);
        let cluster = Config::load(None, cluster).unwrap();
        assert_eq!(cluster.redis_prefix, "{baton}:", "a cluster's default prefix is one slot");
        let untagged = vars(&[
            ("BATON_REDIS_URL", "redis+cluster://a:7000"),
            ("BATON_REDIS_PREFIX", "baton:"),
            ("BATON_REDIS_REPLICA_ACKS", "1"),
        ]);
        assert!(Config::load(None, untagged).unwrap_err().to_string().contains("redis_prefix"));
        let tls = vars(&[
            ("BATON_REDIS_URL", "rediss://baton:s3cret@redis.internal:6380/"),
            ("BATON_REDIS_TLS_CA", "/etc/baton/redis-ca.pem"),
            ("BATON_REDIS_TLS_CERT", "/etc/baton/redis-client.pem"),
            ("BATON_REDIS_TLS_KEY", "/etc/baton/redis-client.key"),
        ]);
        let config = Config::load(None, tls).unwrap();
        assert_eq!(config.redis_tls.ca.as_deref(), Some(Path::new("/etc/baton/redis-ca.pem")));
        let plain = vars(&[("BATON_REDIS_URL", "redis://h:6379/"), ("BATON_REDIS_TLS_CA", "/ca.pem")]);
        assert!(Config::load(None, plain).unwrap_err().to_string().contains("rediss"));
        let half = vars(&[("BATON_REDIS_URL", "rediss://h:6380/"), ("BATON_REDIS_TLS_CERT", "/c.pem")]);
        assert!(Config::load(None, half).unwrap_err().to_string().contains("redis_tls_key"));
        let acks = vars(&[("BATON_REDIS_URL", "redis://h:6379/"), ("BATON_REDIS_REPLICA_ACKS", "1")]);
        assert_eq!(Config::load(None, acks).unwrap().redis_replica_acks, Some(1));
        let cluster = vars(&[("BATON_REDIS_URL", "redis+cluster://h:7000")]);
        assert!(Config::load(None, cluster).unwrap_err().to_string().contains("redis_replica_acks"));
        let cluster = vars(&[("BATON_REDIS_URL", "redis+cluster://h:7000"), ("BATON_REDIS_REPLICA_ACKS", "1")]);
        assert_eq!(Config::load(None, cluster).unwrap().redis_replica_acks, Some(1));
        let many = vars(&[("BATON_REDIS_URL", "redis://h:6379/"), ("BATON_REDIS_REPLICA_ACKS", "17")]);
        assert!(Config::load(None, many).unwrap_err().to_string().contains("redis_replica_acks"));
        let alone = vars(&[("BATON_REDIS_TLS_CERT", "/c.pem"), ("BATON_REDIS_TLS_KEY", "/k.pem")]);
        assert!(Config::load(None, alone).unwrap_err().to_string().contains("redis_tls_cert"));
        let error =
            Config::load(None, vars(&[("BATON_REDIS_URL", "redis+sentinel://u:s3cret@a:1/")])).unwrap_err().to_string();
        assert!(error.contains("redis_url") && !error.contains("s3cret"), "{error}");
    }

    #[test]
    fn the_console_signs_in_at_a_provider_only_with_every_key_and_the_admin_api() {
        let hash = "ab".repeat(32);
        let all = [
            ("BATON_ADMIN_TOKEN_SHA256", hash.as_str()),
            ("BATON_CONSOLE_ISSUER", "https://idp.example"),
            ("BATON_CONSOLE_CLIENT_ID", "baton-console"),
            ("BATON_CONSOLE_CLIENT_SECRET", "s3cret"),
            ("BATON_CONSOLE_MEMBERS", "alice@example.com, carol"),
        ];
        let config = Config::load(None, vars(&all)).unwrap();
        let sign_in = config.console_sign_in.as_ref().unwrap();
        assert_eq!(sign_in.members, ["alice@example.com", "carol"]);
        assert!(!format!("{config:?}").contains("s3cret"), "the secret is not printed");
        for missing in 1..all.len() {
            let mut some = all.to_vec();
            some.remove(missing);
            let error = Config::load(None, vars(&some)).unwrap_err().to_string();
            assert!(error.contains("go together"), "{error}");
        }
        let error = Config::load(None, vars(&all[1..])).unwrap_err().to_string();
        assert!(error.contains("admin_token_sha256"), "{error}");
        // Plain http only on loopback.
        let mut plain = all.to_vec();
        plain[1] = ("BATON_CONSOLE_ISSUER", "http://idp.example");
        assert!(Config::load(None, vars(&plain)).unwrap_err().to_string().contains("https://"));
        plain[1] = ("BATON_CONSOLE_ISSUER", "http://127.0.0.1:9400");
        assert!(Config::load(None, vars(&plain)).is_ok());
        // The broker's own address, where the code comes back, too.
        let mut exposed = all.to_vec();
        exposed.push(("BATON_ISSUER", "http://baton.example"));
        assert!(Config::load(None, vars(&exposed)).unwrap_err().to_string().contains("https issuer"));
        let mut spaced = all.to_vec();
        spaced[4] = ("BATON_CONSOLE_MEMBERS", "admin token");
        assert!(Config::load(None, vars(&spaced)).is_err());
        assert!(Config::load(None, vars(&[])).unwrap().console_sign_in.is_none());
    }

    #[test]
    fn logs_are_text_unless_json_is_asked() {
        assert_eq!(Config::load(None, vars(&[])).unwrap().log_format, LogFormat::Text);
        let json = Config::load(None, vars(&[("BATON_LOG_FORMAT", "json")])).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        assert!(Config::load(None, vars(&[("BATON_LOG_FORMAT", "xml")])).is_err());
    }
}
