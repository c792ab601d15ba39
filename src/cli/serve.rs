//! `baton serve`: logging and a runtime, then the application.

use crate::config::Config;

pub(super) fn run(config: Config) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let runtime = tokio::runtime::Runtime::new().map_err(|error| error.to_string())?;
    runtime.block_on(crate::app::serve(config))
}
