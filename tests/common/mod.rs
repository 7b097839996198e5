//! Fixtures shared by the test binaries (`tests/it`, `tests/e2e`): real services started as
//! processes on free loopback ports. Each binary uses only some of them.
#![allow(dead_code)]

pub mod http;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod redis;
pub mod serve;
pub mod sidecar;
pub mod smtp;
pub mod synapse;
pub mod upstream;
pub mod webhook;
