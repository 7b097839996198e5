//! Loopback ports for servers a test must name before they bind: a port written into a
//! config or a link up front, a Redis restarted on the same port, a port nothing listens on.
//!
//! Asking the kernel (`bind 127.0.0.1:0`, then closing) is not enough: the port comes from
//! the ephemeral range, and between the close and the server's own bind any outgoing
//! connection of a test running beside it may take it (CI saw `Address already in use` on a
//! sidecar's client port). So ports are picked *below* the ephemeral range, where the kernel
//! never hands out ports by itself; a process-wide counter keeps this process's picks apart,
//! and each pick is checked bindable.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port picked; below it live well-known and registered services.
const LOWEST: u32 = 10_000;

/// A loopback port nothing listens on now, and that the kernel will not hand to a
/// connection or to a `:0` bind.
pub fn free_port() -> u16 {
    let Some((low, span)) = below_ephemeral() else {
        return kernel_port();
    };
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    // Processes (nextest runs one per test) start at different places.
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(7_919)));
    for _ in 0..span {
        let port = (low + next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    kernel_port()
}

/// [`free_port`] as `127.0.0.1:<port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

/// `[LOWEST, first ephemeral port)` as (start, length), when that range is worth using.
fn below_ephemeral() -> Option<(u32, u32)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let first: u32 = range.split_whitespace().next()?.parse().ok()?;
    let span = first.checked_sub(LOWEST)?;
    (span >= 1_000).then_some((LOWEST, span))
}

/// The kernel's choice, for machines whose ephemeral range leaves no room below it.
fn kernel_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a loopback port can be bound")
        .port()
}
