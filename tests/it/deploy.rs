//! The deployment files (Dockerfile, deploy/kubernetes, deploy/systemd) through
//! `scripts/check-deploy`: kustomize renders, Kubernetes schema validation, hadolint,
//! systemd-analyze, and — with this build's binary — every shipped config through
//! `check-config` and the identity certificate as Synapse 1.3.1 verifies it.

use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_threepid-sidecar");

#[test]
fn the_deployment_files_pass_scripts_check_deploy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("bash")
        .arg(root.join("scripts/check-deploy"))
        .current_dir(root)
        .env("THREEPID_SIDECAR_BIN", BIN)
        .env_remove("THREEPID_SIDECAR_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("bash runs scripts/check-deploy");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "scripts/check-deploy failed ({}): the Dockerfile, deploy/kubernetes or deploy/systemd \
         no longer pass their checks; the FAIL lines below say which (rerun with \
         `scripts/check-deploy`, CHECK_DEPLOY_VERBOSE=1 lists every check)\n\
         --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
}
