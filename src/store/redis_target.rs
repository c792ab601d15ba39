//! Where the Redis store's state lives and how to reach it: one server, the
//! master a set of Sentinels names, or a Redis Cluster; in the clear or over
//! TLS, with an ACL user and password or none.
//!
//! The forms of `redis_url`:
//!
//! | form | reaches |
//! |---|---|
//! | `redis://[user:password@]host[:port][/db]` | one server |
//! | `redis+sentinel://[user:password@]host:port[,host:port…]/master[/db][?sentinel_username=…&sentinel_password=…]` | the master the Sentinels at those addresses name `master`, followed through failovers |
//! | `redis+cluster://[user:password@]host:port[,host:port…]` | a Redis Cluster, discovered from any of the nodes named |
//!
//! Each has a TLS twin whose scheme starts `rediss` (`rediss://`,
//! `rediss+sentinel://`, `rediss+cluster://`); the certificate authority and a
//! client certificate and key come from files ([`RedisTls`]), else the
//! platform's roots are trusted and no client certificate is shown. Under
//! Sentinel, TLS covers the Sentinels and the data nodes alike, and the
//! credentials before the `@` are the data nodes'; the Sentinels are asked
//! with `sentinel_username` and `sentinel_password` (percent-encoded) where
//! they require a password, else without any.
//!
//! The URL may carry a password: [`RedisUrl`] prints only its scheme and
//! addresses, and no error here echoes it.

use std::fmt;
use std::path::{Path, PathBuf};

use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::{Client, ClientTlsConfig, ConnectionInfo, IntoConnectionInfo, TlsCertificates, TlsMode};
use serde::Deserialize;

use super::redis_link::{NodeTemplate, Sentinels, Source, CONNECTION_TIMEOUT, RESPONSE_TIMEOUT};
use super::StoreError;

/// A `redis_url` (see the module's table). Its `Debug` leaves out the
/// credentials.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

/// What a [`RedisUrl`] reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server (it may have replicas, but Baton talks to it alone).
    Server,
    /// The master named by a set of Sentinels.
    Sentinel,
    /// A Redis Cluster.
    Cluster,
}

/// Files for TLS to Redis, each PEM: a certificate authority to trust instead
/// of the platform's, and a client certificate with its key for servers that
/// ask for one (`tls-auth-clients yes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// The certificate authority (`redis_tls_ca`).
    pub ca: Option<PathBuf>,
    /// The client certificate chain (`redis_tls_cert`).
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (`redis_tls_key`).
    pub key: Option<PathBuf>,
}

/// A Redis deployment ready to be connected to: the URL checked and the TLS
/// files read. Its `Debug` names the addresses, never the credentials.
pub struct RedisTarget {
    pub(super) source: Source,
    pub(super) topology: Topology,
    pub(super) address: String,
    /// Replicas that must acknowledge a revocation before it is.
    pub(super) replica_acks: u32,
}

/// The most replicas a revocation may wait for (`redis_replica_acks`).
pub const MAX_REPLICA_ACKS: u32 = 16;

/// A URL split into its parts, before anything is opened.
struct Parts<'a> {
    tls: bool,
    topology: Topology,
    /// `user:password`, as written (percent-encoded).
    credentials: Option<&'a str>,
    /// `host:port` entries (one for a server, as written for the others).
    hosts: Vec<&'a str>,
    /// What follows the addresses, without the leading `/`, up to the query.
    path: &'a str,
    /// What follows the `?`, if anything (never printed: it may hold a
    /// password).
    query: &'a str,
}

impl RedisUrl {
    /// Wraps `url`; [`RedisUrl::check`] tells whether it is a form Baton reads.
    pub fn new(url: impl Into<String>) -> RedisUrl {
        RedisUrl(url.into())
    }

    /// The URL as written, credentials included: for connecting, never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the URL is one of the forms in the module's table, with a
    /// master name under Sentinel. Says what is wrong without echoing the URL.
    pub fn check(&self) -> Result<Topology, StoreError> {
        let parts = self.parts()?;
        if parts.topology == Topology::Sentinel {
            sentinel_path(parts.path)?;
        }
        Ok(parts.topology)
    }

