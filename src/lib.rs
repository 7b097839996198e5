//! threepid-sidecar: MSC2263 for legacy Matrix homeservers. A reverse proxy that answers
//! `/requestToken` and friends itself, verifies email addresses and phone numbers, and
//! lets the homeserver complete registration, password reset and add-3PID by answering
//! its identity-server callbacks. Everything else is forwarded unchanged.
//!
//! The modules, from the bottom layer up (`scripts/check-modules --layers` prints the graph's
//! layers and keeps it free of cycles; ARCHITECTURE.md explains them):
//!
//! - vocabulary, importing nothing of ours: [`threepid`] (media, purposes, notices),
//!   [`token`], [`matrix`] (bodies and errors), [`metrics`], [`i18n`];
//! - settings and rules without I/O: [`config`], [`validate`], [`ratelimit`], [`policy`],
//!   [`compat`], [`templates`];
//! - the outside world: [`redis_link`], [`session`] (the store), [`outbox`], [`delivery`]
//!   (SMTP, SMS), [`tls`], [`proxy`] (the homeserver);
//! - serving: [`state`] (what handlers share), [`routes`], [`server`] (listeners and
//!   connections), [`startup`] ([`start`] and [`run`]), [`telemetry`];
//! - beside serving: [`toolkit`] (`doctor`, `send-test`, `templates render`).
#![forbid(unsafe_code)]

pub mod compat;
pub mod config;
pub mod delivery;
pub mod i18n;
pub mod matrix;
pub mod metrics;
pub mod outbox;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod redis_link;
pub mod routes;
pub mod server;
pub mod session;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod templates;
pub mod threepid;
pub mod tls;
pub mod token;
pub mod toolkit;
pub mod validate;

pub use startup::{Running, StartError, run, start};
pub use state::AppState;
