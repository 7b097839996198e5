//! The Node.js the tests run JavaScript with (`tests/browser/`, `tests/clients/js/`): the pinned
//! Node 22 that `scripts/install-test-deps` installs at `.e2e/node/`, never whatever `node` the
//! machine has on PATH (Debian 12's is 18, too old for matrix-js-sdk 43 and playwright-core).

use std::path::PathBuf;
use std::process::Command;

/// `.e2e/node/bin`: the pinned `node`, with its `npm` and `npx`.
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".e2e/node/bin")
}

/// `.e2e/node/bin/node`.
pub fn node_path() -> PathBuf {
    bin_dir().join("node")
}

/// A command running the pinned `node`, with its bin folder first on PATH (so that a script
/// starting `node`, `npm` or `npx` gets the same Node). Panics, saying what to run, when
/// `scripts/install-test-deps` has not installed it.
pub fn node() -> Command {
    let node = node_path();
    assert!(
        node.is_file(),
        "Node.js missing at {}: run scripts/install-test-deps (it installs the pinned Node 22 there)",
        node.display()
    );
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin_dir()).chain(std::env::split_paths(&path)))
        .expect("PATH entries without a ':'");
    let mut command = Command::new(node);
    command.env("PATH", path);
    command
}
