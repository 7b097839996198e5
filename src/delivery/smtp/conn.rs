//! One SMTP connection: the greeting, EHLO, STARTTLS and AUTH when it opens, then one
//! transaction per message. When the server advertises PIPELINING (RFC 2920) the envelope
//! (`MAIL`, `RCPT`, `DATA`) goes out in one write and its replies are read together, and the
//! message with its closing `.` in a second: two round trips a message instead of four.
//! lettre formats the commands and parses the replies; the conversation is ours, because
//! lettre's connection writes and waits for every command on its own.

use std::io;
use std::str::FromStr;

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::commands::{Auth, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{
    ClientId, Extension, MailBodyParameter, MailParameter, ServerInfo,
};
use lettre::transport::smtp::response::Response;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Opening, Security, SendError, Step};

/// A reply line longer than this is refused (Postfix's `line_length_limit` is 2048).
const MAX_REPLY_LINE: usize = 2048;
/// A reply (all its lines) longer than this is refused.
const MAX_REPLY: usize = 64 * 1024;
/// AUTH challenges answered before giving up.
const MAX_CHALLENGES: u8 = 10;

/// What the connection runs over: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A send that failed, and whether it failed before the message could have been taken:
/// then a pooled connection that turns out to be dead may be replaced and the send tried
/// again without risking a second copy.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) error: SendError,
    pub(super) stale: bool,
}

/// An open SMTP session, ready for a transaction.
pub(super) struct Connection {
    stream: BufReader<Box<dyn Stream>>,
    info: ServerInfo,
    pipelining: bool,
}

impl Connection {
    /// Greeting, EHLO, STARTTLS when `security` asks for it (refused if the server does not
    /// offer it), EHLO again, AUTH when there are credentials. `trace` follows along: the
    /// step in hand when this fails, and what the server said before.
    pub(super) async fn open(
        tcp: TcpStream,
        host: &str,
        security: &Security,
        hello: &ClientId,
        credentials: Option<&Credentials>,
        trace: &mut Opening,
    ) -> Result<Self, SendError> {
        let stream: Box<dyn Stream> = match security {
            Security::Implicit(connector) => {
                trace.step = Step::Tls;
                let stream = tls(connector, host, tcp).await?;
                trace.tls = tls_version(&stream);
                Box::new(stream)
            }
            Security::None | Security::StartTls(_) => Box::new(tcp),
        };
        let mut conn = Self::over(stream);
        trace.step = Step::Greeting;
        let greeting = conn.reply().await?.positive()?;
        trace.greeting = Some(greeting.first_line());
        trace.step = Step::Ehlo;
        conn.ehlo(hello).await?;
        if let Security::StartTls(connector) = security {
            trace.step = Step::StartTls;
            if !conn.info.supports_feature(Extension::StartTls) {
                return Err(SendError::Protocol(
                    "STARTTLS is not supported on this server".into(),
                ));
            }
            conn.command("STARTTLS\r\n").await?;
            // Anything the server sent after its 220 came before the TLS handshake and
            // could have been injected: refuse rather than read it as a TLS reply.
            if !conn.stream.buffer().is_empty() {
                return Err(SendError::Protocol(
                    "the server sent data after agreeing to STARTTLS".into(),
                ));
            }
            let plain = conn.stream.into_inner();
            let stream = tls(connector, host, plain).await?;
            trace.tls = tls_version(&stream);
            conn = Self::over(Box::new(stream));
            conn.ehlo(hello).await?;
        }
        if let Some(credentials) = credentials {
            trace.step = Step::Auth;
            trace.auth = Some(conn.auth(credentials).await?);
        }
        trace.step = Step::Ready;
        Ok(conn)
    }

    fn over(stream: Box<dyn Stream>) -> Self {
        Self {
            stream: BufReader::new(stream),
            info: ServerInfo::default(),
            pipelining: false,
        }
    }

