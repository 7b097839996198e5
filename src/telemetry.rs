//! Logging: tracing with JSON lines for production or pretty output for a terminal.
//! Nothing here ever formats a token, client secret, password or `Authorization` header:
//! handlers log masked addresses and outcomes only.

use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Installs the global subscriber (once, from `main`).
pub fn init(config: &Log) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
}
