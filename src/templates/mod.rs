//! What users read: the verification mail (one subject, text and HTML set per
//! [`Purpose`]) and the HTML pages the mailed link leads to. Built-in templates are
//! compiled into the binary; `email.templates_dir` replaces any of them by file name.
//! Everything is loaded and trial-rendered at start, so a broken override stops start-up
//! with its file named instead of failing the first user. `.html` templates are
//! HTML-escaped automatically. Each file stands alone (no `extends`: minijinja is built
//! without `multi_template`), so an operator can override one without the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, context};

use crate::threepid::Purpose;

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
    Failure { app_name: &'a str, reason: &'a str },
}

impl Templates {
    /// The built-ins, each replaced by the file of the same name in `dir` when present.
    /// Every template is compiled and trial-rendered, so a broken override fails here,
    /// naming its file.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
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
        let templates = Self { env, origin };
        templates.trial_render()?;
        Ok(templates)
    }

    /// The verification mail for `purpose`.
    pub fn mail(
        &self,
        purpose: Purpose,
        vars: &MailVars<'_>,
    ) -> Result<RenderedMail, TemplateError> {
        let ctx = context! {
            app_name => vars.app_name,
            server_name => vars.server_name,
            link => vars.link,
            token => vars.token,
        };
        let [subject, text, html] = mail_templates(purpose);
        Ok(RenderedMail {
            subject: one_line(&self.render(subject, &ctx)?),
            text: self.render(text, &ctx)?,
            html: self.render(html, &ctx)?,
        })
    }

    /// A link page, HTML-escaped throughout.
    pub fn page(&self, page: Page<'_>) -> Result<String, TemplateError> {
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
                &context! { app_name, purpose => purpose.as_str(), action, sid, client_secret, token },
            ),
            Page::Success { app_name } => self.render("success.html", &context! { app_name }),
            Page::Failure { app_name, reason } => {
                self.render("failure.html", &context! { app_name, reason })
            }
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

    /// Renders everything once with sample values: finds unknown variables, filters and
    /// broken `extends` in overrides before the first user does.
    /// The text of a verification SMS (one line; variables `app_name`, `token`).
    pub fn sms(&self, app_name: &str, token: &str) -> Result<String, TemplateError> {
        let text = self.render("sms.txt", &context! { app_name, token })?;
        Ok(one_line(&text))
    }

    fn trial_render(&self) -> Result<(), TemplateError> {
        let vars = MailVars {
            app_name: "App",
            server_name: "example.org",
            link: "https://example.org/link",
            token: "123456",
        };
        for purpose in PURPOSES {
            self.mail(purpose, &vars)?;
            self.page(Page::Confirm {
                app_name: "App",
                purpose,
                action: "/submit",
                sid: "sid",
                client_secret: "secret",
                token: "123456",
            })?;
        }
        self.page(Page::Success { app_name: "App" })?;
        self.sms("App", "123456")?;
        self.page(Page::Failure {
            app_name: "App",
            reason: "reason",
        })?;
        Ok(())
    }
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
