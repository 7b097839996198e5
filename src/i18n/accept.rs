//! `Accept-Language` (RFC 9110 §12.5.4): the languages a client asks for, best first, and the
//! one of ours that serves them best.

/// At most this many entries of a header are looked at.
const MAX_ENTRIES: usize = 16;

/// The tags of an `Accept-Language` header, best first: sorted by their `q` (stable, so equal
/// weights keep their order), without those of `q=0` (refused) or malformed, and up to a `*`
/// (anything else: the caller's fallback).
pub fn parse_accept_language(header: &str) -> Vec<String> {
    let mut entries: Vec<(u16, String)> = Vec::new();
    for item in header.split(',').take(MAX_ENTRIES) {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let mut q = 1000u16;
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("q") {
                q = quality(value.trim()).unwrap_or(0);
            }
        }
        if tag == "*" {
            if q > 0 {
                entries.push((q, "*".to_owned()));
            }
            continue;
        }
        if q > 0 && well_formed(tag) {
            entries.push((q, tag.to_owned()));
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    entries
        .into_iter()
        .map(|(_, tag)| tag)
        .take_while(|tag| tag != "*")
        .collect()
}

/// A `q` value as thousandths: `1`, `0.8`, `0.125`; `None` when malformed.
fn quality(value: &str) -> Option<u16> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// `de`, `pt-BR`, `zh-Hans-CN`: letters, then subtags of letters and digits, each 1 to 8 long.
fn well_formed(tag: &str) -> bool {
    let mut subtags = tag.split('-');
    let primary = subtags.next().unwrap_or("");
    (1..=8).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && subtags
            .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The Chinese variants written in Traditional characters: never served Simplified.
const TRADITIONAL: &[&str] = &["hant", "tw", "hk", "mo"];

/// The first of `wanted` that one of `available` serves, as its index there: the same tag
/// (any case), else the same language (`de-AT` → `de`, `pt-PT` → `pt-BR`, `en-GB` → `en`,
/// `zh-CN` → `zh-Hans`) unless the script differs (`zh-TW` is not `zh-Hans`).
pub fn pick(wanted: &[String], available: &[&str]) -> Option<usize> {
    for tag in wanted {
        if let Some(at) = available.iter().position(|a| a.eq_ignore_ascii_case(tag)) {
            return Some(at);
        }
        let lower = tag.to_ascii_lowercase();
        let mut subtags = lower.split('-');
        let primary = subtags.next().unwrap_or("");
        let rest: Vec<&str> = subtags.collect();
        let found = available.iter().position(|a| {
            let a = a.to_ascii_lowercase();
            let mut theirs = a.split('-');
            if theirs.next() != Some(primary) {
                return false;
            }
            let their_rest: Vec<&str> = theirs.collect();
            // Chinese: Simplified and Traditional are not interchangeable.
            if primary == "zh" {
                let traditional =
                    |subtags: &[&str]| subtags.iter().any(|s| TRADITIONAL.contains(s));
                return traditional(&rest) == traditional(&their_rest);
            }
            true
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: [&str; 9] = ["en", "de", "es", "fr", "it", "nl", "pl", "pt-BR", "zh-Hans"];

    fn best(header: &str) -> Option<&'static str> {
        pick(&parse_accept_language(header), &OURS).map(|at| OURS[at])
    }

    #[test]
    fn weights_order_the_tags_and_zero_refuses_one() {
        assert_eq!(
            parse_accept_language("fr;q=0.5, de, en;q=0.9, it;q=0"),
            ["de", "en", "fr"]
        );
        assert_eq!(best("fr;q=0.5, de;q=0.7"), Some("de"));
        assert_eq!(best("de;q=0, fr"), Some("fr"));
        assert_eq!(
            best("en;q=0.8, nl;q=0.8"),
            Some("en"),
            "equal weights keep their order"
        );
    }

    #[test]
    fn regions_and_scripts_fall_back_to_the_language() {
        assert_eq!(best("de-AT"), Some("de"));
        assert_eq!(best("en-GB,en;q=0.9"), Some("en"));
        assert_eq!(best("pt-BR"), Some("pt-BR"));
        assert_eq!(best("pt-PT"), Some("pt-BR"));
        assert_eq!(best("PT-br"), Some("pt-BR"));
        assert_eq!(best("es-419"), Some("es"));
        assert_eq!(best("zh-CN"), Some("zh-Hans"));
        assert_eq!(best("zh"), Some("zh-Hans"));
        assert_eq!(best("zh-Hans-SG"), Some("zh-Hans"));
    }

    #[test]
    fn traditional_chinese_is_not_served_simplified() {
        assert_eq!(best("zh-TW"), None);
        assert_eq!(best("zh-Hant, en;q=0.5"), Some("en"));
        assert_eq!(best("zh-HK, zh-CN;q=0.5"), Some("zh-Hans"));
    }

    #[test]
    fn a_star_or_nothing_known_leaves_the_choice_to_the_caller() {
        assert_eq!(best("*"), None);
        assert_eq!(best("ja, *;q=0.5, de;q=0.1"), None, "anything before de");
        assert_eq!(best("ja, ko"), None);
        assert_eq!(best(""), None);
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        assert_eq!(best("de;q=2, fr;q=abc, 12, x-toolong123, it"), Some("it"));
        assert_eq!(best(";;;,,,"), None);
        assert_eq!(quality("0.125"), Some(125));
        assert_eq!(quality("1.000"), Some(1000));
        assert_eq!(quality("1.5"), None);
        assert_eq!(quality("0.1234"), None);
        let long = "de,".repeat(100) + "fr";
        assert_eq!(parse_accept_language(&long).len(), MAX_ENTRIES);
    }
}
