//! What users read: the verification mail (one subject, text and HTML set per
//! [`Purpose`]), the security notices, the SMS, and the HTML pages the mailed link leads to.
//! The templates hold the markup; every sentence comes from the message catalogue of the
//! message's language ([`crate::i18n`]) through the function `t("key")`, which also passes
//! the template's `server_name`, `app_name`, `token`, `time` and `client_ip` to the message.
//! Built-in templates are compiled into the binary; `email.templates_dir` replaces any of
//! them by file name. Everything is loaded and trial-rendered in every language at start, so
//! a broken override stops start-up with its file named instead of failing the first user.
//! `.html` templates are HTML-escaped automatically (sentences included). Each file stands
//! alone (no `extends`: minijinja is built without `multi_template`), so an operator can
//! override one without the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::value::Kwargs;
use minijinja::{AutoEscape, Environment, State, UndefinedBehavior, context};

use crate::i18n::Catalogues;
use crate::threepid::{Notice, Purpose};

/// Every template, by the file name that overrides it.
const BUILTINS: &[(&str, &str)] = &[
    (
        "registration.subject.txt",
        include_str!("registration.subject.txt"),
    ),
    ("registration.txt", include_str!("registration.txt")),
    ("registration.html", include_str!("registration.html")),
    (
        "password_reset.subject.txt",
        include_str!("password_reset.subject.txt"),
    ),
    ("password_reset.txt", include_str!("password_reset.txt")),
    ("password_reset.html", include_str!("password_reset.html")),
    (
        "add_threepid.subject.txt",
        include_str!("add_threepid.subject.txt"),
    ),
    ("add_threepid.txt", include_str!("add_threepid.txt")),
    ("add_threepid.html", include_str!("add_threepid.html")),
    (
        "notice_password.subject.txt",
        include_str!("notice_password.subject.txt"),
    ),
    ("notice_password.txt", include_str!("notice_password.txt")),
    ("notice_password.html", include_str!("notice_password.html")),
    (
        "notice_removed.subject.txt",
        include_str!("notice_removed.subject.txt"),
    ),
    ("notice_removed.txt", include_str!("notice_removed.txt")),
    ("notice_removed.html", include_str!("notice_removed.html")),
    ("confirm.html", include_str!("confirm.html")),
    ("success.html", include_str!("success.html")),
    ("failure.html", include_str!("failure.html")),
    ("sms.txt", include_str!("sms.txt")),
];

const PURPOSES: [Purpose; 3] = [
    Purpose::Registration,
    Purpose::PasswordReset,
    Purpose::AddThreepid,
];

/// Why templates could not be loaded or rendered. `file` is the override's path, or the
/// built-in name. Messages never include the rendered variables (tokens, links).
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {file}: {reason}")]
    Syntax { file: String, reason: String },
    #[error("template {file}: {reason}")]
    Render { file: String, reason: String },
}

/// The compiled templates, shared by the mailer and the link-page handlers.
pub struct Templates {
    env: Environment<'static>,
    /// Template name → where it came from, for error messages.
    origin: HashMap<&'static str, String>,
    catalogues: Arc<Catalogues>,
}

/// What a verification mail says. Not `Debug`: it holds the token.
#[derive(Clone, Copy)]
pub struct MailVars<'a> {
    /// The service's name (`email.app_name`).
    pub app_name: &'a str,
    /// The homeserver's Matrix server name, as in Synapse's subjects.
    pub server_name: &'a str,
    /// The GET confirmation-page link.
    pub link: &'a str,
    /// The token, for clients that ask the user to type it.
    pub token: &'a str,
}

/// A mail ready for the transport. Not `Debug`: it holds the link and token.
#[derive(Clone)]
pub struct RenderedMail {
    /// One line: newlines are collapsed so a template cannot add headers.
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The language it is written in (`Content-Language`).
    pub language: String,
}

