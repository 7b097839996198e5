//! The `/versions` rewrite (`routes::versions::inject_flag`) on any bytes.
//!
//! - `None` exactly when the body is not a JSON object, or its `unstable_features` is not
//!   an object (replacing it would destroy data).
//! - When `Some`: the output parses, `unstable_features["m.require_identity_server"]` is
//!   `false`, and every other member, top level and in `unstable_features`, is kept with
//!   its value and in its order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use threepid_sidecar::routes::versions::{FLAG, inject_flag};

fuzz_target!(|data: &[u8]| {
    let input: Option<Map<String, Value>> = serde_json::from_slice(data).ok();
    let output = inject_flag(data);
    let Some(input) = input else {
        assert!(output.is_none(), "not an object, not rewritten");
        return;
    };
    let features_in = match input.get("unstable_features") {
        None => None,
        Some(Value::Object(features)) => Some(features),
        Some(_) => {
            assert!(
                output.is_none(),
                "a non-object unstable_features is left alone"
            );
            return;
        }
    };
    let output = output.expect("an object is rewritten");
    let output: Map<String, Value> =
        serde_json::from_slice(&output).expect("the rewritten answer parses");

    // The same members in the same order, unstable_features appended when it was absent.
    let mut keys_in: Vec<&String> = input.keys().collect();
    if features_in.is_none() {
        keys_in.push(output.keys().next_back().expect("not empty"));
    }
    assert_eq!(keys_in, output.keys().collect::<Vec<_>>());
    for (key, value) in &input {
        if key != "unstable_features" {
            assert_eq!(&output[key], &reprinted(value), "{key}");
        }
    }

    let features_out = output["unstable_features"]
        .as_object()
        .expect("unstable_features is an object");
    assert_eq!(features_out.get(FLAG), Some(&Value::Bool(false)));
    let empty = Map::new();
    let features_in = features_in.unwrap_or(&empty);
    let mut keys_in: Vec<&String> = features_in.keys().collect();
    if !features_in.contains_key(FLAG) {
        keys_in.push(features_out.keys().next_back().expect("not empty"));
    }
    assert_eq!(keys_in, features_out.keys().collect::<Vec<_>>());
    for (key, value) in features_in {
        if key != FLAG {
            assert_eq!(
                &features_out[key],
                &reprinted(value),
                "unstable_features.{key}"
            );
        }
    }
});

/// A value as it reads after being printed: the output is printed, then parsed here, and
/// serde_json's parse of a printed 17-digit float can differ from the float in its last
/// bit (without its `float_roundtrip` feature).
fn reprinted(value: &Value) -> Value {
    serde_json::from_slice(&serde_json::to_vec(value).unwrap()).unwrap()
}
