//! Properties of the pure rules (STYLE §5), checked on generated inputs with proptest:
//! unknown fields survive every rewrite (creds and `/versions`), a rewrite never changes a
//! body that names no session of ours, email canonicalisation is idempotent and clean,
//! `client_secret` accepts exactly the spec's pattern, and the v3→r0 mapping changes the
//! prefix and nothing else. The cargo-fuzz targets under `fuzz/` check the same rules on
//! arbitrary bytes (docs/fuzzing.md); inputs they found are pinned here as plain tests.
//!
//! Case counts are kept small so that the whole file runs in a few seconds.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use threepid_sidecar::compat::map_path;
use threepid_sidecar::routes::creds::{self, Creds};
use threepid_sidecar::routes::versions::{FLAG, inject_flag};
use threepid_sidecar::validate;

const ID_SERVER_NAME: &str = "id.sidecar.example.org:8090";
const OURS: &str = "OURS";

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are pinned as named tests below, not in a proptest-regressions file.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Any JSON value, a few levels deep. Numbers are integers or short decimals: a JSON
/// number with 17 significant digits does not always survive a parse/print round trip in
/// serde_json (without its `float_roundtrip` feature), whoever does the rewriting.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1_000_000i32..1_000_000, 0u32..4)
            .prop_map(|(n, e)| Value::from(f64::from(n) / 10f64.powi(e as i32))),
        "\\PC{0,12}".prop_map(Value::String),
        // Strings that look like the keys and values of the rules themselves.
        prop_oneof![
            Just("sid"),
            Just("client_secret"),
            Just("id_server"),
            Just("m.require_identity_server"),
            Just(OURS),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A member name: mostly identifier-like, sometimes any text, sometimes one of the names
/// the rules look at.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z_][a-zA-Z0-9_.]{0,10}",
        1 => "\\PC{0,8}",
        1 => prop_oneof![
            Just("auth"), Just("threepid_creds"), Just("threepidCreds"),
            Just("three_pid_creds"), Just("threePidCreds"), Just("sid"),
            Just("client_secret"), Just("clientSecret"), Just("id_server"),
            Just("id_access_token"), Just("bind"), Just("bind_email"),
            Just("unstable_features"),
        ]
        .prop_map(str::to_owned),
    ]
}

/// The names the creds rewrite reads or writes at some level: extra fields avoid them.
const CREDS_NAMES: [&str; 13] = [
    "auth",
    "threepid_creds",
    "threepidCreds",
    "three_pid_creds",
    "threePidCreds",
    "sid",
    "client_secret",
    "clientSecret",
    "id_server",
    "id_access_token",
    "bind",
    "bind_email",
    "bind_msisdn",
];

/// Extra members with names the creds rewrite does not look at.
fn unknown_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec(
        (
            key().prop_filter("a name the rewrite uses", |k| {
                !CREDS_NAMES.contains(&k.as_str())
            }),
            any_json(),
        ),
        0..4,
    )
}

/// Where the creds sit in a body, as clients and homeservers have sent them.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// `/register`, `/account/password`: `auth.threepid_creds`.
    AuthSnake,
    /// Older clients: `auth.threepidCreds`.
    AuthCamel,
    /// `/account/3pid`: `three_pid_creds`.
    ThreePidCreds,
    /// The oldest spelling: `threePidCreds`, a list.
    ThreePidCredsList,
    /// `/account/3pid/add`: the body itself.
    TopLevel,
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        Just(Place::AuthSnake),
        Just(Place::AuthCamel),
        Just(Place::ThreePidCreds),
        Just(Place::ThreePidCredsList),
        Just(Place::TopLevel),
    ]
}

/// A body with creds at `place` naming `sid`, and the extra fields at the top level, in
/// `auth` and in the creds object.
fn creds_body(
    place: Place,
    sid: &str,
    top: &[(String, Value)],
    in_auth: &[(String, Value)],
    in_creds: &[(String, Value)],
) -> Map<String, Value> {
    let mut creds = Map::new();
    creds.insert("sid".into(), sid.into());
    creds.insert("client_secret".into(), "cs".into());
    creds.insert("id_server".into(), "matrix.org".into());
    creds.insert("id_access_token".into(), "tok".into());
    creds.extend(in_creds.iter().cloned());
    let mut body = Map::new();
    body.insert("bind".into(), true.into());
    match place {
        Place::AuthSnake | Place::AuthCamel => {
            let name = match place {
                Place::AuthSnake => "threepid_creds",
                _ => "threepidCreds",
            };
            let mut auth = Map::new();
            auth.insert("type".into(), "m.login.email.identity".into());
            auth.insert(name.into(), Value::Object(creds));
            auth.extend(in_auth.iter().cloned());
            body.insert("auth".into(), Value::Object(auth));
        }
        Place::ThreePidCreds => {
            body.insert("three_pid_creds".into(), Value::Object(creds));
        }
        Place::ThreePidCredsList => {
            body.insert("threePidCreds".into(), json!([Value::Object(creds)]));
        }
        Place::TopLevel => body.extend(creds),
    }
    body.extend(top.iter().cloned());
    body
}

