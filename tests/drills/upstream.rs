//! A homeserver stand-in that can be stopped and started again on the same port, which the
//! shared echo upstream (`tests/common/upstream.rs`) cannot: stopping closes the listener
//! and every open connection (as a crashed process would), starting binds the same port.
//! It answers every request 200 with a small JSON body.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A stand-in bound to one port for its whole life.
pub struct RestartableUpstream {
    pub addr: SocketAddr,
    serving: Option<Serving>,
}

struct Serving {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RestartableUpstream {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in upstream");
        let addr = listener.local_addr().expect("a local address");
        Self {
            addr,
            serving: Some(serve(listener)),
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener and every connection, and waits until they are closed.
    pub async fn stop(&mut self) {
        if let Some(serving) = self.serving.take() {
            let _ = serving.stop.send(true);
            let _ = serving.task.await;
        }
    }

    /// Listens on the same port again.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("rebinding {} failed: {e}", self.addr));
        self.serving = Some(serve(listener));
    }
}

fn serve(listener: TcpListener) -> Serving {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = stopped.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    connections.spawn(async move {
                        let service = service_fn(|request: Request<Incoming>| async move {
                            let body = format!("{{\"path\":\"{}\"}}", request.uri().path());
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Reap finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        // Aborts every connection task and waits until each has dropped its socket.
        connections.shutdown().await;
    });
    Serving { stop, task }
}
