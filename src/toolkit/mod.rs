//! The operator's tools, beside `run` and `check-config`: [`doctor`] checks the whole chain a
//! deployment depends on (config, homeserver, identity listener, store, mail, SMS, templates)
//! and sends nothing; [`send_test`] sends one real message through the configured transport;
//! [`render`] writes every message and page to files, for looking at before users see them.
//!
//! Each tool reads the config as the sidecar does and reuses its parts (the upstream client,
//! the Redis link, the SMTP client, the templates); nothing here is used by the running
//! sidecar. Output never holds a secret or a full address.

pub mod doctor;
pub mod render;
pub mod send_test;

use std::future::Future;
use std::time::Duration;

/// How long any one network step of the tools may take.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);

/// The sample values a test message and a preview are filled with: no session has them.
pub mod sample {
    /// The session a sample link names.
    pub const SID: &str = "SampleSessionId0123456789";
    pub const CLIENT_SECRET: &str = "sample-client-secret";
    /// An email token's shape: 32 letters and digits.
    pub const EMAIL_TOKEN: &str = "SampleEmailToken0123456789abcdef";
    /// An SMS code's shape: 6 digits.
    pub const SMS_CODE: &str = "123456";
    /// When a notice's change happened.
    pub const TIME: &str = "2026-01-01 00:00 UTC";
    /// The network a notice's change came from, as notices hide it.
    pub const CLIENT_IP: &str = "203.0.113.*";
}

/// Runs a tool's future on a runtime of its own (the tools run once and exit).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built at start-up")
        .block_on(future)
}
