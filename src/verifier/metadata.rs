//! RFC 9728 protected resource metadata: what an API behind the verifier
//! tells clients about itself, above all which authorization server issues
//! its tokens. MCP clients start here: a 401 names this document, the
//! document names Baton, and Baton's own metadata (RFC 8414) does the rest.

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::Verifier;
use crate::claims::ScopeSet;
use crate::keys::Algorithm;

/// RFC 9728 §3: the well-known path, put between an identifier's host and path.
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata document (RFC 9728 §2), with what Baton's tokens need.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceMetadata {
    /// The API's identifier: the `aud` of its tokens, and the `resource` a
    /// client asks for (RFC 8707).
    pub resource: String,
    /// The issuer that mints the API's tokens.
    pub authorization_servers: Vec<String>,
    /// The scopes the API's operations ask for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    /// Tokens come in the `Authorization` header only (RFC 6750 §2.1).
    pub bearer_methods_supported: Vec<String>,
    /// The proof algorithms accepted for DPoP-bound tokens (RFC 9449).
    pub dpop_signing_alg_values_supported: Vec<String>,
    /// A name for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
}

impl ResourceMetadata {
    pub(super) fn new(resource: &str, issuer: &str, scopes: &ScopeSet, name: Option<String>) -> Self {
        ResourceMetadata {
            resource: resource.to_owned(),
            authorization_servers: vec![issuer.to_owned()],
            scopes_supported: scopes.iter().map(ToString::to_string).collect(),
            bearer_methods_supported: vec!["header".to_owned()],
            dpop_signing_alg_values_supported: crate::dpop::ALGORITHMS
                .map(Algorithm::name)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            resource_name: name,
        }
    }
}

/// RFC 9728 §3.1: the metadata URL of an http(s) identifier, the well-known
/// path inserted between its host and its path; none for another kind of
/// identifier, or one with a query or fragment (§1.2 forbids them).
pub(super) fn well_known_url(resource: &str) -> Option<String> {
    let url = url::Url::parse(resource).ok()?;
    if !matches!(url.scheme(), "https" | "http") || url.query().is_some() || url.fragment().is_some() {
        return None;
    }
    let path = url.path().trim_end_matches('/');
    Some(format!("{}{WELL_KNOWN}{path}", url.origin().ascii_serialization()))
}

/// Whether the metadata can be served at `url` by [`metadata_routes`]: an
/// absolute http(s) URL without query or fragment, whose path no router
/// reads as a parameter (`:name`, `*rest`, `{name}`) and is not the bare
/// well-known path, which is served anyway.
pub(super) fn is_servable(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else { return false };
    let plain = url.path_segments().is_some_and(|mut segments| {
        segments.all(|segment| !segment.is_empty() && !segment.starts_with([':', '*']) && !segment.contains(['{', '}']))
    });
    matches!(url.scheme(), "https" | "http") && url.query().is_none() && url.fragment().is_none() && plain
}

