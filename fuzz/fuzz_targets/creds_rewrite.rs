//! The creds rewrite (`routes::creds::find_creds` + `rewrite`) on any JSON body.
//!
//! - A body naming no session of ours is unchanged, byte for byte once printed.
//! - The rewrite does exactly what DESIGN §1 step 4 says and nothing else: the result is
//!   compared with a small independent model of the rule, so every unknown field (at the
//!   top level, in `auth`, in the creds objects, in lists) survives unchanged.
//! - It reports a change exactly when `find_creds` found a pair that is ours.
//!
//! Which sessions are "ours": first every pair whose sid starts with `O` (the seeds use
//! `OURS` and `THEIRS`), then every pair found.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use threepid_sidecar::matrix::parse_object;
use threepid_sidecar::routes::creds::{self, Creds};

const NAME: &str = "id.sidecar.example.org:8090";

fuzz_target!(|data: &[u8]| {
    let Ok(body) = parse_object(data) else {
        return;
    };
    let found = creds::find_creds(&body);
    for creds in &found {
        assert!(
            found.iter().filter(|c| *c == creds).count() == 1,
            "found once"
        );
    }

    let mut untouched = body.clone();
    assert!(!creds::rewrite(&mut untouched, NAME, |_| false));
    assert_eq!(
        serde_json::to_vec(&untouched).unwrap(),
        serde_json::to_vec(&body).unwrap(),
        "a body naming no session of ours is unchanged"
    );

    let selections: [&dyn Fn(&Creds) -> bool; 2] = [&|c| c.sid.starts_with('O'), &|_| true];
    for is_ours in selections {
        let mut rewritten = body.clone();
        let changed = creds::rewrite(&mut rewritten, NAME, is_ours);
        assert_eq!(
            changed,
            found.iter().any(is_ours),
            "changed iff a pair is ours"
        );
        let (expected, model_changed) = model(&body, is_ours);
        assert_eq!(changed, model_changed);
        assert_eq!(
            Value::Object(rewritten.clone()),
            Value::Object(expected),
            "the rewrite touches only id_server, id_access_token and bind*"
        );
        if !changed {
            assert_eq!(
                serde_json::to_vec(&rewritten).unwrap(),
                serde_json::to_vec(&body).unwrap()
            );
        }
        // Every key of the input is still there but for a removed id_access_token.
        assert!(
            body.keys()
                .all(|k| k == "id_access_token" || rewritten.contains_key(k))
        );
    }
});

/// The rule, written out again: the creds places, by every spelling; an object there (or
/// in a list there) whose `sid` and `client_secret`/`clientSecret` are strings and ours
/// gets `id_server` and loses `id_access_token`; then `bind*` present become false.
fn model(
    body: &Map<String, Value>,
    is_ours: &dyn Fn(&Creds) -> bool,
) -> (Map<String, Value>, bool) {
    let mut out = body.clone();
    let mut changed = false;
    let mut fix = |object: &mut Map<String, Value>| {
        let sid = object.get("sid").and_then(Value::as_str);
        let secret = object
            .get("client_secret")
            .or_else(|| object.get("clientSecret"))
            .and_then(Value::as_str);
        if let (Some(sid), Some(secret)) = (sid, secret) {
            let creds = Creds {
                sid: sid.to_owned(),
                client_secret: secret.to_owned(),
            };
            if is_ours(&creds) {
                object.insert("id_server".into(), NAME.into());
                object.remove("id_access_token");
                changed = true;
            }
        }
    };
    let fix_value = |value: &mut Value, fix: &mut dyn FnMut(&mut Map<String, Value>)| match value {
        Value::Object(object) => fix(object),
        Value::Array(items) => items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(fix),
        _ => {}
    };
    if let Some(Value::Object(auth)) = out.get_mut("auth") {
        for name in ["threepid_creds", "threepidCreds"] {
            if let Some(value) = auth.get_mut(name) {
                fix_value(value, &mut fix);
            }
        }
    }
    for name in ["three_pid_creds", "threePidCreds"] {
        if let Some(value) = out.get_mut(name) {
            fix_value(value, &mut fix);
        }
    }
    fix(&mut out);
    if changed {
        for name in ["bind", "bind_email", "bind_msisdn"] {
            if let Some(value) = out.get_mut(name) {
                *value = Value::Bool(false);
            }
        }
    }
    (out, changed)
}
