//! `baton serve`: a runtime, logging (and traces), then the application.

use crate::config::Config;

pub(super) fn run(config: Config) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|error| error.to_string())?;
    let telemetry = crate::telemetry::init(&config, runtime.handle())?;
    let served = runtime.block_on(crate::app::serve(config));
    // The runtime's workers still run the last export this waits for.
    telemetry.shutdown();
    served
}