    /// Whether the URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.parts().is_ok_and(|parts| parts.tls)
    }

    fn parts(&self) -> Result<Parts<'_>, StoreError> {
        let forms = "the Redis URL must start with redis://, rediss://, redis+sentinel://, rediss+sentinel://, \
                     redis+cluster:// or rediss+cluster://";
        let (scheme, rest) = self.0.split_once("://").ok_or_else(|| StoreError::Misconfigured(forms.into()))?;
        let (tls, topology) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => (false, Topology::Server),
            "rediss" => (true, Topology::Server),
            "redis+sentinel" => (false, Topology::Sentinel),
            "rediss+sentinel" => (true, Topology::Sentinel),
            "redis+cluster" => (false, Topology::Cluster),
            "rediss+cluster" => (true, Topology::Cluster),
            _ => return Err(StoreError::Misconfigured(forms.into())),
        };
        // The credentials end at the last `@`. One that holds `/`, `?` or
        // `#` unencoded would be read as an address, a path or a query, and
        // so be printed as one: refused, without saying what it was.
        let (credentials, after) = match rest.rfind('@') {
            Some(at) => (rest.get(..at), rest.get(at.saturating_add(1)..).unwrap_or("")),
            None => (None, rest),
        };
        if credentials.is_some_and(|credentials| credentials.contains(['/', '?', '#'])) {
            return Err(StoreError::Misconfigured(
                "the Redis URL's user and password must percent-encode `/`, `?`, `#` and `@`; \
                 a Sentinel password goes in the sentinel_password parameter, percent-encoded"
                    .into(),
            ));
        }
        let (after, query) = after.split_once('?').unwrap_or((after, ""));
        let (hosts, path) = after.split_once('/').unwrap_or((after, ""));
        let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
        if hosts.iter().any(|host| host.is_empty()) {
            return Err(StoreError::Misconfigured("the Redis URL names an empty address".into()));
        }
        if topology == Topology::Server && hosts.len() > 1 {
            return Err(StoreError::Misconfigured(
                "the Redis URL names several addresses: use redis+sentinel:// or redis+cluster://".into(),
            ));
        }
        if !query.is_empty() && topology == Topology::Cluster {
            return Err(StoreError::Misconfigured("a Redis Cluster URL takes no parameters".into()));
        }
        let parts = Parts { tls, topology, credentials, hosts, path, query };
        if topology == Topology::Sentinel {
            sentinel_credentials(&parts)?;
        }
        Ok(parts)
    }

    /// The scheme and addresses, without the credentials.
    fn redacted(&self) -> String {
        match self.parts() {
            Ok(parts) => {
                let scheme = self.0.split_once("://").map_or("", |(scheme, _)| scheme);
                format!("{scheme}://{}/{}", parts.hosts.join(","), parts.path)
            }
            Err(_) => "(not a Redis URL)".into(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisUrl").field(&self.redacted()).finish()
    }
}

impl RedisTls {
    /// Whether any file is named.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Reads the files, refusing a certificate without its key or the reverse.
    fn certificates(&self) -> Result<TlsCertificates, StoreError> {
        let client_tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read("redis_tls_cert", cert)?,
                client_key: read("redis_tls_key", key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(StoreError::Misconfigured(
                    "redis_tls_cert and redis_tls_key go together: a client certificate needs its key".into(),
                ))
            }
        };
        let root_cert = self.ca.as_deref().map(|ca| read("redis_tls_ca", ca)).transpose()?;
        Ok(TlsCertificates { client_tls, root_cert })
    }
}

impl RedisTarget {
    /// Checks `url` and reads the TLS files; connects to nothing yet.
    pub fn new(url: &RedisUrl, tls: &RedisTls) -> Result<RedisTarget, StoreError> {
        let parts = url.parts()?;
        if tls.is_set() && !parts.tls {
            return Err(StoreError::Misconfigured(
                "redis_tls_ca, redis_tls_cert and redis_tls_key apply to a rediss URL only".into(),
            ));
        }
        let certificates = if parts.tls { Some(tls.certificates()?) } else { None };
        let invalid = |_| StoreError::Misconfigured("the Redis URL is not valid".into());
        let source = match parts.topology {
            Topology::Server => {
                let info = url.expose().into_connection_info().map_err(invalid)?;
                let client = match certificates {
                    Some(certificates) if tls.is_set() => Client::build_with_tls(info, certificates),
                    _ => Client::open(info),
                };
                Source::Server(client.map_err(invalid)?)
            }
            Topology::Sentinel => Source::Sentinel(sentinels(&parts, certificates)?),
            Topology::Cluster => {
                let node = NodeTemplate { info: first_node(&parts)?, certificates: certificates.clone() };
                Source::Cluster { client: cluster(&parts, certificates)?, node }
            }
        };
        let hosts = parts.hosts.join(",");
        let address = match parts.topology {
            Topology::Server | Topology::Cluster => hosts,
            Topology::Sentinel => format!("the master the Sentinels at {hosts} name"),
        };
        // Under Sentinel a failover is automatic: one replica's copy is what
        // makes a revocation outlive its master. A cluster's failover is too,
        // but whether it has replicas is the operator's to say: the broker's
        // config asks for `redis_replica_acks` there. A single server's
        // replicas are promoted by no one Baton knows of.
        let replica_acks = u32::from(parts.topology == Topology::Sentinel);
        Ok(RedisTarget { source, topology: parts.topology, address, replica_acks })
    }

