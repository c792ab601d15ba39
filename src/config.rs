//! Configuration: an optional `baton.toml`, every key overridable by a
//! `BATON_<KEY>` variable, safe local defaults for everything. Unknown keys,
//! in the file or as variables, are refused by name (DESIGN.md §10).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::grant::Approver;
use crate::keys::Algorithm;

/// The variable that names the config file; not itself a config key.
pub const CONFIG_VARIABLE: &str = "BATON_CONFIG";

/// The variable holding the admin token for the command line's admin calls;
/// the broker itself only ever sees its hash (`admin_token_sha256`).
pub const ADMIN_TOKEN_VARIABLE: &str = "BATON_ADMIN_TOKEN";

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Issuer identifier (`iss`), also the base of every endpoint URL.
    pub issuer: String,
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
    /// Redis for shared state (`redis://` or `rediss://`); the embedded store when absent.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so that brokers can share a server.
    pub redis_prefix: String,
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
    /// Days audit events are kept (both stores); the issuance of a token
    /// still alive is kept however old. At least one day, the longest any
    /// token lives, so trimming by age never reaches a live token's events.
    pub audit_retention_days: u32,
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
    listen: Option<SocketAddr>,
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
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    admin_token_sha256: Option<String>,
    dpop_nonce: Option<bool>,
    approver: Option<Approver>,
    approval_ttl: Option<i64>,
    approval_webhook: Option<String>,
    audit_retention_days: Option<u32>,
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
        for (name, value) in variables {
            let Some(key) = name.strip_prefix("BATON_") else { continue };
            if name == CONFIG_VARIABLE || name == ADMIN_TOKEN_VARIABLE || key.is_empty() {
                continue;
            }
            table.insert(key.to_ascii_lowercase(), variable_value(&value));
        }
        let raw = Raw::deserialize(toml::Value::Table(table)).map_err(|error| ConfigError::Parse(error.to_string()))?;
        Config::resolve(raw)
    }

    fn resolve(raw: Raw) -> Result<Config, ConfigError> {
        let listen = raw.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let issuer = raw.issuer.unwrap_or_else(|| format!("http://{listen}"));
        check_issuer(&issuer)?;
        let config = Config {
            listen,
            issuer,
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
            redis_prefix: raw.redis_prefix.unwrap_or_else(|| "baton:".into()),
            admin_token_sha256: raw.admin_token_sha256,
            dpop_nonce: raw.dpop_nonce.unwrap_or(false),
            approver: raw.approver.unwrap_or_default(),
            approval_ttl: raw.approval_ttl.unwrap_or(crate::grant::approval::DEFAULT_APPROVAL_TTL),
            approval_webhook: raw.approval_webhook,
            audit_retention_days: raw.audit_retention_days.unwrap_or(crate::store::DEFAULT_AUDIT_RETENTION_DAYS),
        };
        if config.approval_webhook.as_deref().is_some_and(|url| !url.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                key: "approval_webhook",
                problem: "must be an http:// URL (this build has no TLS client)".into(),
            });
        }
        within("approval_ttl", config.approval_ttl, 30, 86_400)?;
        if let Some(url) = &config.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::Invalid {
                    key: "redis_url",
                    problem: "must start with redis:// or rediss://".into(),
                });
            }
        }
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
        within("audit_retention_days", i64::from(config.audit_retention_days), 1, 3650)?;
        Ok(config)
    }
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
    fn audit_retention_defaults_to_ninety_days_and_is_bounded() {
        assert_eq!(Config::load(None, Vec::new()).unwrap().audit_retention_days, 90);
        let kept = Config::load(None, vars(&[("BATON_AUDIT_RETENTION_DAYS", "7")])).unwrap();
        assert_eq!(kept.audit_retention_days, 7);
        for bad in ["0", "3651"] {
            let error = Config::load(None, vars(&[("BATON_AUDIT_RETENTION_DAYS", bad)])).unwrap_err().to_string();
            assert!(error.contains("audit_retention_days"), "{error}");
        }
    }
}
