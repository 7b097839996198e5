//! The operator's tools, beside `run` and `check-config`: [`doctor`] checks the whole chain a
//! deployment depends on (config, homeserver, identity listener, store, mail, SMS, templates)
//! and sends nothing; [`send_test`] sends one real message through the configured transport;
//! [`render`] writes every message and page to files, for looking at before users see them.
//!
//! Each tool reads the config as the sidecar does and reuses its parts (the upstream client,
//! the Redis link, the SMTP client, the templates); nothing here is used by the running
//! sidecar. Output never holds a secret or a full address.

pub mod doctor;

use std::future::Future;
use std::time::Duration;

/// How long any one network step of the tools may take.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a tool's future on a runtime of its own (the tools run once and exit).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built at start-up")
        .block_on(future)
}