    /// What this target reaches.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Acknowledges revocations, deprovisionings and blocks only once
    /// `acks` replicas have them (`WAIT`), at most [`MAX_REPLICA_ACKS`]; by
    /// default 1 under Sentinel, else 0. For a server or cluster whose
    /// replicas may be promoted.
    pub fn with_replica_acks(mut self, acks: u32) -> RedisTarget {
        self.replica_acks = acks.min(MAX_REPLICA_ACKS);
        self
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget").field("address", &self.address).finish()
    }
}

/// The Sentinels of `parts`, asked without credentials, and the master's
/// name and connection details (the URL's credentials and database).
fn sentinels(parts: &Parts<'_>, certificates: Option<TlsCertificates>) -> Result<Sentinels, StoreError> {
    let (master, db) = sentinel_path(parts.path)?;
    let invalid = |_| StoreError::Misconfigured("the Redis Sentinel settings are not valid".into());
    let (username, password) = sentinel_credentials(parts)?;
    let sentinels = node_infos(parts, false)?
        .into_iter()
        .map(|info| {
            let mut settings = info.redis_settings().clone();
            if let Some(username) = &username {
                settings = settings.set_username(username);
            }
            if let Some(password) = &password {
                settings = settings.set_password(password);
            }
            info.set_redis_settings(settings)
        })
        .map(|info| match &certificates {
            Some(certificates) => Client::build_with_tls(info, certificates.clone()),
            None => Client::open(info),
        })
        .collect::<Result<Vec<Client>, _>>()
        .map_err(invalid)?;
    let mut template = first_node(parts)?;
    if let Some(db) = db {
        let settings = template.redis_settings().clone().set_db(db);
        template = template.set_redis_settings(settings);
    }
    Ok(Sentinels::new(sentinels, master, NodeTemplate { info: template, certificates }))
}

/// The Sentinels' own user and password, from the URL's parameters
/// `sentinel_username` and `sentinel_password`; any other parameter is a
/// mistake.
fn sentinel_credentials(parts: &Parts<'_>) -> Result<(Option<String>, Option<String>), StoreError> {
    let (mut username, mut password) = (None, None);
    for (name, value) in form_urlencoded::parse(parts.query.as_bytes()) {
        match name.as_ref() {
            "sentinel_username" => username = Some(value.into_owned()),
            "sentinel_password" => password = Some(value.into_owned()),
            // Not named: a mistyped parameter may be a password.
            _ => {
                return Err(StoreError::Misconfigured(
                    "the Redis URL has an unknown parameter: a Sentinel URL takes sentinel_username and \
                     sentinel_password"
                        .into(),
                ))
            }
        }
    }
    Ok((username, password))
}

/// The first address of `parts` with the URL's credentials: the connection
/// details every data node shares.
fn first_node(parts: &Parts<'_>) -> Result<ConnectionInfo, StoreError> {
    node_infos(parts, true)?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Misconfigured("the Redis URL names no address".into()))
}

