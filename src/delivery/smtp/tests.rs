//! The client conversation against a scripted in-process server (aiosmtpd, which the
//! integration tests use, offers neither PIPELINING nor STARTTLS).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::conn::dot_stuff;
use super::{Opening, Security, SendError, SmtpClient, Step};

const WAIT: Duration = Duration::from_secs(5);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the scripted server does.
#[derive(Clone, Default)]
struct Script {
    pipelining: bool,
    starttls: Option<TlsAcceptor>,
    /// `AUTH PLAIN` must carry this user and password.
    auth: Option<(&'static str, &'static str)>,
    /// The reply to RCPT (default `250 ok`).
    rcpt_reply: Option<&'static str>,
    /// Close the connection once a message is through.
    one_message: bool,
    /// Answer STARTTLS with a second reply in the same write, before any handshake: what
    /// a man in the middle would inject.
    inject_after_starttls: bool,
}

/// What the server saw.
#[derive(Default)]
struct Seen {
    connections: usize,
    /// Every command line, in order.
    lines: Vec<String>,
    /// Message contents as received (still dot-stuffed), without the final `.` line.
    messages: Vec<Vec<u8>>,
    /// For each envelope: whether RCPT and DATA had arrived before the reply to MAIL.
    envelope_in_one_go: Vec<bool>,
}

async fn server(script: Script) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            shared.lock().unwrap().connections += 1;
            tokio::spawn(session(Box::new(tcp), script.clone(), shared.clone()));
        }
    });
    (port, seen)
}

async fn session(stream: Box<dyn Io>, script: Script, seen: Arc<Mutex<Seen>>) {
    let mut io = BufReader::new(stream);
    let mut tls = false;
    reply(&mut io, "220 test ESMTP\r\n").await;
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        seen.lock().unwrap().lines.push(line.trim_end().to_owned());
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                let mut ehlo = String::from("250-test\r\n");
                if script.pipelining {
                    ehlo.push_str("250-PIPELINING\r\n");
                }
                if script.starttls.is_some() && !tls {
                    ehlo.push_str("250-STARTTLS\r\n");
                }
                if script.auth.is_some() {
                    ehlo.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                ehlo.push_str("250 8BITMIME\r\n");
                reply(&mut io, &ehlo).await;
            }
            "STAR" if script.inject_after_starttls => {
                reply(
                    &mut io,
                    "220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n",
                )
                .await;
                tokio::time::sleep(WAIT).await;
                return;
            }
            "STAR" => {
                reply(&mut io, "220 go ahead\r\n").await;
                let acceptor = script.starttls.clone().expect("STARTTLS offered");
                let plain = io.into_inner();
                io = BufReader::new(Box::new(acceptor.accept(plain).await.unwrap()));
                tls = true;
            }
            "AUTH" => {
                let (user, password) = script.auth.expect("AUTH offered");
                let want = format!(
                    "AUTH PLAIN {}",
                    base64_plain(&format!("\0{user}\0{password}"))
                );
                let ok = line.trim_end() == want;
                reply(&mut io, if ok { "235 ok\r\n" } else { "535 no\r\n" }).await;
            }
            "MAIL" => {
                // Whether the rest of the envelope is already here, before any reply.
                let in_one_go = !io.buffer().is_empty();
                seen.lock().unwrap().envelope_in_one_go.push(in_one_go);
                reply(&mut io, "250 sender ok\r\n").await;
            }
            "RCPT" => reply(&mut io, script.rcpt_reply.unwrap_or("250 ok\r\n")).await,
            "DATA" => {
                if script.rcpt_reply.is_some_and(|r| !r.starts_with('2')) {
                    reply(&mut io, "554 no valid recipients\r\n").await;
                    continue;
                }
                reply(&mut io, "354 go on\r\n").await;
                let mut message = Vec::new();
                loop {
                    let mut data = Vec::new();
                    io.read_until(b'\n', &mut data).await.unwrap();
                    if data == b".\r\n" {
                        break;
                    }
                    message.extend_from_slice(&data);
                }
                seen.lock().unwrap().messages.push(message);
                reply(&mut io, "250 queued\r\n").await;
                if script.one_message {
                    return;
                }
            }
            "QUIT" => {
                reply(&mut io, "221 bye\r\n").await;
                return;
            }
            _ => reply(&mut io, "500 what\r\n").await,
        }
    }
}