/// What a notice says besides its kind. Times and addresses come written out.
#[derive(Debug, Clone, Copy)]
pub struct NoticeVars<'a> {
    pub app_name: &'a str,
    pub server_name: &'a str,
    /// When it happened, e.g. `2026-12-06 18:40 UTC`.
    pub time: &'a str,
    /// The client's network address, partly hidden (`203.0.113.*`).
    pub client_ip: &'a str,
}

/// Why the link did not work, as the failure page says it (a catalogue key each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    LinkIncomplete,
    LinkExpired,
    TokenIncorrect,
    TooManyAttempts,
    RateLimited,
    Unavailable,
    Other,
}

impl Failure {
    /// Its sentence's key in the catalogues.
    pub fn key(self) -> &'static str {
        match self {
            Failure::LinkIncomplete => "failure-link-incomplete",
            Failure::LinkExpired => "failure-link-expired",
            Failure::TokenIncorrect => "failure-token-incorrect",
            Failure::TooManyAttempts => "failure-too-many-attempts",
            Failure::RateLimited => "failure-rate-limited",
            Failure::Unavailable => "failure-unavailable",
            Failure::Other => "failure-other",
        }
    }
}

/// A link page. Not `Debug`: `Confirm` holds the token and client secret.
#[derive(Clone, Copy)]
pub enum Page<'a> {
    /// What the mailed link opens (GET). Validates nothing: mail scanners pre-fetch links;
    /// its one button POSTs `sid`, `client_secret` and `token` to `action`.
    Confirm {
        app_name: &'a str,
        purpose: Purpose,
        action: &'a str,
        sid: &'a str,
        client_secret: &'a str,
        token: &'a str,
    },
    /// After a successful form submit without a `next_link`.
    Success { app_name: &'a str },
    /// After a failed form submit; `reason` is shown to the user.
    Failure { app_name: &'a str, reason: Failure },
}

impl Templates {
    /// The built-ins, each replaced by the file of the same name in `dir` when present.
    /// Every template is compiled and trial-rendered, so a broken override fails here,
    /// naming its file.
    pub fn load(dir: Option<&Path>, catalogues: Arc<Catalogues>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let for_t = catalogues.clone();
        env.add_function("t", move |state: &State, key: String, kwargs: Kwargs| {
            translate(&for_t, state, &key, &kwargs)
        });
        env.add_filter("wrap", wrap);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        // Printing an unknown variable is an error, so a typo in an override is found
        // by the trial render below rather than sending an empty link.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        // Debug info would put the render context (token, link) into error messages.
        env.set_debug(false);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);

        if let Some(dir) = dir {
            warn_about_unknown_files(dir)?;
        }
        let mut origin = HashMap::new();
        for &(name, builtin) in BUILTINS {
            let (source, from) = match dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(path) => {
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                            path: path.clone(),
                            source,
                        })?;
                    (text, path.display().to_string())
                }
                None => (builtin.to_owned(), format!("{name} (built-in)")),
            };
            env.add_template_owned(name, source)
                .map_err(|e| TemplateError::Syntax {
                    file: from.clone(),
                    reason: e.to_string(),
                })?;
            origin.insert(name, from);
        }
        let templates = Self {
            env,
            origin,
            catalogues,
        };
        templates.trial_render()?;
        Ok(templates)
    }

    /// The file name of every template, the names `email.templates_dir` may override.
    pub fn names() -> impl Iterator<Item = &'static str> {
        BUILTINS.iter().map(|(name, _)| *name)
    }

    /// Where each template that `email.templates_dir` overrides was read from.
    pub fn overridden(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = Self::names()
            .filter_map(|name| self.origin.get(name))
            .filter(|from| !from.ends_with("(built-in)"))
            .map(String::as_str)
            .collect();
        paths.sort_unstable();
        paths
    }

    /// The catalogues the templates take their sentences from.
    pub fn catalogues(&self) -> &Catalogues {
        &self.catalogues
    }

    /// `lang` and `dir` for a render in `language` (an unknown one is the default language).
    fn language(&self, language: &str) -> (String, &'static str) {
        let lang = self.catalogues.resolve(Some(language)).to_owned();
        let dir = if Catalogues::is_right_to_left(&lang) {
            "rtl"
        } else {
            "ltr"
        };
        (lang, dir)
    }

    /// The verification mail for `purpose`, in `language`.
    pub fn mail(
        &self,
        purpose: Purpose,
        vars: &MailVars<'_>,
        language: &str,
    ) -> Result<RenderedMail, TemplateError> {
        let (lang, dir) = self.language(language);
        let ctx = context! {
            app_name => vars.app_name,
            server_name => vars.server_name,
            link => vars.link,
            token => vars.token,
            lang => &lang,
            dir,
        };
        self.render_mail(mail_templates(purpose), &ctx, lang)
    }

    /// A mail's three templates (subject, text, HTML) rendered with `ctx`.
    fn render_mail(
        &self,
        [subject, text, html]: [&str; 3],
        ctx: &minijinja::Value,
        language: String,
    ) -> Result<RenderedMail, TemplateError> {
        Ok(RenderedMail {
            subject: one_line(&self.render(subject, ctx)?),
            text: self.render(text, ctx)?,
            html: self.render(html, ctx)?,
            language,
        })
    }

    /// A security notice, in `language`.
    pub fn notice(
        &self,
        notice: Notice,
        vars: &NoticeVars<'_>,
        language: &str,
    ) -> Result<RenderedMail, TemplateError> {
        let (lang, dir) = self.language(language);
        let ctx = context! {
            app_name => vars.app_name,
            server_name => vars.server_name,
            time => vars.time,
            client_ip => vars.client_ip,
            lang => &lang,
            dir,
        };
        let names = match notice {
            Notice::PasswordChanged => [
                "notice_password.subject.txt",
                "notice_password.txt",
                "notice_password.html",
            ],
            Notice::AddressRemoved => [
                "notice_removed.subject.txt",
                "notice_removed.txt",
                "notice_removed.html",
            ],
        };
        self.render_mail(names, &ctx, lang)
    }

    /// A link page in `language`, HTML-escaped throughout.
    pub fn page(&self, page: Page<'_>, language: &str) -> Result<String, TemplateError> {
        let (lang, dir) = self.language(language);
        match page {
            Page::Confirm {
                app_name,
                purpose,
                action,
                sid,
                client_secret,
                token,
            } => self.render(
                "confirm.html",
                &context! {
                    app_name, purpose => purpose.as_str(), action, sid, client_secret, token,
                    lang, dir,
                },
            ),
            Page::Success { app_name } => {
                self.render("success.html", &context! { app_name, lang, dir })
            }
            Page::Failure { app_name, reason } => self.render(
                "failure.html",
                &context! { app_name, reason => reason.key(), lang, dir },
            ),
        }
    }

    fn render(&self, name: &str, ctx: &minijinja::Value) -> Result<String, TemplateError> {
        let fail = |e: minijinja::Error| TemplateError::Render {
            file: self
                .origin
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.to_owned()),
            reason: e.to_string(),
        };
        self.env
            .get_template(name)
            .map_err(fail)?
            .render(ctx)
            .map_err(fail)
    }

    /// The text of a verification SMS in `language` (one line; variables `app_name`,
    /// `token`).
    pub fn sms(
        &self,
        app_name: &str,
        token: &str,
        language: &str,
    ) -> Result<String, TemplateError> {
        let (lang, dir) = self.language(language);
        let text = self.render("sms.txt", &context! { app_name, token, lang, dir })?;
        Ok(one_line(&text))
    }

    /// Renders everything once in every language with sample values: finds unknown
    /// variables, filters and broken `extends` in overrides before the first user does.
    fn trial_render(&self) -> Result<(), TemplateError> {
        let vars = MailVars {
            app_name: "App",
            server_name: "example.org",
            link: "https://example.org/link",
            token: "123456",
        };
        let notice = NoticeVars {
            app_name: "App",
            server_name: "example.org",
            time: "2026-12-06 18:40 UTC",
            client_ip: "203.0.113.*",
        };
        for lang in self.catalogues.tags() {
            for purpose in PURPOSES {
                self.mail(purpose, &vars, lang)?;
                self.page(
                    Page::Confirm {
                        app_name: "App",
                        purpose,
                        action: "/submit",
                        sid: "sid",
                        client_secret: "secret",
                        token: "123456",
                    },
                    lang,
                )?;
            }
            for kind in [Notice::PasswordChanged, Notice::AddressRemoved] {
                self.notice(kind, &notice, lang)?;
            }
            self.page(Page::Success { app_name: "App" }, lang)?;
            self.sms("App", "123456", lang)?;
            self.page(
                Page::Failure {
                    app_name: "App",
                    reason: Failure::TokenIncorrect,
                },
                lang,
            )?;
        }
        Ok(())
    }
}

