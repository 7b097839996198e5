//! Fault drills: the sidecar under load while Redis or the homeserver restarts, SIGTERM
//! with requests in flight, idle and slowloris connections, and oversized input. Each drill
//! prints its figures (past the output capture: they show in every run) and asserts what
//! must hold.
//! Drills run one at a time (they measure time and load the machine); see docs/drills.md.

#[path = "../common/mod.rs"]
mod common;
mod oversized;
mod redis_restart;
mod sigterm;
mod slowloris;
mod support;
mod upstream;
mod upstream_restart;