/// The routes that publish the verifier's metadata: at the path of its
/// metadata URL (for the well-known URL, the identifier's path after the
/// well-known one, RFC 9728 §3.1) and at the bare well-known path, which MCP
/// clients try when the first is missing. Mount them outside the verifier's
/// layer: they are public. Nothing is served unless the verifier was built
/// to publish ([`super::VerifierBuilder::publish_metadata`]). Because of the
/// bare path, one host publishes one verifier's metadata.
pub fn metadata_routes(verifier: Arc<Verifier>) -> Router {
    let Some(path) = verifier.metadata_url().and_then(|url| url::Url::parse(url).ok()).map(|url| url.path().to_owned())
    else {
        return Router::new();
    };
    let serve = move || {
        let verifier = verifier.clone();
        async move { ([(header::CACHE_CONTROL, "max-age=300")], Json(verifier.metadata().clone())).into_response() }
    };
    let router = Router::new().route(WELL_KNOWN, get(serve.clone()));
    if path == WELL_KNOWN {
        router
    } else {
        router.route(&path, get(serve))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_url_puts_the_well_known_path_before_the_identifiers_path() {
        // RFC 9728 §3.1's own example, and the forms an API's identifier takes.
        assert_eq!(
            well_known_url("https://resource.example.com/resource1").as_deref(),
            Some("https://resource.example.com/.well-known/oauth-protected-resource/resource1")
        );
        assert_eq!(
            well_known_url("https://api.airline.example").as_deref(),
            Some("https://api.airline.example/.well-known/oauth-protected-resource")
        );
        assert_eq!(
            well_known_url("http://127.0.0.1:9091/mcp/").as_deref(),
            Some("http://127.0.0.1:9091/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(well_known_url("urn:example:api"), None);
        assert_eq!(well_known_url("https://api.example/?tenant=a"), None);
    }

    #[test]
    fn the_document_names_the_issuer_and_omits_what_is_empty() {
        let scopes = ScopeSet::parse("flights.read flights.book").unwrap();
        let document = ResourceMetadata::new("http://127.0.0.1:9091/mcp", "http://issuer.example", &scopes, None);
        let json = serde_json::to_value(&document).unwrap();
        assert_eq!(json["resource"], "http://127.0.0.1:9091/mcp");
        assert_eq!(json["authorization_servers"], serde_json::json!(["http://issuer.example"]));
        assert_eq!(json["scopes_supported"], serde_json::json!(["flights.book", "flights.read"]));
        assert_eq!(json["bearer_methods_supported"], serde_json::json!(["header"]));
        assert!(json.get("resource_name").is_none());
        let bare = ResourceMetadata::new("https://api.example", "http://issuer.example", &ScopeSet::default(), None);
        assert!(serde_json::to_value(&bare).unwrap().get("scopes_supported").is_none());
    }

    #[test]
    fn only_an_api_that_publishes_names_its_metadata() {
        use crate::verifier::{danger, BuildError};
        let builder = || danger::without_revocation_check(Verifier::builder("http://issuer.example"));
        let quiet = builder().audience("https://api.example/v1").build().unwrap();
        assert_eq!(quiet.metadata_url(), None);
        let published = builder().audience("https://api.example/v1").publish_metadata().build().unwrap();
        assert_eq!(published.metadata_url(), Some("https://api.example/.well-known/oauth-protected-resource/v1"));
        let elsewhere = builder().audience("urn:example:api").metadata_url("https://api.example/meta").build().unwrap();
        assert_eq!(elsewhere.metadata_url(), Some("https://api.example/meta"));
        let nowhere = builder().audience("urn:example:api").publish_metadata().build();
        assert!(matches!(nowhere, Err(BuildError::MetadataUrl)));
        // Paths a router would read as parameters, or not a URL at all: refused
        // when built, not found out when the routes are.
        for url in ["https://api.example/:meta", "https://api.example/*meta", "/meta", "urn:x", "https://a.example//m"]
        {
            let built = builder().audience("https://api.example").metadata_url(url).build();
            assert!(matches!(built, Err(BuildError::MetadataUrl)), "{url}");
        }
        let wild = builder().audience("https://api.example/*x").publish_metadata().build();
        assert!(matches!(wild, Err(BuildError::MetadataUrl)));
    }

    #[tokio::test]
    async fn the_routes_serve_the_document_where_the_verifier_says() {
        use tower::ServiceExt;
        let builder = || crate::verifier::danger::without_revocation_check(Verifier::builder("http://issuer.example"));
        let status = |router: Router, path: &'static str| async move {
            let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
            router.oneshot(request).await.unwrap().status().as_u16()
        };
        let quiet = Arc::new(builder().audience("https://api.example/v1").build().unwrap());
        assert_eq!(status(metadata_routes(quiet), WELL_KNOWN).await, 404);
        let published = || Arc::new(builder().audience("https://api.example/v1").publish_metadata().build().unwrap());
        assert_eq!(status(metadata_routes(published()), "/.well-known/oauth-protected-resource/v1").await, 200);
        assert_eq!(status(metadata_routes(published()), WELL_KNOWN).await, 200);
        let elsewhere = || {
            Arc::new(
                builder().audience("https://api.example").metadata_url("https://api.example/meta").build().unwrap(),
            )
        };
        assert_eq!(status(metadata_routes(elsewhere()), "/meta").await, 200);
        let bare = Arc::new(builder().audience("https://api.example").publish_metadata().build().unwrap());
        assert_eq!(status(metadata_routes(bare), WELL_KNOWN).await, 200);
    }
}
