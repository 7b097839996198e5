//! threepid-sidecar: MSC2263 for legacy Matrix homeservers. A reverse proxy that answers
//! `/requestToken` and friends itself, verifies email addresses and phone numbers, and
//! lets the homeserver complete registration, password reset and add-3PID by answering
//! its identity-server callbacks. Everything else is forwarded unchanged.
#![forbid(unsafe_code)]

pub mod config;
pub mod delivery;
pub mod matrix;
pub mod session;
pub mod templates;
pub mod token;
