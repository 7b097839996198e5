//! Fixtures shared by the test binaries (`tests/it`, `tests/e2e`): real services started as
//! processes on free loopback ports. Each binary uses only some of them.
#![allow(dead_code)]

pub mod http;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod ports;
pub mod redis;
pub mod serve;
pub mod sidecar;
pub mod smtp;
pub mod synapse;
pub mod upstream;
pub mod webhook;

/// Waits until `condition` holds, polling every 50 ms; fails the test after `limit`.
pub async fn eventually<F, Fut>(limit: std::time::Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {limit:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
