//! An MCP server behind Baton: the airline's operations as MCP tools, over
//! the streamable HTTP transport, each call checked by Baton's verifier.
//!
//! ```sh
//! cargo run -- serve                       # the broker, in one terminal
//! cargo run --example mcp_flights          # this server, in another
//! ```
//!
//! MCP clients find their way from the server alone: a request without a
//! token gets 401 with `resource_metadata`, that document (RFC 9728) names
//! the broker, and the broker's metadata (RFC 8414) names its token
//! endpoint. `search_flights` needs `flights.read`, which every call needs;
//! `book_flight` also needs `flights.book`, which the broker issues only
//! after a person approves. A call without a tool's scope gets 403
//! `insufficient_scope` naming the scopes to ask for, so that the client
//! exchanges its parent token again and retries. Revocation is checked on
//! every call through the broker's introspection endpoint, uncached.
//!
//! `BROKER_URL` names the broker (default `http://127.0.0.1:8080`),
//! `MCP_LISTEN` this server's address (default `127.0.0.1:9091`). The
//! server's resource identifier is `http://<MCP_LISTEN>/mcp`, which must be
//! registered in `policies/resources.toml` (the example policies register
//! the default, with dev-only introspection credentials; `MCP_CLIENT_ID` and
//! `MCP_CLIENT_SECRET`, or `MCP_CLIENT_SECRET_FILE` naming a file that holds
//! it, name others).

use std::sync::Arc;
use std::time::Duration;

use baton::claims::ScopeSet;
use baton::verifier::{metadata_routes, Caller, McpSessionsLayer, ToolScopesLayer, Verifier, VerifierLayer};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, ServerHandler};
use serde_json::{json, Value};

/// Where searching and booking stand. Every call needs the first; a booking
/// needs both.
const READ: &str = "flights.read";
const BOOK: &str = "flights.book";

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Route {
    /// Departure airport (IATA code).
    from: String,
    /// Arrival airport (IATA code).
    to: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Booking {
    /// A flight number from `search_flights`.
    flight: String,
}

#[derive(Clone)]
struct Flights {
    tool_router: ToolRouter<Self>,
}

/// The caller the verifier's layer checked for this HTTP request.
fn caller(request: &axum::http::request::Parts) -> Result<Caller, ErrorData> {
    // Absent only if the tools were served outside the layer: a server bug.
    request.extensions.get::<Caller>().cloned().ok_or_else(|| ErrorData::internal_error("no verified caller", None))
}

#[tool_router]
impl Flights {
    #[tool(description = "Find flights between two airports (needs flights.read)")]
    fn search_flights(
        &self,
        Extension(request): Extension<axum::http::request::Parts>,
        Parameters(Route { from, to }): Parameters<Route>,
    ) -> Result<String, ErrorData> {
        let caller = caller(&request)?;
        println!("mcp_flights: search {from}->{to} for {} by {}", caller.subject(), through(&caller));
        let flights = ["BT101", "BT205"].map(|flight| json!({ "flight": flight, "from": from, "to": to }));
        Ok(json!({ "flights": flights, "caller": who(&caller) }).to_string())
    }

    #[tool(description = "Book a flight (needs flights.book, which a person approves)")]
    fn book_flight(
        &self,
        Extension(request): Extension<axum::http::request::Parts>,
        Parameters(Booking { flight }): Parameters<Booking>,
    ) -> Result<String, ErrorData> {
        let caller = caller(&request)?;
        println!("mcp_flights: booking {flight} for {} by {}", caller.subject(), through(&caller));
        Ok(json!({
            "booked": true,
            "flight": flight,
            "for": caller.subject(),
            "by": caller.agent(),
            "chain": caller.chain(),
        })
        .to_string())
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Flights {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions("Search and book flights; every call is authorized by Baton")
    }
}

fn who(caller: &Caller) -> Value {
    json!({ "agent": caller.agent(), "subject": caller.subject(), "chain": caller.chain() })
}

/// The agents on the way here, newest first: `booker <- planner`.
fn through(caller: &Caller) -> String {
    let chain: Vec<&str> = caller.chain().iter().map(|agent| agent.as_str()).collect();
    match chain.is_empty() {
        true => caller.agent().to_string(),
        false => chain.join(" <- "),
    }
}

fn scopes(text: &str) -> Result<ScopeSet, String> {
    ScopeSet::parse(text).map_err(|error| error.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let issuer = std::env::var("BROKER_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let listen = std::env::var("MCP_LISTEN").unwrap_or_else(|_| "127.0.0.1:9091".into());
    let resource = format!("http://{listen}/mcp");
    let client_id = std::env::var("MCP_CLIENT_ID").unwrap_or_else(|_| "flights-mcp".into());
    let client_secret = baton::config::secret_variable("MCP_CLIENT_SECRET", |name| std::env::var(name).ok())
        .map_err(|error| error.to_string())?
        .unwrap_or_else(|| "dev-only-flights-mcp-secret".into());
    let verifier = Arc::new(
        Verifier::builder(&issuer)
            .audience(&resource)
            .require_scopes(scopes(READ)?)
            .scopes_supported(scopes(&format!("{READ} {BOOK}"))?)
            .resource_name("Flights MCP server")
            .publish_metadata()
            // Uncached: a revoked chain is refused on its very next call.
            .introspection(client_id, client_secret, Duration::ZERO)
            .build()
            .map_err(|error| error.to_string())?,
    );
    let mcp = StreamableHttpService::new(
        || Ok(Flights { tool_router: Flights::tool_router() }),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    // Layers run outside in: the token first, then the tool's own scopes
    // (every tool is listed: one left out could not be called at all), then
    // the session, which serves only the caller that opened it.
    let tools = axum::Router::new()
        .nest_service("/mcp", mcp)
        .layer(McpSessionsLayer::default())
        .layer(
            ToolScopesLayer::new(verifier.clone())
                .tool("search_flights", ScopeSet::default())
                .tool("book_flight", scopes(BOOK)?),
        )
        .layer(VerifierLayer::new(verifier.clone()));
    let app = tools.merge(metadata_routes(verifier));
    let listener =
        tokio::net::TcpListener::bind(&listen).await.map_err(|error| format!("listen on {listen}: {error}"))?;
    println!("flights MCP server on {resource}, trusting {issuer}");
    axum::serve(listener, app).await.map_err(|error| error.to_string())
}
