//! The v3→r0 path mapping (`compat::map_path`) on any text: only
//! `/_matrix/{client,media}/v3/` becomes `…/r0/`, the rest is kept byte for byte, mapping
//! again changes nothing, and a valid request target stays valid with the same query.
#![no_main]

use http::uri::PathAndQuery;
use libfuzzer_sys::fuzz_target;
use threepid_sidecar::compat::map_path;

const REWRITES: [(&str, &str); 2] = [
    ("/_matrix/client/v3/", "/_matrix/client/r0/"),
    ("/_matrix/media/v3/", "/_matrix/media/r0/"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let mapped = map_path(path);
    let Some((from, to)) = REWRITES.iter().find(|(from, _)| path.starts_with(from)) else {
        assert_eq!(mapped, None, "only the v3 prefixes are mapped");
        return;
    };
    let mapped = mapped.expect("a v3 path is mapped");
    assert_eq!(mapped, format!("{to}{}", &path[from.len()..]));
    assert_eq!(
        map_path(&mapped),
        None,
        "mapping twice changes nothing more"
    );

    // As the proxy calls it: on a parsed request target.
    if let Ok(target) = PathAndQuery::try_from(path) {
        let mapped = map_path(target.as_str()).expect("still a v3 path");
        let mapped_target =
            PathAndQuery::try_from(mapped.as_str()).expect("a valid target stays valid");
        assert_eq!(mapped_target.query(), target.query());
        assert_eq!(
            Some(mapped_target.path().to_owned()),
            map_path(target.path())
        );
    }
});
