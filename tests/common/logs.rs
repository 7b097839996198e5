//! Captures everything the in-process sidecar logs (all levels down to debug, JSON), so a
//! test can assert that no token, client secret or password ever reached a log line.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("log buffer lock")
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static CAPTURED: OnceLock<Buffer> = OnceLock::new();

/// Installs the capturing subscriber for this test binary (once).
pub fn capture() {
    CAPTURED.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .init();
        buffer
    });
}

/// Everything logged so far.
pub fn text() -> String {
    let buffer = CAPTURED.get().expect("logs::capture() was called");
    String::from_utf8_lossy(&buffer.0.lock().expect("log buffer lock")).into_owned()
}

/// Panics if any of `secrets` appears in the captured logs.
pub fn assert_none_of(secrets: &[&str]) {
    let logs = text();
    assert!(
        !logs.is_empty(),
        "nothing was logged: is capture() installed?"
    );
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "a secret reached the logs: {secret:?}"
        );
    }
}
