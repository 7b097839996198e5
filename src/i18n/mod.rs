//! What users read, in their language: one Fluent catalogue (`.ftl`) per language, shipped in
//! the binary (`catalogues/<tag>/messages.ftl`, English the reference), and the operator's
//! own under `i18n.dir` (`<dir>/<tag>/*.ftl`): a new language adds itself, a file for a shipped
//! one replaces single messages. [`Catalogues::negotiate`] picks a language for an
//! `Accept-Language` header ([`accept`]); [`Catalogues::message`] formats a message in it,
//! falling back to the default language, then English, message by message.
//!
//! Imports nothing of ours: templates use it, not the reverse.

mod accept;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource};
use unic_langid::LanguageIdentifier;

pub use accept::{parse_accept_language, pick};

/// The reference language: every shipped catalogue has exactly its keys.
pub const REFERENCE: &str = "en";

/// The catalogues shipped in the binary.
const BUILTIN: &[(&str, &str)] = &[
    ("en", include_str!("catalogues/en/messages.ftl")),
    ("de", include_str!("catalogues/de/messages.ftl")),
    ("es", include_str!("catalogues/es/messages.ftl")),
    ("fr", include_str!("catalogues/fr/messages.ftl")),
    ("it", include_str!("catalogues/it/messages.ftl")),
    ("nl", include_str!("catalogues/nl/messages.ftl")),
    ("pl", include_str!("catalogues/pl/messages.ftl")),
    ("pt-BR", include_str!("catalogues/pt-BR/messages.ftl")),
    ("zh-Hans", include_str!("catalogues/zh-Hans/messages.ftl")),
];

/// Languages written right to left (by their primary subtag): pages get `dir="rtl"`.
const RIGHT_TO_LEFT: &[&str] = &["ar", "dv", "fa", "he", "ku", "ps", "sd", "ug", "ur", "yi"];

#[derive(Debug, thiserror::Error)]
pub enum I18nError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {reason}")]
    Syntax { file: String, reason: String },
    #[error("{dir}: {reason}")]
    Language { dir: String, reason: String },
    #[error(
        "i18n.default_language {0:?} has no catalogue (shipped: en, de, es, fr, it, nl, pl, pt-BR, zh-Hans; add one under i18n.dir)"
    )]
    NoDefault(String),
}

/// A message catalogue's problem against English, for `check-config` and `templates render`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub language: String,
    /// Keys English has and this language lacks (English is used for them).
    pub missing: Vec<String>,
    /// Keys this language has and English lacks (never used).
    pub extra: Vec<String>,
}

struct Language {
    tag: String,
    bundle: FluentBundle<FluentResource>,
    keys: BTreeSet<String>,
}

/// Every language's catalogue, shared by the templates and the handlers.
pub struct Catalogues {
    languages: Vec<Language>,
    default: usize,
}

impl std::fmt::Debug for Catalogues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalogues")
            .field("languages", &self.tags().collect::<Vec<_>>())
            .field("default", &self.default_language())
            .finish()
    }
}

