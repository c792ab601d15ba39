//! `baton serve`: logging and a runtime, then the application.

use std::io::IsTerminal;

use crate::config::{Config, LogFormat};

pub(super) fn run(config: Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        // Colour is for people at a terminal; piped to a file or a collector
        // it would only be escape codes in the text.
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|error| error.to_string())?;
    runtime.block_on(crate::app::serve(config))
}