/// A Cluster client for `parts`, starting from every node it names.
fn cluster(parts: &Parts<'_>, certificates: Option<TlsCertificates>) -> Result<ClusterClient, StoreError> {
    if !parts.path.is_empty() {
        return Err(StoreError::Misconfigured(
            "a Redis Cluster URL names no database: a cluster has only database 0".into(),
        ));
    }
    let mut builder = ClusterClientBuilder::new(node_infos(parts, true)?)
        .connection_timeout(CONNECTION_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        // Few retries: a store call is bounded anyway, and an outage should
        // fail calls quickly rather than queue them.
        .retries(2);
    if let Some(certificates) = certificates {
        builder = builder.tls(TlsMode::Secure).certs(certificates);
    }
    builder.build().map_err(|_| StoreError::Misconfigured("the Redis Cluster settings are not valid".into()))
}

/// Each address of `parts` as a one-server URL parsed by the Redis client
/// (which decodes percent-encoded credentials), with the credentials or
/// without.
fn node_infos(parts: &Parts<'_>, with_credentials: bool) -> Result<Vec<ConnectionInfo>, StoreError> {
    let scheme = if parts.tls { "rediss" } else { "redis" };
    let credentials = match parts.credentials {
        Some(credentials) if with_credentials => format!("{credentials}@"),
        _ => String::new(),
    };
    parts
        .hosts
        .iter()
        .map(|host| {
            format!("{scheme}://{credentials}{host}/")
                .into_connection_info()
                .map_err(|_| StoreError::Misconfigured("the Redis URL names an address that is not valid".into()))
        })
        .collect()
}

/// The master's name and the database, from `master[/db]`.
fn sentinel_path(path: &str) -> Result<(&str, Option<i64>), StoreError> {
    let (master, db) = path.split_once('/').unwrap_or((path, ""));
    if master.is_empty() {
        return Err(StoreError::Misconfigured(
            "a Redis Sentinel URL ends with the master's name: redis+sentinel://host:26379,…/mymaster".into(),
        ));
    }
    let db = match db.trim_end_matches('/') {
        "" => None,
        db => Some(db.parse().map_err(|_| StoreError::Misconfigured("the Redis database is not a number".into()))?),
    };
    Ok((master, db))
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|error| StoreError::Misconfigured(format!("{key}: {}: {error}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_is_read_and_nothing_else() {
        let forms = [
            ("redis://127.0.0.1:6379/", Topology::Server, false),
            ("rediss://baton:pw@redis.internal:6380/2", Topology::Server, true),
            ("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster", Topology::Sentinel, false),
            ("rediss+sentinel://u:p@10.0.0.1:26379/mymaster/1", Topology::Sentinel, true),
            ("redis+sentinel://10.0.0.1:26379/mymaster?sentinel_password=p%40ss", Topology::Sentinel, false),
            ("redis+sentinel://a:1/m/2?sentinel_username=s&sentinel_password=p", Topology::Sentinel, false),
            ("redis+cluster://10.0.0.1:7000,10.0.0.2:7000", Topology::Cluster, false),
            ("REDISS+CLUSTER://u:p@10.0.0.1:7000/", Topology::Cluster, true),
        ];
        for (url, topology, tls) in forms {
            let url = RedisUrl::new(url);
            assert_eq!(url.check().unwrap(), topology, "{url:?}");
            assert_eq!(url.is_tls(), tls, "{url:?}");
        }
        for bad in [
            "http://x/",
            "redis:/x",
            "redis://a:1,b:2/",
            "redis+sentinel://a:26379/",
            "redis+sentinel://a:26379,,b:1/m",
            "redis+sentinel://a:26379/m/zero",
            "redis+sentinel://a:26379/m?password=p",
            "redis+cluster://a:7000?sentinel_password=p",
        ] {
            assert!(RedisUrl::new(bad).check().is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_never_printed() {
        for url in [
            "rediss://baton:s3cret@redis.internal:6380/0",
            "redis+sentinel://baton:s3cret@a:26379,b:26379/mymaster",
            "redis+cluster://:s3cret@a:7000,b:7000",
            "redis+sentinel://a:26379,b:26379/mymaster?sentinel_password=s3cret",
        ] {
            let url = RedisUrl::new(url);
            let printed = format!("{url:?}");
            assert!(!printed.contains("s3cret") && !printed.contains("baton@"), "{printed}");
            let target = RedisTarget::new(&url, &RedisTls::default()).unwrap();
            let printed = format!("{target:?}");
            assert!(!printed.contains("s3cret"), "{printed}");
        }
        let url = RedisUrl::new("redis+sentinel://a:26379/mymaster");
        assert_eq!(format!("{url:?}"), r#"RedisUrl("redis+sentinel://a:26379/mymaster")"#);
        // A password that would read as an address, a path or a query is
        // refused, and printed nowhere.
        for url in ["redis://:ab/s3cret@host/0", "redis://:ab?s3cret@host/0", "redis://u:ab#s3cret@host/0"] {
            let url = RedisUrl::new(url);
            assert!(url.check().is_err(), "{url:?}");
            let printed = format!("{url:?}");
            assert!(!printed.contains("s3cret"), "{printed}");
        }
    }

    #[test]
    fn tls_files_need_a_tls_url_and_go_in_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "not used").unwrap();
        let cert_only = RedisTls { ca: None, cert: Some(pem.clone()), key: None };
        let error = RedisTarget::new(&RedisUrl::new("rediss://h:6380/"), &cert_only).unwrap_err();
        assert!(error.to_string().contains("go together"), "{error}");
        let ca = RedisTls { ca: Some(pem), cert: None, key: None };
        let error = RedisTarget::new(&RedisUrl::new("redis://h:6379/"), &ca).unwrap_err();
        assert!(error.to_string().contains("rediss"), "{error}");
        let missing = RedisTls { ca: Some(dir.path().join("absent.pem")), cert: None, key: None };
        let error = RedisTarget::new(&RedisUrl::new("rediss://h:6380/"), &missing).unwrap_err();
        assert!(error.to_string().contains("redis_tls_ca"), "{error}");
    }
}
