//! What a served broker tells operators beyond its answers: log lines on
//! standard output (text, or one JSON object a line), and when
//! `otlp_endpoint` is set, each request as an OpenTelemetry span exported
//! over OTLP/HTTP (JSON), its parent taken from the caller's W3C
//! `traceparent` (see [`crate::http`]).

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{Config, LogFormat};

/// How long spans wait to be sent together: a trace shows up within about
/// this, and one export carries many requests.
const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// The most an export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What was set up, to flush at the end.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still waiting; the log needs nothing.
    pub fn shutdown(self) {
        if let Some(traces) = self.traces {
            if let Err(error) = traces.shutdown() {
                tracing::warn!(%error, "the last spans were not exported");
            }
        }
    }
}

/// Installs the log (and trace) subscriber for the process. Exports run on
/// `runtime`, off the request path.
pub fn init(config: &Config, runtime: &tokio::runtime::Handle) -> Result<Telemetry, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = match config.log_format {
        // Colour is for people at a terminal; piped to a file or a collector
        // it would only be escape codes in the text.
        LogFormat::Text => tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal()).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let traces = config.otlp_endpoint.as_deref().map(|endpoint| exporting_to(endpoint, runtime)).transpose()?;
    // Audit records stay in the log and the store: who asked for what is not
    // sent to a trace collector, which is often run by other people.
    let not_audit = tracing_subscriber::filter::filter_fn(|metadata| metadata.target() != "baton::audit");
    let spans = traces
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("baton")).with_filter(not_audit));
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|error| format!("logging: {error}"))?;
    Ok(Telemetry { traces })
}

/// Spans batched and sent to `endpoint` (the collector's `/v1/traces` URL).
fn exporting_to(endpoint: &str, runtime: &tokio::runtime::Handle) -> Result<SdkTracerProvider, String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|error| format!("otlp_endpoint: {error}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(OnRuntime { client, runtime: runtime.clone() })
        .build()
        .map_err(|error| format!("otlp_endpoint: {error}"))?;
    let batches = BatchConfigBuilder::default().with_scheduled_delay(EXPORT_DELAY).build();
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batches).build();
    let resource = Resource::builder().with_service_name("baton").build();
    Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build())
}

/// The broker's HTTP client for the exporter, its requests run on the
/// broker's runtime: the batch processor sends from a thread of its own,
/// which has no runtime to drive them.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let mut answer = Response::builder().status(response.status().as_u16());
            for (name, value) in response.headers() {
                answer = answer.header(name.as_str(), value.as_bytes());
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(answer.body(Bytes::from(body.to_vec()))?)
        });
        sent.await?
    }
}
