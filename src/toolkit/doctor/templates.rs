//! The templates: every one (built-in, or the operator's override) renders for every purpose
//! in every language with sample values, as at start-up; a broken override is named.

use std::sync::Arc;

use super::Check;
use crate::config::Config;
use crate::i18n::Catalogues;
use crate::templates::Templates;

const NAME: &str = "templates";

pub fn checks(config: &Config) -> Vec<Check> {
    let dir = config.email.templates_dir.as_deref();
    let catalogues =
        match Catalogues::load(config.i18n.dir.as_deref(), &config.i18n.default_language) {
            Ok(catalogues) => Arc::new(catalogues),
            Err(e) => return vec![Check::fail(NAME, format!("{e}: fix the catalogue"))],
        };
    let languages = catalogues.tags().count();
    let templates = match Templates::load(dir, catalogues) {
        Ok(templates) => templates,
        Err(e) => {
            return vec![Check::fail(
                NAME,
                format!("{e}: fix the file, or remove it to use the built-in one"),
            )];
        }
    };
    let overridden = templates.overridden();
    let from = match (dir, overridden.len()) {
        (Some(dir), n) if n > 0 => format!(", {n} of them from {}", dir.display()),
        _ => String::new(),
    };
    let mut checks = vec![Check::ok(
        NAME,
        format!(
            "all {} templates{from} render in all {languages} languages with sample values",
            Templates::names().count()
        ),
    )];
    if let Some(dir) = dir {
        let unknown = unknown_files(dir);
        if !unknown.is_empty() {
            checks.push(Check::warn(
                "templates.dir",
                format!(
                    "{} in {} match no template's name and are ignored: {}; see src/templates/ for the names",
                    if unknown.len() == 1 { "one file" } else { "files" },
                    dir.display(),
                    unknown.join(", ")
                ),
            ));
        }
    }
    checks
}

/// Files in the override folder that no template is named like (a misspelt override).
fn unknown_files(dir: &std::path::Path) -> Vec<String> {
    let mut unknown: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !Templates::names().any(|known| known == name))
        .collect();
    unknown.sort();
    unknown
}