/// The creds object of a body built by [`creds_body`].
fn creds_object(body: &Map<String, Value>, place: Place) -> &Map<String, Value> {
    let value = match place {
        Place::AuthSnake => &body["auth"]["threepid_creds"],
        Place::AuthCamel => &body["auth"]["threepidCreds"],
        Place::ThreePidCreds => &body["three_pid_creds"],
        Place::ThreePidCredsList => &body["threePidCreds"][0],
        Place::TopLevel => return body,
    };
    value.as_object().expect("creds are an object")
}

fn assert_kept(fields: &[(String, Value)], map: &Map<String, Value>, level: &str) {
    for (key, value) in fields {
        assert_eq!(map.get(key), Some(value), "{level} field {key:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The creds rewrite
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn unknown_fields_survive_the_creds_rewrite(
        place in place(),
        top in unknown_fields(),
        in_auth in unknown_fields(),
        in_creds in unknown_fields(),
    ) {
        // At the top level the creds are the body: a top-level field would overwrite a
        // creds field of the same name before the rewrite ever saw it.
        let in_creds: Vec<(String, Value)> = match place {
            Place::TopLevel => in_creds
                .into_iter()
                .filter(|(key, _)| top.iter().all(|(other, _)| other != key))
                .collect(),
            _ => in_creds,
        };
        let mut body = creds_body(place, OURS, &top, &in_auth, &in_creds);
        let changed = creds::rewrite(&mut body, ID_SERVER_NAME, |c| c.sid == OURS);
        prop_assert!(changed);
        // The last one wins: the extra fields were added after the creds.
        let (top, in_auth, in_creds) = (dedup(&top), dedup(&in_auth), dedup(&in_creds));
        assert_kept(&top, &body, "top-level");
        if let Some(auth) = body.get("auth").and_then(Value::as_object) {
            assert_kept(&in_auth, auth, "auth");
        }
        let creds = creds_object(&body, place);
        assert_kept(&in_creds, creds, "creds");
        prop_assert_eq!(creds.get("sid"), Some(&json!(OURS)));
        prop_assert_eq!(creds.get("client_secret"), Some(&json!("cs")));
        prop_assert_eq!(creds.get("id_server"), Some(&json!(ID_SERVER_NAME)));
        prop_assert_eq!(creds.get("id_access_token"), None);
        prop_assert_eq!(body.get("bind"), Some(&json!(false)));
    }

    #[test]
    fn the_creds_rewrite_leaves_other_sessions_byte_for_byte(
        place in place(),
        top in unknown_fields(),
        in_auth in unknown_fields(),
        in_creds in unknown_fields(),
    ) {
        let original = creds_body(place, "THEIRS", &top, &in_auth, &in_creds);
        let mut body = original.clone();
        prop_assert!(!creds::rewrite(&mut body, ID_SERVER_NAME, |c| c.sid == OURS));
        prop_assert_eq!(serde_json::to_vec(&body).unwrap(), serde_json::to_vec(&original).unwrap());
    }

    #[test]
    fn a_rewrite_never_changes_a_body_that_names_no_session_of_ours(
        body in prop::collection::vec((key(), any_json()), 0..6),
        place in place(),
        extra in unknown_fields(),
    ) {
        // Arbitrary members, and for good measure real creds that are not ours.
        let mut original: Map<String, Value> = body.into_iter().collect();
        original.extend(creds_body(place, "THEIRS", &extra, &extra, &extra));
        let mut body = original.clone();
        prop_assert!(!creds::rewrite(&mut body, ID_SERVER_NAME, |_: &Creds| false));
        prop_assert_eq!(&body, &original);
        prop_assert_eq!(serde_json::to_vec(&body).unwrap(), serde_json::to_vec(&original).unwrap());
    }

    #[test]
    fn an_arbitrary_body_changes_only_where_it_names_our_session(
        body in prop::collection::vec((key(), any_json()), 0..6),
    ) {
        let original: Map<String, Value> = body.into_iter().collect();
        let found = creds::find_creds(&original);
        let mut body = original.clone();
        let changed = creds::rewrite(&mut body, ID_SERVER_NAME, |c| c.sid == OURS);
        prop_assert_eq!(changed, found.iter().any(|c| c.sid == OURS));
        if !changed {
            prop_assert_eq!(&body, &original);
        }
        // Nothing but the rewritten names ever changes at the top level.
        for (key, value) in &original {
            if !CREDS_NAMES.contains(&key.as_str()) {
                prop_assert_eq!(body.get(key), Some(value), "{}", key);
            }
        }
    }
}

/// The members as a JSON object would hold them: a repeated name keeps its last value.
fn dedup(fields: &[(String, Value)]) -> Vec<(String, Value)> {
    let map: Map<String, Value> = fields.iter().cloned().collect();
    map.into_iter().collect()
}

// ---------------------------------------------------------------------------------------
// The /versions rewrite
// ---------------------------------------------------------------------------------------

fn not_named(name: &'static str) -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec(
        (
            key().prop_filter("the rewritten name", move |k| k != name),
            any_json(),
        ),
        0..5,
    )
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn unknown_fields_survive_the_versions_rewrite(
        top in not_named("unstable_features"),
        features in prop::option::of(not_named(FLAG)),
        flag in prop::option::of(any_json()),
    ) {
        let mut input: Map<String, Value> = top.iter().cloned().collect();
        input.insert("versions".into(), json!(["r0.0.1", "r0.5.0"]));
        if let Some(features) = &features {
            let mut object: Map<String, Value> = features.iter().cloned().collect();
            if let Some(flag) = &flag {
                object.insert(FLAG.into(), flag.clone());
            }
            input.insert("unstable_features".into(), Value::Object(object));
        }
        let output = inject_flag(&serde_json::to_vec(&input).unwrap()).expect("an object is rewritten");
        let output: Map<String, Value> = serde_json::from_slice(&output).expect("the output is JSON");

        let input_keys: Vec<&String> = input.keys().filter(|k| *k != "unstable_features").collect();
        let output_keys: Vec<&String> = output.keys().filter(|k| *k != "unstable_features").collect();
        prop_assert_eq!(input_keys, output_keys, "same members, same order");
        for (key, value) in &input {
            if key != "unstable_features" {
                prop_assert_eq!(&output[key], value, "{}", key);
            }
        }
        let out_features = output["unstable_features"].as_object().expect("an object");
        prop_assert_eq!(&out_features[FLAG], &json!(false));
        for (key, _) in features.iter().flatten() {
            let kept = &input["unstable_features"][key];
            prop_assert_eq!(&out_features[key], kept, "unstable_features.{}", key);
        }
        prop_assert_eq!(
            out_features.len(),
            input.get("unstable_features").and_then(Value::as_object).map_or(0, |f| f.len())
                + usize::from(flag.is_none() || features.is_none())
        );
    }

    #[test]
    fn the_versions_rewrite_refuses_only_what_is_not_an_object(value in any_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let features_not_object = value
            .get("unstable_features")
            .is_some_and(|f| !f.is_object());
        let expect_rewrite = value.is_object() && !features_not_object;
        prop_assert_eq!(inject_flag(&bytes).is_some(), expect_rewrite);
    }
}

// ---------------------------------------------------------------------------------------
// Validators
// ---------------------------------------------------------------------------------------

/// Email-ish text: ordinary addresses, addresses with case and Unicode that folds, and
/// arbitrary text with an `@` somewhere.
fn email_like() -> impl Strategy<Value = String> {
    let folding = prop_oneof![
        Just('A'),
        Just('Z'),
        Just('Ä'),
        Just('Σ'),
        Just('ẞ'),
        Just('İ'),
        Just('\u{212A}'), // KELVIN SIGN, lowercases to ASCII 'k'
        Just('Ω'),
        Just('ǅ'),
        Just('a'),
        Just('.'),
        Just('+'),
        Just('-'),
    ];
    prop_oneof![
        (
            "[a-zA-Z0-9._%+-]{1,20}",
            "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z]{2,6}){1,2}"
        )
            .prop_map(|(l, d)| format!("{l}@{d}")),
        (prop::collection::vec(folding, 1..20), "[a-zA-Z0-9.-]{1,12}")
            .prop_map(|(l, d)| format!("{}@{d}", l.into_iter().collect::<String>())),
        ("\\PC{0,10}", "\\PC{0,10}").prop_map(|(l, d)| format!("{l}@{d}")),
        ("[ \\t\\r\\n]{0,2}", "[a-z]{1,5}", "[ \\t\\r\\n]{0,2}")
            .prop_map(|(a, l, b)| format!("{a}{l}@example.org{b}")),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn email_canonicalisation_is_idempotent_and_clean(address in email_like()) {
        if let Ok(canonical) = validate::email(&address) {
            prop_assert!(
                !canonical.chars().any(|c| c.is_whitespace() || c.is_control()),
                "{:?}", canonical
            );
            prop_assert_eq!(validate::email(&canonical), Ok(canonical.clone()));
        }
    }

    #[test]
    fn client_secret_accepts_exactly_the_spec_pattern(secret in client_secret_like()) {
        let pattern = regex::Regex::new(r"\A[0-9a-zA-Z.=_-]{1,255}\z").unwrap();
        prop_assert_eq!(validate::client_secret(&secret).is_ok(), pattern.is_match(&secret), "{:?}", secret);
    }
}

/// Secrets near the edges: the allowed alphabet at and around the length limits, with
/// one character from outside it, and arbitrary text.
fn client_secret_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-zA-Z.=_-]{0,3}",
        "[0-9a-zA-Z.=_-]{250,260}",
        (
            "[0-9a-zA-Z.=_-]{0,8}",
            "[^0-9a-zA-Z.=_-]",
            "[0-9a-zA-Z.=_-]{0,8}"
        )
            .prop_map(|(a, bad, b)| format!("{a}{bad}{b}")),
        "[ -~]{0,12}",
        any::<String>(),
    ]
}

