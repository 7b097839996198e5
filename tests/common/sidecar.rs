//! The sidecar started in process on `127.0.0.1:0` (the mini-redis `start_server()`
//! pattern), with a config built from the embedded default plus per-test settings.

use std::net::SocketAddr;

use tempfile::TempDir;
use threepid_sidecar::config::Config;
use threepid_sidecar::{Running, start};

/// Config as a TOML table: the embedded default with every listener on a free port,
/// memory store, mail written to files in a temp dir, and the self-signed identity
/// certificate written there too.
pub struct TestConfig {
    table: toml::Table,
    pub dir: TempDir,
}

impl TestConfig {
    pub fn new(upstream_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = Self {
            table: toml::Table::new(),
            dir,
        };
        let mail_dir = config.dir.path().join("mail").display().to_string();
        let cert_dir = config.dir.path().join("certs").display().to_string();
        // The client port is chosen up front: links in mail carry public_baseurl.
        let port = crate::common::ports::free_port();
        config
            .set("server.listen", format!("127.0.0.1:{port}"))
            .set("server.public_baseurl", format!("http://127.0.0.1:{port}/"))
            .set("identity.listen", "127.0.0.1:0")
            .set("admin.listen", "127.0.0.1:0")
            .set("upstream.url", upstream_url)
            .set("email.file_dir", mail_dir)
            .set("identity.generated_cert_dir", cert_dir)
            .set("log.level", "warn")
            // Paths arrive as sent unless a test is about the v3→r0 mapping.
            .set("upstream.path_compat", "off");
        // Tests send many requests from one address; the rate-limit tests set their own.
        for limit in [
            "request_token_per_ip",
            "request_token_per_address",
            "submit_per_ip",
        ] {
            config.set_toml(
                &format!("rate_limit.{limit}"),
                "{ per_second = 1000.0, burst = 1000 }",
            );
        }
        config
    }

    /// Sets `section.key` to a value (a string, number, bool, or a `toml::Value`).
    pub fn set(&mut self, path: &str, value: impl Into<toml::Value>) -> &mut Self {
        let (section, key) = path.split_once('.').expect("section.key");
        let table = self
            .table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("a section is a table");
        table.insert(key.to_owned(), value.into());
        self
    }

    /// Sets `section.key` from TOML value syntax, e.g. `[{ medium = "email", … }]`.
    pub fn set_toml(&mut self, path: &str, toml_value: &str) -> &mut Self {
        let parsed: toml::Table =
            toml::from_str(&format!("v = {toml_value}")).expect("valid TOML value");
        let value = parsed["v"].clone();
        self.set(path, value)
    }

    /// Sessions in `redis`.
    pub fn redis(&mut self, redis: &crate::common::redis::RedisServer) -> &mut Self {
        self.set("store.backend", "redis")
            .set("store.url", redis.url())
    }

    /// Mail through `smtp`.
    pub fn smtp(&mut self, smtp: &crate::common::smtp::SmtpServer) -> &mut Self {
        self.set("email.transport", "smtp")
            .set("email.smtp_url", smtp.url())
    }

    /// SMS through the stand-in `gateway`.
    pub fn sms_gateway(&mut self, gateway: &crate::common::webhook::SmsGateway) -> &mut Self {
        self.set("sms.transport", "webhook")
            .set("sms.webhook_url", gateway.url())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(&self.table).expect("a table serialises")
    }

    pub fn build(&self) -> Config {
        Config::from_toml(&self.to_toml()).unwrap_or_else(|e| panic!("test config refused: {e}"))
    }

    pub fn mail_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("mail")
    }
}

/// A running sidecar; stops (without draining) when dropped.
pub struct Sidecar {
    pub running: Option<Running>,
    pub client: SocketAddr,
    pub identity: SocketAddr,
    pub admin: SocketAddr,
    pub config: TestConfig,
}

impl Sidecar {
    pub async fn start(config: TestConfig) -> Self {
        let running = start(config.build())
            .await
            .unwrap_or_else(|e| panic!("sidecar did not start: {e}"));
        Self {
            client: running.client_addr,
            identity: running.identity_addr,
            admin: running.admin_addr,
            running: Some(running),
            config,
        }
    }

    /// `http://127.0.0.1:<client port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.client)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}
