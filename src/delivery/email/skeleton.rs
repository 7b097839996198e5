//! A verification mail rendered once per purpose and language, kept as the text around its
//! link and token. Every verification mail of a replica differs from the next only by those
//! two values, yet rendering its three templates (a dozen catalogue messages each) was the
//! largest part of composing it. The text is trusted only when it shows that the templates
//! use link and token as they are: the skeleton is cut from a rendering with one sample
//! pair, and must give back, filled with a second pair of other lengths and characters, the
//! templates' own rendering of that pair byte for byte. A template that transforms the link
//! (wraps it, shortens it, branches on it) fails that check and is rendered every time.

use std::fmt::Write as _;

use minijinja::HtmlEscape;

use crate::templates::RenderedMail;

/// Sample pairs, unlike each other in length and content, with the characters that HTML
/// escaping changes, so that an escaped use can be told from a plain one.
const FIRST: Sample = Sample {
    link: "https://hs.example/_matrix/submit?sid=S1&client_secret=C1&token=T1",
    token: "t0k/1'a",
};
const SECOND: Sample = Sample {
    link: "http://other.example:8448/x/y?token=Zz9-longer&sid=another.session_id&q=\"<>\"",
    token: "second/token&\"value\"",
};

#[derive(Clone, Copy)]
struct Sample {
    link: &'static str,
    token: &'static str,
}

/// The subject, text and HTML of one purpose in one language, with holes for the values.
#[derive(Debug)]
pub(super) struct MailSkeleton {
    subject: Skeleton,
    text: Skeleton,
    html: Skeleton,
    language: String,
}

impl MailSkeleton {
    /// Cut from the rendering with `FIRST`, when `render` of `SECOND` agrees with it.
    pub(super) fn build<E>(
        mut render: impl FnMut(&str, &str) -> Result<RenderedMail, E>,
    ) -> Option<Self> {
        let first = render(FIRST.link, FIRST.token).ok()?;
        let second = render(SECOND.link, SECOND.token).ok()?;
        let skeleton = Self {
            subject: Skeleton::cut(&first.subject),
            text: Skeleton::cut(&first.text),
            html: Skeleton::cut(&first.html),
            language: first.language,
        };
        let filled = skeleton.fill(SECOND.link, SECOND.token);
        let same = filled.subject == second.subject
            && filled.text == second.text
            && filled.html == second.html
            && filled.language == second.language;
        same.then_some(skeleton)
    }

    /// The mail for this link and token.
    pub(super) fn fill(&self, link: &str, token: &str) -> RenderedMail {
        RenderedMail {
            subject: self.subject.fill(link, token),
            text: self.text.fill(link, token),
            html: self.html.fill(link, token),
            language: self.language.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Link,
    LinkEscaped,
    Token,
    TokenEscaped,
}

#[derive(Debug)]
struct Skeleton(Vec<Piece>);

impl Skeleton {
    /// `rendered` (made with `FIRST`) cut at every use of the sample link and token, plain or
    /// HTML-escaped; the link first, since it may hold a token of its own.
    fn cut(rendered: &str) -> Self {
        let holes = [
            (escaped(FIRST.link), Piece::LinkEscaped),
            (FIRST.link.to_owned(), Piece::Link),
            (escaped(FIRST.token), Piece::TokenEscaped),
            (FIRST.token.to_owned(), Piece::Token),
        ];
        let mut pieces = vec![Piece::Text(rendered.to_owned())];
        for (needle, hole) in holes {
            pieces = pieces
                .into_iter()
                .flat_map(|piece| match piece {
                    Piece::Text(text) => split(&text, &needle, &hole),
                    other => vec![other],
                })
                .collect();
        }
        Self(pieces)
    }

    fn fill(&self, link: &str, token: &str) -> String {
        let mut out = String::with_capacity(
            self.0
                .iter()
                .map(|p| match p {
                    Piece::Text(t) => t.len(),
                    _ => link.len() + link.len() / 4,
                })
                .sum(),
        );
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Link => out.push_str(link),
                Piece::Token => out.push_str(token),
                Piece::LinkEscaped => {
                    let _ = write!(out, "{}", HtmlEscape(link));
                }
                Piece::TokenEscaped => {
                    let _ = write!(out, "{}", HtmlEscape(token));
                }
            }
        }
        out
    }
}

/// `text` cut at each `needle`, with `hole` in place of each.
fn split(text: &str, needle: &str, hole: &Piece) -> Vec<Piece> {
    let mut pieces = Vec::new();
    for (i, part) in text.split(needle).enumerate() {
        if i > 0 {
            pieces.push(hole.clone());
        }
        if !part.is_empty() {
            pieces.push(Piece::Text(part.to_owned()));
        }
    }
    pieces
}

/// As an `.html` template writes a value.
fn escaped(value: &str) -> String {
    HtmlEscape(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(subject: String, text: String, html: String) -> RenderedMail {
        RenderedMail {
            subject,
            text,
            html,
            language: "en".into(),
        }
    }

    /// Renders like a template that uses link and token as they are.
    fn plain(link: &str, token: &str) -> Result<RenderedMail, ()> {
        Ok(mail(
            "Confirm".into(),
            format!("Open\n\n{link}\n\nor type {token}\n"),
            format!(
                "<a href=\"{0}\">{0}</a> <b>{1}</b>",
                escaped(link),
                escaped(token)
            ),
        ))
    }

    #[test]
    fn a_skeleton_fills_in_as_the_templates_render() {
        let skeleton = MailSkeleton::build(plain).expect("plain templates give a skeleton");
        let link = "https://m.example.org/submit?sid=abc&client_secret=x/y&token=123";
        let filled = skeleton.fill(link, "123456");
        let rendered = plain(link, "123456").unwrap();
        assert_eq!(filled.subject, rendered.subject);
        assert_eq!(filled.text, rendered.text);
        assert_eq!(filled.html, rendered.html);
        assert!(filled.html.contains("client_secret=x&#x2f;y&amp;token"));
    }

    #[test]
    fn templates_that_transform_the_link_get_no_skeleton() {
        let shortened = |link: &str, token: &str| -> Result<RenderedMail, ()> {
            Ok(mail(
                "s".into(),
                format!("{}… {token}", &link[..30]),
                String::new(),
            ))
        };
        assert!(MailSkeleton::build(shortened).is_none());
        let branching = |link: &str, token: &str| -> Result<RenderedMail, ()> {
            let kind = if link.starts_with("https") {
                "secure"
            } else {
                "plain"
            };
            Ok(mail(
                "s".into(),
                format!("{kind} {link} {token}"),
                String::new(),
            ))
        };
        assert!(MailSkeleton::build(branching).is_none());
        let upper = |link: &str, token: &str| -> Result<RenderedMail, ()> {
            Ok(mail("s".into(), link.to_owned(), token.to_uppercase()))
        };
        assert!(MailSkeleton::build(upper).is_none());
        let failing = |_: &str, _: &str| -> Result<RenderedMail, ()> { Err(()) };
        assert!(MailSkeleton::build(failing).is_none());
    }
}
