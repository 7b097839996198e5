//! `threepid-sidecar templates render`: every mail (the whole `.eml`, and its `.html` part),
//! the SMS (`.txt`) and every link page (`.html`), for every purpose and notice and in every
//! language, rendered as users would get them (the operator's templates and catalogues, the
//! config's names and links) with sample values, into files `<what>.<lang>.<ext>`:
//! `registration.de.eml`, `confirm-registration.de.html`, `sms.de.txt`. Dates, IDs and MIME
//! boundaries are fixed, so two renders can be compared with `diff -r`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::sample;
use crate::config::Config;
use crate::delivery::email::{Composer, Stamp};
use crate::delivery::{self, DeliveryError, MailContent, MailRequest};
use crate::i18n::{Catalogues, gsm7_places};
use crate::templates::{Failure, Page, TemplateError, Templates};
use crate::threepid::{Notice, Purpose};

/// Every purpose a verification mail and its confirmation page have.
pub const PURPOSES: [Purpose; 3] = [
    Purpose::Registration,
    Purpose::PasswordReset,
    Purpose::AddThreepid,
];
/// Every security notice.
pub const NOTICES: [Notice; 2] = [Notice::PasswordChanged, Notice::AddressRemoved];
/// Files per language: each purpose's mail (`.eml`, `.html`) and confirmation page, each
/// notice's mail (`.eml`, `.html`), the SMS, the success and the failure page.
pub const FILES_PER_LANGUAGE: usize = PURPOSES.len() * 3 + NOTICES.len() * 2 + 3;

/// The sample recipient: a documentation address, nobody's.
const SAMPLE_TO: &str = "user@example.org";

/// Why nothing (or not everything) was written.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{}: {reason}", dir.display())]
    Folder { dir: PathBuf, reason: String },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("{0}")]
    Catalogue(String),
    #[error("{0}")]
    Mail(#[from] DeliveryError),
}

/// One rendered file.
pub struct Rendered {
    /// `registration.de.eml`.
    pub name: String,
    pub content: Vec<u8>,
}

/// `templates render` from the command line: writes into `out` (new, or empty), prints each
/// file, and each SMS's encoding and length; 0 when all was written.
pub fn main(config: &Config, out: &Path) -> u8 {
    let written = render_all(config).and_then(|files| write(out, &files).map(|()| files));
    match written {
        Ok(files) => {
            println!("wrote {} files to {}:", files.len(), out.display());
            for file in &files {
                if file.name.starts_with("sms.") {
                    println!("  {}  ({})", file.name, sms_size(&file.content));
                } else {
                    println!("  {}", file.name);
                }
            }
            0
        }
        Err(e) => {
            eprintln!("threepid-sidecar: templates render: {e}");
            1
        }
    }
}

/// Everything, in a fixed order (language by language).
pub fn render_all(config: &Config) -> Result<Vec<Rendered>, RenderError> {
    let catalogues = Catalogues::load(config.i18n.dir.as_deref(), &config.i18n.default_language)
        .map_err(|e| RenderError::Catalogue(e.to_string()))?;
    let tags: Vec<String> = catalogues.tags().map(str::to_owned).collect();
    let templates = Arc::new(Templates::load(
        config.email.templates_dir.as_deref(),
        Arc::new(catalogues),
    )?);
    let composer = Composer::new(&config.email, &config.server.server_name, templates.clone())?;
    let app_name = config.email.app_name.as_str();
    let link = delivery::email_link(
        &config.server.public_baseurl,
        sample::SID,
        sample::CLIENT_SECRET,
        sample::EMAIL_TOKEN,
    );
    let action = config
        .server
        .public_baseurl
        .join(delivery::EMAIL_SUBMIT_PATH)
        .map_or_else(|_| delivery::EMAIL_SUBMIT_PATH.to_owned(), String::from);
    let mut files = Vec::with_capacity(tags.len() * FILES_PER_LANGUAGE);
    for lang in &tags {
        let mut add = |what: &str, ext: &str, content: Vec<u8>| {
            files.push(Rendered {
                name: format!("{what}.{lang}.{ext}"),
                content,
            });
        };
        let mut mail = |what: &str, content: MailContent<'_>| -> Result<(), RenderError> {
            let request = MailRequest {
                to: SAMPLE_TO,
                language: lang,
                content,
            };
            add(what, "eml", composer.eml(&request, Stamp::Fixed)?);
            add(what, "html", composer.render(&request)?.html.into_bytes());
            Ok(())
        };
        for purpose in PURPOSES {
            mail(
                purpose.as_str(),
                MailContent::Verification {
                    purpose,
                    link: &link,
                    token: sample::EMAIL_TOKEN,
                },
            )?;
        }
        for notice in NOTICES {
            let what = match notice {
                Notice::PasswordChanged => "notice_password",
                Notice::AddressRemoved => "notice_removed",
            };
            mail(
                what,
                MailContent::Notice {
                    notice,
                    time: sample::TIME,
                    client_ip: sample::CLIENT_IP,
                },
            )?;
        }
        let mut add = |what: &str, ext: &str, content: String| {
            files.push(Rendered {
                name: format!("{what}.{lang}.{ext}"),
                content: content.into_bytes(),
            });
        };
        add(
            "sms",
            "txt",
            templates.sms(app_name, sample::SMS_CODE, lang)? + "\n",
        );
        for purpose in PURPOSES {
            let page = Page::Confirm {
                app_name,
                purpose,
                action: &action,
                sid: sample::SID,
                client_secret: sample::CLIENT_SECRET,
                token: sample::EMAIL_TOKEN,
            };
            add(
                &format!("confirm-{}", purpose.as_str()),
                "html",
                templates.page(page, lang)?,
            );
        }
        add(
            "success",
            "html",
            templates.page(Page::Success { app_name }, lang)?,
        );
        let failure = Page::Failure {
            app_name,
            reason: Failure::LinkExpired,
        };
        add("failure", "html", templates.page(failure, lang)?);
    }
    Ok(files)
}

/// Writes the files into `dir`, which must be new or empty: a file left from an earlier
/// render (a language since removed) would pass for a current one.
fn write(dir: &Path, files: &[Rendered]) -> Result<(), RenderError> {
    let fail = |reason: String| RenderError::Folder {
        dir: dir.to_owned(),
        reason,
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(fail(
                    "not empty: render into a new or empty folder, so that no older file passes for a current one".into(),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create it: {e}")))?;
        }
        Err(e) => return Err(fail(e.to_string())),
    }
    for file in files {
        std::fs::write(dir.join(&file.name), &file.content)
            .map_err(|e| fail(format!("cannot write {}: {e}", file.name)))?;
    }
    Ok(())
}

/// `GSM-7, 1 SMS: 97 of 160 places`: what an SMS costs. A longer one is sent in parts of
/// 153 places (67 characters in UCS-2), each billed as one SMS.
pub fn sms_size(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    let text = text.trim_end_matches('\n');
    let (encoding, used, single, part) = match gsm7_places(text) {
        Some(places) => ("GSM-7", places, 160, 153),
        None => ("UCS-2", text.encode_utf16().count(), 70, 67),
    };
    let parts = if used <= single {
        1
    } else {
        used.div_ceil(part)
    };
    let unit = if encoding == "GSM-7" {
        "places"
    } else {
        "characters"
    };
    if parts == 1 {
        format!("{encoding}, 1 SMS: {used} of {single} {unit}")
    } else {
        format!("{encoding}, {parts} SMS parts: {used} {unit}")
    }
}

#[cfg(test)]
mod tests;