/// The variables of a template's context that messages may use.
const MESSAGE_VARIABLES: [&str; 5] = ["server_name", "app_name", "token", "time", "client_ip"];

/// `t("key", name=value, …)`: the message `key` in the template's `lang`, with the
/// template's variables of [`MESSAGE_VARIABLES`] (and any keyword arguments) as its
/// arguments. Plain text: an `.html` template escapes it like any other value.
fn translate(
    catalogues: &Catalogues,
    state: &State,
    key: &str,
    kwargs: &Kwargs,
) -> Result<String, minijinja::Error> {
    let lang = state.lookup("lang");
    let lang = lang
        .as_ref()
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| catalogues.default_language());
    // The values are looked up once and lent to Fluent: a string value is not copied.
    let variables = MESSAGE_VARIABLES.map(|name| {
        state
            .lookup(name)
            .filter(|v| !v.is_undefined() && !v.is_none())
    });
    let keywords = kwargs
        .args()
        .map(|name| Ok((name, kwargs.get::<minijinja::Value>(name)?)))
        .collect::<Result<Vec<_>, minijinja::Error>>()?;
    kwargs.assert_all_used()?;
    let mut args =
        fluent_bundle::FluentArgs::with_capacity(MESSAGE_VARIABLES.len() + keywords.len());
    for (name, value) in MESSAGE_VARIABLES.iter().zip(&variables) {
        if let Some(value) = value {
            args.set(*name, fluent_text(value));
        }
    }
    for (name, value) in &keywords {
        args.set(*name, fluent_text(value));
    }
    Ok(catalogues.message(lang, key, Some(&args)))
}