    /// Sends one message: its envelope, then its content; returns the server's reply to the
    /// content (its first line). Every reply is read before this returns, so a connection
    /// whose send completed (even with a refusal) is in step.
    pub(super) async fn send(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<String, Failed> {
        let mut options = Vec::new();
        let mut addresses = envelope.from().into_iter().chain(envelope.to());
        if addresses.any(|a: &Address| !AsRef::<str>::as_ref(a).is_ascii()) {
            if !self.info.supports_feature(Extension::SmtpUtfEight) {
                return Err(unsent(SendError::Unsendable(
                    "the envelope has non-ASCII addresses but the server does not support SMTPUTF8"
                        .into(),
                )));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !message.is_ascii() {
            if !self.info.supports_feature(Extension::EightBitMime) {
                return Err(unsent(SendError::Unsendable(
                    "the message is not ASCII but the server does not support 8BITMIME".into(),
                )));
            }
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mut commands = vec![Mail::new(envelope.from().cloned(), options).to_string()];
        commands.extend(
            envelope
                .to()
                .iter()
                .map(|to| Rcpt::new(to.clone(), Vec::new()).to_string()),
        );
        commands.push("DATA\r\n".to_owned());
        let envelope_sent = if self.pipelining {
            self.pipelined(&commands).await
        } else {
            self.one_by_one(&commands).await
        };
        envelope_sent.map_err(|error| Failed {
            stale: is_stale(&error),
            error,
        })?;
        // From here the server may have taken the message: never stale.
        let mut content = Vec::with_capacity(message.len() + message.len() / 64 + 8);
        dot_stuff(message, &mut content);
        content.extend_from_slice(b"\r\n.\r\n");
        let sent = async {
            self.write(&content).await?;
            self.reply().await?.positive()
        };
        sent.await
            .map(|reply| reply.first_line())
            .map_err(|error| Failed {
                error,
                stale: false,
            })
    }

    /// Ends the session politely; whatever the server answers (or not) is of no interest.
    pub(super) async fn quit(mut self) {
        if self.write(b"QUIT\r\n").await.is_ok() {
            let _ = self.reply().await;
        }
    }

    /// The envelope in one write, then its replies in order; the first refusal is the
    /// answer. A `354` to DATA after a refusal would leave the server waiting for content:
    /// the connection is then closed, never reused (the caller drops it on any error).
    async fn pipelined(&mut self, commands: &[String]) -> Result<(), SendError> {
        self.write(commands.concat().as_bytes()).await?;
        let mut refusal = None;
        for _ in commands {
            let reply = self.reply().await?;
            if refusal.is_none() {
                refusal = reply.positive().err();
            }
        }
        refusal.map_or(Ok(()), Err)
    }

    async fn one_by_one(&mut self, commands: &[String]) -> Result<(), SendError> {
        for command in commands {
            self.command(command).await?;
        }
        Ok(())
    }

    async fn ehlo(&mut self, hello: &ClientId) -> Result<(), SendError> {
        let reply = self.command(&Ehlo::new(hello.clone()).to_string()).await?;
        let response = reply.response()?;
        self.info = ServerInfo::from_response(&response)
            .map_err(|e| SendError::Protocol(format!("EHLO: {e}")))?;
        self.pipelining = response.message().any(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
        });
        Ok(())
    }

    /// AUTH PLAIN or LOGIN, whichever the server offers first in that order; returns the
    /// mechanism used.
    async fn auth(&mut self, credentials: &Credentials) -> Result<String, SendError> {
        let mechanism = self
            .info
            .get_auth_mechanism(&[Mechanism::Plain, Mechanism::Login])
            .ok_or_else(|| {
                SendError::Protocol("no compatible authentication mechanism was found".into())
            })?;
        let auth_error = |e: lettre::transport::smtp::Error| SendError::Protocol(e.to_string());
        let first = Auth::new(mechanism, credentials.clone(), None).map_err(auth_error)?;
        let mut reply = self.command(&first.to_string()).await?;
        let mut challenges = MAX_CHALLENGES;
        while reply.code == 334 {
            if challenges == 0 {
                return Err(SendError::Protocol("too many AUTH challenges".into()));
            }
            challenges -= 1;
            let answer =
                Auth::new_from_response(mechanism, credentials.clone(), &reply.response()?)
                    .map_err(auth_error)?;
            reply = self.command(&answer.to_string()).await?;
        }
        Ok(mechanism.to_string())
    }

    /// Writes `line` and reads its reply, which must be positive (2xx or 3xx).
    async fn command(&mut self, line: &str) -> Result<Reply, SendError> {
        self.write(line.as_bytes()).await?;
        self.reply().await?.positive()
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await?;
        Ok(())
    }

    /// One reply: lines `NNN-text` up to the last, `NNN text` (or `NNN`).
    async fn reply(&mut self) -> Result<Reply, SendError> {
        let mut text = Vec::with_capacity(64);
        loop {
            let start = text.len();
            read_line(&mut self.stream, &mut text).await?;
            let line = &text[start..];
            if line.len() < 5 || !line[..3].iter().all(u8::is_ascii_digit) {
                return Err(SendError::Protocol("a malformed reply line".into()));
            }
            if text.len() > MAX_REPLY {
                return Err(SendError::Protocol("a reply too large".into()));
            }
            if line[3] != b'-' {
                let code = line[..3]
                    .iter()
                    .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
                return Ok(Reply {
                    code,
                    text: String::from_utf8_lossy(&text).into_owned(),
                });
            }
        }
    }
}

/// Reads up to and including the next `\n`, at most [`MAX_REPLY_LINE`] bytes.
async fn read_line(
    stream: &mut BufReader<Box<dyn Stream>>,
    out: &mut Vec<u8>,
) -> Result<(), SendError> {
    let mut len = 0;
    loop {
        let buf = stream.fill_buf().await?;
        if buf.is_empty() {
            return Err(SendError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        len += chunk.len();
        if len > MAX_REPLY_LINE {
            return Err(SendError::Protocol("a reply line too long".into()));
        }
        out.extend_from_slice(chunk);
        let used = chunk.len();
        stream.consume(used);
        if done {
            return Ok(());
        }
    }
}

async fn tls<S>(
    connector: &TlsConnector,
    host: &str,
    stream: S,
) -> Result<tokio_rustls::client::TlsStream<S>, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| SendError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    Ok(connector.connect(name, stream).await?)
}

/// `TLS 1.3`: the protocol version a handshake settled on.
fn tls_version<S>(stream: &tokio_rustls::client::TlsStream<S>) -> Option<String> {
    let version = stream.get_ref().1.protocol_version()?;
    Some(crate::tls::version_name(version))
}

/// A reply as read: its code and its whole text (every line, with their CRLFs).
#[derive(Debug)]
struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    /// Its first line, without the line end: `250 2.0.0 Ok: queued as 4Xy`.
    fn first_line(&self) -> String {
        self.text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    }

    /// The reply itself when positive (2xx, 3xx); a refusal otherwise, worded as lettre
    /// words it (`permanent error (550): …`), with the first line of the server's text.
    fn positive(self) -> Result<Self, SendError> {
        if (200..400).contains(&self.code) {
            return Ok(self);
        }
        let line = self.text.lines().next().unwrap_or_default();
        let said = line.get(4..).unwrap_or_default().trim_end();
        let kind = if self.code >= 500 {
            "permanent"
        } else {
            "transient"
        };
        Err(SendError::Refused {
            code: self.code,
            permanent: self.code >= 500,
            text: format!("{kind} error ({}): {said}", self.code),
        })
    }

    /// As lettre's [`Response`], for what lettre interprets (EHLO, AUTH challenges).
    fn response(&self) -> Result<Response, SendError> {
        Response::from_str(&self.text)
            .map_err(|e| SendError::Protocol(format!("unparsable reply: {e}")))
    }
}

fn unsent(error: SendError) -> Failed {
    Failed {
        error,
        stale: false,
    }
}

/// A pooled connection that failed this way before its message went out had died while
/// idle (closed, reset, or told `421` that the server is closing it).
fn is_stale(error: &SendError) -> bool {
    match error {
        SendError::Io(_) => true,
        SendError::Refused { code, .. } => *code == 421,
        SendError::Protocol(_) | SendError::Unsendable(_) => false,
    }
}

/// SMTP transparency (RFC 5321 §4.5.2): a line that starts with `.` gets a second one.
/// The same rule as lettre's own client codec, so the bytes on the wire are unchanged.
/// Copies a line at a time: a byte at a time was a tenth of a mail's sending time.
pub(super) fn dot_stuff(message: &[u8], out: &mut Vec<u8>) {
    let mut line_start = true;
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line_start && line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        line_start = line.ends_with(b"\r\n");
    }
}