// ---------------------------------------------------------------------------------------
// v3 → r0
// ---------------------------------------------------------------------------------------

const PREFIXES: [&str; 10] = [
    "/_matrix/client/v3/",
    "/_matrix/media/v3/",
    "/_matrix/client/r0/",
    "/_matrix/media/r0/",
    "/_matrix/client/v1/",
    "/_matrix/client/v3",
    "/_matrix/federation/v3/",
    "/_matrix/client/V3/",
    "/_matrix//client/v3/",
    "",
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn map_path_changes_only_the_v3_prefix(
        prefix in prop::sample::select(&PREFIXES[..]),
        rest in prop_oneof!["[a-zA-Z0-9/%?&=._~:!-]{0,30}", "\\PC{0,12}"],
    ) {
        let path = format!("{prefix}{rest}");
        let mapped = map_path(&path);
        let v3 = [("/_matrix/client/v3/", "/_matrix/client/r0/"), ("/_matrix/media/v3/", "/_matrix/media/r0/")];
        match v3.iter().find(|(from, _)| path.starts_with(from)) {
            Some((from, to)) => {
                let mapped = mapped.expect("a v3 path is mapped");
                prop_assert_eq!(&mapped, &format!("{to}{}", &path[from.len()..]));
                // Once mapped, nothing more to map.
                prop_assert_eq!(map_path(&mapped), None);
            }
            None => prop_assert_eq!(mapped, None),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Inputs the fuzz targets found (fuzz/regressions/)
// ---------------------------------------------------------------------------------------

/// fuzz/regressions/request_token/phone-number-with-extension: a phone number with an
/// extension (`x5`, `ext. 5`, `#5`, `~5`, `;ext=5`) passed validation. The session's
/// `msisdn` (where the SMS goes, what the homeserver binds) dropped the extension while
/// `intl_fmt`, which the client shows the person, kept it: one session, two numbers. An
/// SMS cannot reach an extension, so such a number is not valid for `country`: 400
/// `M_INVALID_PARAM` (DESIGN §5).
#[test]
fn a_phone_number_with_an_extension_is_refused() {
    for (country, number) in [
        ("CD", "12 12 34 5~6"),
        ("GB", "07400 123456 ext. 5"),
        ("GB", "07400 123456 x5"),
        ("GB", "07400123456#5"),
        ("GB", "07400123456;ext=5"),
        ("GB", "+44 7400 123456 extension 12"),
        ("US", "201-555-0123 x12"),
    ] {
        match validate::phone(country, number) {
            Err(e) => assert_eq!(e.errcode, "M_INVALID_PARAM", "{country} {number:?}"),
            Ok(accepted) => panic!("{country} {number:?} was accepted as {accepted:?}"),
        }
    }
    // The fuzz target's input, through the whole requestToken rule.
    let body = json!({
        "client_secret": "3b6a5a04=a3c8-4a3b-8f40-1d2e3f4a=b6c", "country": "CD",
        "phone_number": "12 12 34 5~6", "send_attempt": 1
    });
    let refused = validate::token_request(
        threepid_sidecar::threepid::Medium::Msisdn,
        body.as_object().unwrap(),
        None,
    );
    assert_eq!(refused.map_err(|e| e.errcode), Err("M_INVALID_PARAM"));
    // Without the extension the number is fine.
    assert_eq!(
        validate::phone("GB", "07400 123456").unwrap().intl_fmt,
        "+44 7400 123456"
    );
}