fn parse(text: String, file: &str) -> Result<FluentResource, I18nError> {
    FluentResource::try_new(text).map_err(|(_, errors)| I18nError::Syntax {
        file: file.to_owned(),
        reason: errors
            .iter()
            .map(|e| format!("{:?} at bytes {:?}", e.kind, e.pos))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

fn keys_of(resource: &FluentResource) -> impl Iterator<Item = String> + '_ {
    resource.entries().filter_map(|entry| match entry {
        fluent_syntax::ast::Entry::Message(m) => Some(m.id.name.to_owned()),
        _ => None,
    })
}

impl Language {
    fn new(tag: &str) -> Result<Self, String> {
        let id: LanguageIdentifier = tag
            .parse()
            .map_err(|e| format!("{tag:?} is not a language tag like \"de\" or \"pt-BR\": {e}"))?;
        let mut bundle = FluentBundle::new_concurrent(vec![id]);
        // No bidi isolation marks around variables: they would switch an SMS to UCS-2 and
        // end up in subjects and links. Right-to-left pages set `dir` instead.
        bundle.set_use_isolating(false);
        Ok(Self {
            tag: tag.to_owned(),
            bundle,
            keys: BTreeSet::new(),
        })
    }

    /// Adds a resource; with `overriding`, its messages replace those already there.
    fn add(&mut self, resource: FluentResource, overriding: bool) {
        self.keys.extend(keys_of(&resource));
        if overriding {
            self.bundle.add_resource_overriding(resource);
        } else {
            // Shipped catalogues are checked by tests to hold each key once.
            let _ = self.bundle.add_resource(resource);
        }
    }
}

impl Catalogues {
    /// The shipped catalogues, then the operator's under `dir`; `default_language` must be one
    /// of them. A file that does not parse is refused, naming it.
    pub fn load(dir: Option<&Path>, default_language: &str) -> Result<Self, I18nError> {
        let mut languages = Vec::new();
        for (tag, text) in BUILTIN {
            let mut language = Language::new(tag).expect("shipped tags are valid");
            language.add(
                parse((*text).to_owned(), &format!("built-in {tag}"))?,
                false,
            );
            languages.push(language);
        }
        if let Some(dir) = dir {
            for (tag, files) in operator_catalogues(dir)? {
                let at = match languages
                    .iter()
                    .position(|l| l.tag.eq_ignore_ascii_case(&tag))
                {
                    Some(at) => at,
                    None => {
                        let language =
                            Language::new(&tag).map_err(|reason| I18nError::Language {
                                dir: dir.join(&tag).display().to_string(),
                                reason,
                            })?;
                        languages.push(language);
                        languages.len() - 1
                    }
                };
                for path in files {
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| I18nError::Read {
                            path: path.clone(),
                            source,
                        })?;
                    let resource = parse(text, &path.display().to_string())?;
                    languages[at].add(resource, true);
                }
            }
        }
        let default = languages
            .iter()
            .position(|l| l.tag.eq_ignore_ascii_case(default_language))
            .ok_or_else(|| I18nError::NoDefault(default_language.to_owned()))?;
        Ok(Self { languages, default })
    }

    /// Every language's tag, shipped ones first.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.languages.iter().map(|l| l.tag.as_str())
    }

    pub fn default_language(&self) -> &str {
        &self.languages[self.default].tag
    }

    /// The best language for an `Accept-Language` header, or `None` when it names none that
    /// is here (then the caller's fallback applies: the session's language, the default).
    pub fn negotiate(&self, accept_language: Option<&str>) -> Option<&str> {
        let wanted = parse_accept_language(accept_language?);
        pick(&wanted, &self.tags().collect::<Vec<_>>()).map(|at| self.languages[at].tag.as_str())
    }

    /// A language here by its tag (any case), else the default: what a stored or configured
    /// tag turns into.
    pub fn resolve<'a>(&'a self, tag: Option<&str>) -> &'a str {
        tag.and_then(|tag| self.tags().find(|t| t.eq_ignore_ascii_case(tag)))
            .unwrap_or_else(|| self.default_language())
    }

    /// Whether `tag`'s script runs right to left.
    pub fn is_right_to_left(tag: &str) -> bool {
        let primary = tag.split('-').next().unwrap_or(tag).to_ascii_lowercase();
        RIGHT_TO_LEFT.contains(&primary.as_str())
    }

    /// `key` formatted in `tag`, else in the default language, else in English; the key
    /// itself when no catalogue has it (a typo shows instead of an empty line).
    pub fn message(&self, tag: &str, key: &str, args: Option<&FluentArgs>) -> String {
        let chain = self
            .languages
            .iter()
            .filter(|l| l.tag.eq_ignore_ascii_case(tag))
            .chain(std::iter::once(&self.languages[self.default]))
            .chain(self.languages.iter().filter(|l| l.tag == REFERENCE));
        for language in chain {
            let Some(pattern) = language.bundle.get_message(key).and_then(|m| m.value()) else {
                continue;
            };
            let mut errors = Vec::new();
            let text = language.bundle.format_pattern(pattern, args, &mut errors);
            if !errors.is_empty() {
                tracing::warn!(
                    language = %language.tag,
                    key,
                    errors = ?errors,
                    "a message did not format cleanly"
                );
            }
            return text.into_owned();
        }
        key.to_owned()
    }

    /// Each language's keys against English's.
    pub fn coverage(&self) -> Vec<Coverage> {
        let reference = &self
            .languages
            .iter()
            .find(|l| l.tag == REFERENCE)
            .expect("English is shipped")
            .keys;
        self.languages
            .iter()
            .filter(|l| l.tag != REFERENCE)
            .map(|l| Coverage {
                language: l.tag.clone(),
                missing: reference.difference(&l.keys).cloned().collect(),
                extra: l.keys.difference(reference).cloned().collect(),
            })
            .collect()
    }

    /// Every key of the reference catalogue.
    pub fn keys(&self) -> Vec<String> {
        self.languages
            .iter()
            .find(|l| l.tag == REFERENCE)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// For `check-config`: one line per language whose keys differ from English's (the
/// catalogues were checked when the config was read; an unreadable set says so).
pub fn coverage_report(dir: Option<&Path>, default_language: &str) -> Vec<String> {
    let catalogues = match Catalogues::load(dir, default_language) {
        Ok(catalogues) => catalogues,
        Err(e) => return vec![format!("i18n: {e}")],
    };
    let mut lines = Vec::new();
    for coverage in catalogues.coverage() {
        if !coverage.missing.is_empty() {
            lines.push(format!(
                "i18n: {} lacks {} message(s) English has; English is used for them: {}",
                coverage.language,
                coverage.missing.len(),
                coverage.missing.join(", ")
            ));
        }
        if !coverage.extra.is_empty() {
            lines.push(format!(
                "i18n: {} has message(s) English lacks, never used: {}",
                coverage.language,
                coverage.extra.join(", ")
            ));
        }
    }
    lines
}

/// The places `text` takes in an SMS written in GSM-7 (its basic set one each, its extension
/// table two each), or `None` when it holds another character: then the SMS is UCS-2, 70
/// characters where GSM-7 has 160 places.
pub fn gsm7_places(text: &str) -> Option<usize> {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENDED: &str = "^{}\\[~]|€";
    text.chars()
        .map(|c| {
            if BASIC.contains(c) {
                Some(1)
            } else if EXTENDED.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum()
}

/// `<dir>/<tag>/*.ftl`, by tag, files in name order.
fn operator_catalogues(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, I18nError> {
    let read = |path: &Path| {
        std::fs::read_dir(path).map_err(|source| I18nError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let mut out = Vec::new();
    for entry in read(dir)? {
        let entry = entry.map_err(|source| I18nError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let tag = entry.file_name().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = read(&path)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ftl"))
            .collect();
        files.sort();
        if !files.is_empty() {
            out.push((tag, files));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests;
