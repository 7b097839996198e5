//! A mail as it goes out: the templates of its kind rendered in its language, put into a
//! `multipart/alternative` message with its headers. The sender and `templates render` build
//! mail the same way, here.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::address::Envelope;
use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue,
};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};

use super::mask_email;
use super::skeleton::MailSkeleton;
use crate::config::Email;
use crate::delivery::{DeliveryError, MailContent, MailRequest};
use crate::templates::{MailVars, NoticeVars, RenderedMail, Templates};
use crate::threepid::Purpose;

/// When a message is dated, and how its Message-ID and MIME boundary are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Now, at random: every mail that is sent.
    Now,
    /// Always the same (2026-01-01 00:00 UTC, fixed ID and boundary), so that previews of two
    /// versions can be compared line by line.
    Fixed,
}

/// Renders and assembles mail. Built once; holds no transport.
pub struct Composer {
    from: Mailbox,
    app_name: String,
    server_name: String,
    templates: Arc<Templates>,
    /// The verification mails' skeletons, per language (in the catalogues' order) and
    /// purpose, each made on first use; `None` where the templates need rendering each time.
    skeletons: Vec<[OnceLock<Option<MailSkeleton>>; 3]>,
}

impl Composer {
    /// `email.from` must parse as a mailbox (config validation has checked it already).
    pub fn new(
        config: &Email,
        server_name: &str,
        templates: Arc<Templates>,
    ) -> Result<Self, DeliveryError> {
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|e| DeliveryError::Build(format!("email.from: {e}")))?;
        Ok(Self {
            from,
            app_name: config.app_name.clone(),
            server_name: server_name.to_owned(),
            skeletons: templates
                .catalogues()
                .tags()
                .map(|_| Default::default())
                .collect(),
            templates,
        })
    }

    /// The skeleton of `purpose`'s mail in `language`, when its templates allow one.
    pub(super) fn skeleton(&self, purpose: Purpose, language: &str) -> Option<&MailSkeleton> {
        let catalogues = self.templates.catalogues();
        let lang = catalogues.resolve(Some(language));
        let index = catalogues.tags().position(|tag| tag == lang)?;
        let slot = match purpose {
            Purpose::Registration => 0,
            Purpose::PasswordReset => 1,
            Purpose::AddThreepid => 2,
        };
        self.skeletons[index][slot]
            .get_or_init(|| {
                MailSkeleton::build(|link, token| self.verification(purpose, link, token, lang))
            })
            .as_ref()
    }

    pub(super) fn verification(
        &self,
        purpose: Purpose,
        link: &str,
        token: &str,
        language: &str,
    ) -> Result<RenderedMail, crate::templates::TemplateError> {
        self.templates.mail(
            purpose,
            &MailVars {
                app_name: &self.app_name,
                server_name: &self.server_name,
                link,
                token,
            },
            language,
        )
    }

    /// Subject, text and HTML of a mail, in its language.
    pub fn render(&self, mail: &MailRequest<'_>) -> Result<RenderedMail, DeliveryError> {
        match &mail.content {
            MailContent::Verification {
                purpose,
                link,
                token,
            } => match self.skeleton(*purpose, mail.language) {
                Some(skeleton) => Ok(skeleton.fill(link, token)),
                None => self.verification(*purpose, link, token, mail.language),
            },
            MailContent::Notice {
                notice,
                time,
                client_ip,
            } => self.templates.notice(
                *notice,
                &NoticeVars {
                    app_name: &self.app_name,
                    server_name: &self.server_name,
                    time,
                    client_ip,
                },
                mail.language,
            ),
        }
        .map_err(|e| DeliveryError::Build(e.to_string()))
    }

    /// The whole message: From, To, one-line Subject, Date, Message-ID on the sender's
    /// domain, `Auto-Submitted`, `Content-Language`, and text + HTML alternatives.
    pub(super) fn message(
        &self,
        mail: &MailRequest<'_>,
        stamp: Stamp,
    ) -> Result<Message, DeliveryError> {
        let to: Address = mail.to.parse().map_err(|_| {
            DeliveryError::Build(format!("invalid recipient {}", mask_email(mail.to)))
        })?;
        let rendered = self.render(mail)?;
        let domain = self.from.email.domain();
        let (date, message_id) = match stamp {
            Stamp::Now => (
                SystemTime::now(),
                format!("<{:032x}@{domain}>", rand::random::<u128>()),
            ),
            Stamp::Fixed => (
                UNIX_EPOCH + Duration::from_secs(FIXED_DATE),
                format!("<preview@{domain}>"),
            ),
        };
        let mut alternative = MultiPart::alternative();
        if stamp == Stamp::Fixed {
            alternative = alternative.boundary(FIXED_BOUNDARY);
        }
        // The envelope given, so that lettre does not parse it back out of the headers.
        let envelope = Envelope::new(Some(self.from.email.clone()), vec![to.clone()])
            .map_err(|e| DeliveryError::Build(e.to_string()))?;
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .envelope(envelope)
            .subject(rendered.subject)
            .date(date)
            .message_id(Some(message_id))
            .header(AutoSubmitted)
            .header(ContentLanguage(rendered.language))
            .multipart(
                alternative
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(body(rendered.text)),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(body(rendered.html)),
                    ),
            )
            .map_err(|e| DeliveryError::Build(e.to_string()))
    }

    /// The message as an `.eml` file holds it (RFC 5322, CRLF line ends).
    pub fn eml(&self, mail: &MailRequest<'_>, stamp: Stamp) -> Result<Vec<u8>, DeliveryError> {
        Ok(self.message(mail, stamp)?.formatted())
    }
}

/// A part's text with its transfer encoding: `7bit` when it is ASCII, holds no NUL or bare
/// CR and no line longer than RFC 5322's 998 octets; else lettre's choice
/// (quoted-printable or base64). lettre's own chooser takes `7bit` only up to 76 characters
/// a line, and a verification link alone is longer, so every mail went out
/// quoted-printable: encoded here and decoded by every reader for nothing, and a fifth of
/// a mail's composition time.
pub(super) fn body(text: String) -> Body {
    const MAX_LINE: usize = 998;
    if !text.is_ascii() || text.contains('\0') {
        return Body::new(text);
    }
    let mut crlf = Vec::with_capacity(text.len() + text.len() / 32 + 2);
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.len() > MAX_LINE || line.contains('\r') {
            return Body::new(text);
        }
        if i > 0 {
            crlf.extend_from_slice(b"\r\n");
        }
        crlf.extend_from_slice(line.as_bytes());
    }
    Body::dangerous_pre_encoded(crlf, ContentTransferEncoding::SevenBit)
}

/// 2026-01-01T00:00:00Z, in seconds since the epoch.
const FIXED_DATE: u64 = 1_767_225_600;
const FIXED_BOUNDARY: &str = "threepid-sidecar-preview";

/// `Auto-Submitted: auto-generated` (RFC 3834): no vacation replies to the sender.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// `Content-Language` (RFC 3282): the language the mail is written in.
#[derive(Clone)]
struct ContentLanguage(String);

impl Header for ContentLanguage {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Content-Language")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}