async fn reply(io: &mut BufReader<Box<dyn Io>>, text: &str) {
    let _ = io.get_mut().write_all(text.as_bytes()).await;
}

fn base64_plain(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A server side with a fresh self-signed certificate for `localhost`, and a client side
/// that trusts only it.
fn tls_pair() -> (TlsAcceptor, TlsConnector) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        TlsAcceptor::from(Arc::new(server_config)),
        TlsConnector::from(Arc::new(client_config)),
    )
}

fn client(port: u16, security: Security, credentials: Option<Credentials>) -> SmtpClient {
    SmtpClient::new("localhost".into(), port, security, credentials, WAIT)
}

fn envelope() -> Envelope {
    let from: Address = "noreply@example.org".parse().unwrap();
    let to: Address = "alice@example.org".parse().unwrap();
    Envelope::new(Some(from), vec![to]).unwrap()
}

const MESSAGE: &[u8] = b"Subject: hi\r\n\r\nline one\r\n.starts with a dot\r\n";

async fn send(client: &SmtpClient) -> Result<(), SendError> {
    tokio::time::timeout(WAIT, client.send(&envelope(), MESSAGE))
        .await
        .expect("the send finishes")
}

#[tokio::test]
async fn with_pipelining_the_envelope_goes_out_before_any_reply_and_the_connection_is_reused() {
    let (port, seen) = server(Script {
        pipelining: true,
        ..Script::default()
    })
    .await;
    let client = client(port, Security::None, None);
    send(&client).await.unwrap();
    send(&client).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.connections, 1, "one pooled connection");
    assert_eq!(seen.envelope_in_one_go, [true, true]);
    assert_eq!(
        seen.lines[1..4],
        [
            "MAIL FROM:<noreply@example.org>",
            "RCPT TO:<alice@example.org>",
            "DATA"
        ]
    );
    assert_eq!(seen.messages.len(), 2);
    assert_eq!(
        seen.messages[0],
        b"Subject: hi\r\n\r\nline one\r\n..starts with a dot\r\n\r\n"
    );
}

#[tokio::test]
async fn without_pipelining_each_command_waits_for_its_reply() {
    let (port, seen) = server(Script::default()).await;
    let client = client(port, Security::None, None);
    send(&client).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.envelope_in_one_go, [false]);
    assert_eq!(seen.messages.len(), 1);
}

#[tokio::test]
async fn a_refused_recipient_is_a_permanent_refusal_and_the_connection_is_not_reused() {
    for pipelining in [true, false] {
        let (port, seen) = server(Script {
            pipelining,
            rcpt_reply: Some("550 5.1.1 <alice@example.org>: no such user\r\n"),
            ..Script::default()
        })
        .await;
        let client = client(port, Security::None, None);
        for _ in 0..2 {
            match send(&client).await {
                Err(SendError::Refused {
                    code: 550,
                    permanent: true,
                    text,
                }) => assert_eq!(
                    text,
                    "permanent error (550): 5.1.1 <alice@example.org>: no such user"
                ),
                other => panic!("pipelining {pipelining}: {other:?}"),
            }
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.connections, 2, "pipelining {pipelining}");
        assert!(seen.messages.is_empty());
    }
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_replaced_and_the_message_sent_once() {
    let (port, seen) = server(Script {
        pipelining: true,
        one_message: true,
        ..Script::default()
    })
    .await;
    let client = client(port, Security::None, None);
    send(&client).await.unwrap();
    send(&client)
        .await
        .expect("a fresh connection replaces the closed one");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.connections, 2);
    assert_eq!(seen.messages.len(), 2, "each message once");
}

#[tokio::test]
async fn starttls_then_auth_plain_then_the_message_over_tls() {
    let (acceptor, connector) = tls_pair();
    let (port, seen) = server(Script {
        pipelining: true,
        starttls: Some(acceptor),
        auth: Some(("user", "secret")),
        ..Script::default()
    })
    .await;
    let credentials = Credentials::new("user".into(), "secret".into());
    let client = client(port, Security::StartTls(connector), Some(credentials));
    send(&client).await.unwrap();
    let seen = seen.lock().unwrap();
    let verbs: Vec<&str> = seen.lines.iter().map(|l| &l[..4]).collect();
    assert_eq!(
        verbs,
        ["EHLO", "STAR", "EHLO", "AUTH", "MAIL", "RCPT", "DATA"]
    );
    assert_eq!(seen.messages.len(), 1);
}