/// A template value as a Fluent argument: a string lent as it is, anything else written out.
fn fluent_text(value: &minijinja::Value) -> fluent_bundle::FluentValue<'_> {
    match value.as_str() {
        Some(text) => text.into(),
        None => value.to_string().into(),
    }
}

/// `text | wrap(width=72)`: breaks a paragraph into lines of at most `width` characters at
/// spaces, for plain-text mail. A word longer than a line (a link, or a language written
/// without spaces) stays whole.
fn wrap(text: String, width: Option<usize>) -> String {
    let width = width.unwrap_or(72).max(20);
    let mut out = String::with_capacity(text.len() + text.len() / width);
    let mut line = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let len = word.chars().count();
        if line > 0 && line + 1 + len > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += len;
    }
    out
}

/// The subject, text and HTML templates of a purpose's mail.
fn mail_templates(purpose: Purpose) -> [&'static str; 3] {
    match purpose {
        Purpose::Registration => [
            "registration.subject.txt",
            "registration.txt",
            "registration.html",
        ],
        Purpose::PasswordReset => [
            "password_reset.subject.txt",
            "password_reset.txt",
            "password_reset.html",
        ],
        Purpose::AddThreepid => [
            "add_threepid.subject.txt",
            "add_threepid.txt",
            "add_threepid.html",
        ],
    }
}

/// A subject is one header line: any run of whitespace, newlines included, becomes one
/// space (header-injection guard).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A misspelt override would silently do nothing; say so at start.
fn warn_about_unknown_files(dir: &Path) -> Result<(), TemplateError> {
    let entries = std::fs::read_dir(dir).map_err(|source| TemplateError::Read {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !BUILTINS.iter().any(|(known, _)| *known == name) {
            tracing::warn!(file = %entry.path().display(), "ignoring unknown file in email.templates_dir");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
