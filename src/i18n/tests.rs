use std::collections::{BTreeMap, BTreeSet};

use fluent_bundle::FluentArgs;
use fluent_syntax::ast::{Entry, Expression, InlineExpression, Pattern, PatternElement};

use super::*;

/// Every message's variables, from a catalogue's text.
fn variables(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    fn walk(pattern: &Pattern<&str>, out: &mut BTreeSet<String>) {
        for element in &pattern.elements {
            if let PatternElement::Placeable { expression } = element {
                expression_vars(expression, out);
            }
        }
    }
    fn expression_vars(expression: &Expression<&str>, out: &mut BTreeSet<String>) {
        match expression {
            Expression::Inline(inline) => inline_vars(inline, out),
            Expression::Select { selector, variants } => {
                inline_vars(selector, out);
                for variant in variants {
                    walk(&variant.value, out);
                }
            }
        }
    }
    fn inline_vars(inline: &InlineExpression<&str>, out: &mut BTreeSet<String>) {
        match inline {
            InlineExpression::VariableReference { id } => {
                out.insert(id.name.to_owned());
            }
            InlineExpression::Placeable { expression } => expression_vars(expression, out),
            _ => {}
        }
    }
    let resource = FluentResource::try_new(text.to_owned()).expect("parses");
    let mut out = BTreeMap::new();
    for entry in resource.entries() {
        if let Entry::Message(m) = entry {
            let mut vars = BTreeSet::new();
            if let Some(value) = &m.value {
                walk(value, &mut vars);
            }
            out.insert(m.id.name.to_owned(), vars);
        }
    }
    out
}

fn sample_args() -> FluentArgs<'static> {
    let mut args = FluentArgs::new();
    args.set("server_name", "example.org");
    args.set("app_name", "Example Chat");
    args.set("time", "2026-12-06 18:40 UTC");
    args.set("client_ip", "203.0.113.*");
    args.set("token", "483920");
    args
}

#[test]
fn every_shipped_catalogue_parses_with_exactly_the_english_keys_and_variables() {
    let english = variables(BUILTIN[0].1);
    assert_eq!(BUILTIN[0].0, REFERENCE);
    assert!(english.len() > 50, "{}", english.len());
    for (tag, text) in BUILTIN {
        if let Err((_, errors)) = FluentResource::try_new((*text).to_owned()) {
            panic!("{tag}: {errors:?}");
        }
        let theirs = variables(text);
        let keys: BTreeSet<_> = theirs.keys().collect();
        let reference: BTreeSet<_> = english.keys().collect();
        assert_eq!(keys, reference, "{tag}: keys");
        for (key, vars) in &english {
            assert_eq!(&theirs[key], vars, "{tag}: the variables of {key}");
        }
    }
    let catalogues = Catalogues::load(None, "en").expect("the shipped catalogues load");
    assert!(
        catalogues
            .coverage()
            .iter()
            .all(|c| c.missing.is_empty() && c.extra.is_empty()),
        "{:?}",
        catalogues.coverage()
    );
}

#[test]
fn every_message_formats_in_every_language_without_an_error() {
    let catalogues = Catalogues::load(None, "en").expect("load");
    let args = sample_args();
    for language in &catalogues.languages {
        for key in catalogues.keys() {
            let message = language.bundle.get_message(&key).expect("every key");
            let mut errors = Vec::new();
            let text = language.bundle.format_pattern(
                message.value().expect("a value"),
                Some(&args),
                &mut errors,
            );
            assert!(errors.is_empty(), "{} {key}: {errors:?}", language.tag);
            assert!(!text.trim().is_empty(), "{} {key}", language.tag);
            assert!(
                !text.contains('\u{2068}') && !text.contains('\u{2069}'),
                "{} {key}: isolation marks",
                language.tag
            );
        }
    }
}

#[test]
fn every_sms_fits_one_message() {
    let catalogues = Catalogues::load(None, "en").expect("load");
    let args = sample_args();
    for tag in catalogues.tags() {
        let text = catalogues.message(tag, "sms-code", Some(&args));
        match gsm7_places(&text) {
            Some(places) => assert!(places <= 160, "{tag}: {places} GSM-7 places: {text}"),
            None => assert!(
                text.chars().count() <= 70,
                "{tag}: {} UCS-2 characters: {text}",
                text.chars().count()
            ),
        }
    }
}

#[test]
fn a_missing_message_falls_back_to_the_default_language_then_english() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sv")).unwrap();
    std::fs::write(
        dir.path().join("sv/messages.ftl"),
        "success-title = E-postadressen är verifierad\n",
    )
    .unwrap();
    let catalogues = Catalogues::load(Some(dir.path()), "de").expect("load");
    assert_eq!(
        catalogues.message("sv", "success-title", None),
        "E-postadressen är verifierad"
    );
    // sv lacks it: the default language (de) answers.
    assert_eq!(
        catalogues.message("sv", "failure-title", None),
        catalogues.message("de", "failure-title", None)
    );
    assert_ne!(
        catalogues.message("sv", "failure-title", None),
        catalogues.message("en", "failure-title", None)
    );
    assert_eq!(catalogues.message("sv", "no-such-key", None), "no-such-key");
    let sv = catalogues
        .coverage()
        .into_iter()
        .find(|c| c.language == "sv")
        .expect("sv");
    assert!(sv.missing.contains(&"failure-title".to_owned()));
    assert!(sv.extra.is_empty());
}

#[test]
fn an_operator_catalogue_overrides_one_sentence_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("en")).unwrap();
    std::fs::write(
        dir.path().join("en/ours.ftl"),
        "success-body = All done. Back to the app!\nour-own-key = Not in English\n",
    )
    .unwrap();
    let catalogues = Catalogues::load(Some(dir.path()), "en").expect("load");
    assert_eq!(
        catalogues.message("en", "success-body", None),
        "All done. Back to the app!"
    );
    assert_eq!(
        catalogues.message("en", "success-title", None),
        "Email address verified"
    );
    // Only English overridden: German keeps its own.
    assert_ne!(
        catalogues.message("de", "success-body", None),
        "All done. Back to the app!"
    );
}

#[test]
fn a_broken_catalogue_or_an_unknown_default_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("de")).unwrap();
    std::fs::write(
        dir.path().join("de/broken.ftl"),
        "success-title = { $unclosed\n",
    )
    .unwrap();
    let err = Catalogues::load(Some(dir.path()), "en")
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.ftl"), "{err}");
    let err = Catalogues::load(None, "sv").unwrap_err().to_string();
    assert!(err.contains("\"sv\""), "{err}");
    let bad = tempfile::tempdir().unwrap();
    std::fs::create_dir(bad.path().join("not a tag")).unwrap();
    std::fs::write(bad.path().join("not a tag/m.ftl"), "x = y\n").unwrap();
    assert!(Catalogues::load(Some(bad.path()), "en").is_err());
}

#[test]
fn negotiation_falls_back_to_none_for_the_caller() {
    let catalogues = Catalogues::load(None, "fr").expect("load");
    assert_eq!(catalogues.negotiate(Some("de-CH, en;q=0.5")), Some("de"));
    assert_eq!(catalogues.negotiate(Some("ja")), None);
    assert_eq!(catalogues.negotiate(None), None);
    assert_eq!(catalogues.resolve(None), "fr");
    assert_eq!(catalogues.resolve(Some("PT-br")), "pt-BR");
    assert_eq!(catalogues.resolve(Some("xx")), "fr");
    assert!(Catalogues::is_right_to_left("ar-EG"));
    assert!(!Catalogues::is_right_to_left("de"));
}