#[tokio::test]
async fn starttls_is_required_when_asked_for() {
    let (port, seen) = server(Script::default()).await;
    let client = client(
        port,
        Security::StartTls(super::tls_connector().unwrap()),
        None,
    );
    let err = send(&client).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Protocol(text) if text.contains("STARTTLS")),
        "{err:?}"
    );
    assert!(seen.lock().unwrap().messages.is_empty());
}

#[tokio::test]
async fn replies_sent_before_the_starttls_handshake_are_refused() {
    let (acceptor, connector) = tls_pair();
    let (port, seen) = server(Script {
        starttls: Some(acceptor),
        inject_after_starttls: true,
        ..Script::default()
    })
    .await;
    let client = client(port, Security::StartTls(connector), None);
    let err = send(&client).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Protocol(text) if text.contains("after agreeing to STARTTLS")),
        "{err:?}"
    );
    let seen = seen.lock().unwrap();
    assert!(seen.messages.is_empty());
    assert_eq!(seen.lines.last().map(String::as_str), Some("STARTTLS"));
}

#[tokio::test]
async fn a_probe_opens_the_session_with_starttls_and_auth_sends_nothing_and_says_quit() {
    let (acceptor, connector) = tls_pair();
    let (port, seen) = server(Script {
        starttls: Some(acceptor),
        auth: Some(("user", "secret")),
        ..Script::default()
    })
    .await;
    let credentials = Credentials::new("user".into(), "secret".into());
    let client = client(port, Security::StartTls(connector), Some(credentials));
    let mut trace = Opening::default();
    client.probe(&mut trace).await.unwrap();
    assert_eq!(trace.step, Step::Ready);
    assert_eq!(trace.greeting.as_deref(), Some("220 test ESMTP"));
    assert_eq!(trace.tls.as_deref(), Some("TLS 1.3"));
    assert_eq!(trace.auth.as_deref(), Some("PLAIN"));
    let seen = seen.lock().unwrap();
    let verbs: Vec<&str> = seen.lines.iter().map(|l| &l[..4]).collect();
    assert_eq!(verbs, ["EHLO", "STAR", "EHLO", "AUTH", "QUIT"]);
    assert!(seen.messages.is_empty());
}

#[tokio::test]
async fn a_probe_with_the_wrong_password_fails_at_auth_with_the_servers_reply() {
    let (port, _seen) = server(Script {
        auth: Some(("user", "secret")),
        ..Script::default()
    })
    .await;
    let credentials = Credentials::new("user".into(), "wrong".into());
    let client = client(port, Security::None, Some(credentials));
    let mut trace = Opening::default();
    let err = client.probe(&mut trace).await.unwrap_err();
    assert_eq!(trace.step, Step::Auth);
    assert_eq!(trace.tls, None);
    assert!(
        matches!(&err, SendError::Refused { code: 535, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_traced_send_returns_the_final_reply_and_keeps_no_connection() {
    let (port, seen) = server(Script::default()).await;
    let client = client(port, Security::None, None);
    let mut trace = Opening::default();
    let reply = client
        .send_traced(&mut trace, &envelope(), MESSAGE)
        .await
        .unwrap();
    assert_eq!(reply, "250 queued");
    assert_eq!(trace.step, Step::Ready);
    send(&client).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.connections, 2, "the traced connection was not pooled");
    assert_eq!(seen.lines.iter().filter(|l| *l == "QUIT").count(), 1);
}

#[test]
fn dot_stuffing_doubles_a_leading_dot_on_every_line_as_lettre_does() {
    let cases: &[(&[u8], &[u8])] = &[
        (b".a\r\n.b\r\nc.d\r\n", b"..a\r\n..b\r\nc.d\r\n"),
        (b"a\r\n\r\n.\r\n", b"a\r\n\r\n..\r\n"),
        // A bare LF or CR does not start a line.
        (b"a\n.b\r.c", b"a\n.b\r.c"),
        (b"a\r\r\n.b", b"a\r\r\n..b"),
    ];
    for (input, want) in cases {
        let mut out = Vec::new();
        dot_stuff(input, &mut out);
        assert_eq!(out, *want, "{:?}", String::from_utf8_lossy(input));
    }
}
