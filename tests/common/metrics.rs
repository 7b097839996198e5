//! `/metrics` read by a real Prometheus parser: the OpenMetrics parser of the Python
//! `prometheus_client` package (the one in the Synapse 1.3.1 virtualenv that
//! `scripts/install-test-deps` builds), so a malformed exposition fails the test.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// One sample: its name (with `_total`, `_bucket`, … as exposed), labels and value.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A metric family with its type and samples.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Family {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub samples: Vec<Sample>,
}

const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = [{"name": f.name, "type": f.type,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
       for f in text_string_to_metric_families(sys.stdin.read())]
print(json.dumps(out))
"#;

/// Parses an OpenMetrics exposition; panics (with the parser's complaint) when it is not one.
pub fn parse(text: &str) -> Vec<Family> {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.e2e/synapse-venv/bin/python");
    assert!(
        std::path::Path::new(python).exists(),
        "the prometheus_client parser lives in the Synapse venv: run scripts/install-test-deps"
    );
    let mut child = Command::new(python)
        .args(["-W", "ignore", "-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition");
    let output = child.wait_with_output().expect("the parser finishes");
    assert!(
        output.status.success(),
        "/metrics is not valid OpenMetrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the parser's JSON")
}

/// The family called `name`, or a panic listing what there is.
pub fn family<'a>(families: &'a [Family], name: &str) -> &'a Family {
    families.iter().find(|f| f.name == name).unwrap_or_else(|| {
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        panic!("no {name} in /metrics; there are {names:?}")
    })
}

/// The sum of a family's samples named `sample` whose labels include `labels`.
pub fn sum(families: &[Family], family_name: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    family(families, family_name)
        .samples
        .iter()
        .filter(|s| s.name == sample)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}
