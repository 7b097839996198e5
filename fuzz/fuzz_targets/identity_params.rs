//! The identity listener's parameters (`matrix::Params::parse`): a query string and a
//! body, JSON or a form. Never panics; a refusal is only for a JSON body that is not a
//! JSON object (400 `M_NOT_JSON`/`M_BAD_JSON`); body values win over query values.
//!
//! Input: a first line of flags (`f`: the body is a form; `q`: the next line is the query
//! string), then the body. Seeds: `q\nsid=1&client_secret=x\n{"token":"…"}`, …
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use threepid_sidecar::matrix::{Params, parse_object};

/// The names the identity routes read, checked whatever the input holds.
const NAMES: [&str; 7] = [
    "sid",
    "client_secret",
    "token",
    "medium",
    "address",
    "mxid",
    "send_attempt",
];

fuzz_target!(|data: &[u8]| {
    let (head, rest) = split_line(data);
    let form = head.contains(&b'f');
    let (query, body) = if head.contains(&b'q') {
        let (query, body) = split_line(rest);
        (Some(String::from_utf8_lossy(query)), body)
    } else {
        (None, rest)
    };

    let params = match Params::parse(query.as_deref(), form, body) {
        Ok(params) => params,
        Err(e) => {
            assert!(!form, "a form is never refused");
            assert_eq!(e.status, 400);
            assert!(matches!(e.errcode, "M_NOT_JSON" | "M_BAD_JSON"), "{e}");
            assert!(parse_object(body).is_err());
            return;
        }
    };

    // What the parameters should be: the query's, then the body's on top (last wins).
    let mut expected: HashMap<String, String> = query
        .as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if form {
        expected.extend(form_urlencoded::parse(body).into_owned());
    } else if let Ok(object) = parse_object(body) {
        for (key, value) in object {
            match value {
                Value::String(s) => expected.insert(key, s),
                Value::Number(n) => expected.insert(key, n.to_string()),
                _ => None,
            };
        }
    }
    for (key, value) in &expected {
        assert_eq!(params.get(key), Some(value.as_str()), "{key:?}");
    }
    for key in NAMES {
        assert_eq!(
            params.get(key),
            expected.get(key).map(String::as_str),
            "{key}"
        );
        assert_eq!(params.required(key).is_ok(), expected.contains_key(key));
        assert_eq!(
            params.required_plural(key).is_ok(),
            expected.contains_key(key)
        );
    }
});

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
