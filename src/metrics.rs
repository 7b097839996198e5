//! Prometheus metrics, served by the admin listener. One registry per process, held in
//! the app state (no global registry).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Which part of the sidecar answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Passed to the homeserver unchanged.
    Forwarded,
    /// `/versions`, forwarded and rewritten.
    Versions,
    /// Answered by the sidecar itself (requestToken, submit_token, creds rewrite).
    Handled,
    /// The identity listener.
    Identity,
}

impl RouteClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Forwarded => "forwarded",
            RouteClass::Versions => "versions",
            RouteClass::Handled => "handled",
            RouteClass::Identity => "identity",
        }
    }
}

/// The status classes, in the order [`status_index`] numbers them.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_index(status: u16) -> usize {
    match status / 100 {
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        _ => 4,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamErrorKind {
    /// Could not connect (502).
    Connect,
    /// No response head in time (504).
    Timeout,
    /// The connection broke (502).
    Protocol,
}

impl UpstreamErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Protocol => "protocol",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MessageLabels {
    medium: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    medium: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CountryLabels {
    country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AdminLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NoticeLabels {
    notice: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

/// Every metric the sidecar exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// The counters of `requests`, by route class and status class, each looked up in the
    /// family once: counting a request is then one atomic add, no hashing or locking.
    request_counters: [[std::sync::OnceLock<Counter>; 5]; 4],
    upstream_latency: Histogram,
    upstream_errors: Family<ErrorLabels, Counter>,
    identity_calls: Family<EndpointLabels, Counter>,
    request_tokens: Family<EndpointLabels, Counter>,
    submits: Family<EndpointLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    store_latency: Family<OperationLabels, Histogram>,
    store_errors: Family<OperationLabels, Counter>,
    messages: Family<MessageLabels, Counter>,
    policy_refusals: Family<RefusalLabels, Counter>,
    sms_sent: Family<CountryLabels, Counter>,
    notices: Family<NoticeLabels, Counter>,
    outbox_length: Gauge,
    outbox_oldest_age: Gauge<f64, AtomicU64>,
    outbox_dead_letters: Gauge,
    admin_requests: Family<AdminLabels, Counter>,
    path_compat: Gauge,
    ready: Gauge,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_refused: Family<ListenerLabels, Counter>,
    upstream_requests_open: Gauge,
    upstream_requests_refused: Counter,
}

fn store_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("threepid_sidecar");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Client requests by route class and status class",
            requests.clone(),
        );
        let upstream_latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ]);
        registry.register(
            "upstream_response_seconds",
            "Time until the homeserver's response head arrived",
            upstream_latency.clone(),
        );
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Forwarded requests that got no response head, by kind",
            upstream_errors.clone(),
        );
        let identity_calls = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "identity_calls",
            "Calls to the identity listener by endpoint and outcome",
            identity_calls.clone(),
        );
        let request_tokens = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "request_tokens",
            "requestToken calls handled by the sidecar, by endpoint and outcome",
            request_tokens.clone(),
        );
        let submits = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "submits",
            "Token submissions by endpoint and outcome",
            submits.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429, by limit",
            rate_limited.clone(),
        );
        let store_latency = Family::<OperationLabels, Histogram>::new_with_constructor(
            store_histogram as fn() -> Histogram,
        );
        registry.register(
            "store_call_seconds",
            "Session store calls by operation",
            store_latency.clone(),
        );
        let store_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Session store calls that failed (unreachable, timed out), by operation",
            store_errors.clone(),
        );
        let policy_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "policy_refusals",
            "requestTokens refused by the address policy, by medium and reason: denied_domain, \
             denied_address, disposable, country, webhook (it said no, or could not be asked \
             with webhook_failure = deny), budget (sms.daily_budget spent)",
            policy_refusals.clone(),
        );
        let sms_sent = Family::<CountryLabels, Counter>::default();
        registry.register(
            "sms_sent",
            "SMS handed to the gateway, by the country of the number (ISO 3166-1 alpha-2)",
            sms_sent.clone(),
        );
        let notices = Family::<NoticeLabels, Counter>::default();
        registry.register(
            "notices",
            "Security notices by kind (password_changed, address_removed) and outcome: queued, \
             sent, failed (an attempt)",
            notices.clone(),
        );
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Verification messages by medium and outcome: queued (in the outbox), sent, failed \
             (an attempt), retried (a later attempt: an earlier one failed or its sender died), \
             dead_lettered (given up on), \
             dropped (queued for a session change that did not happen)",
            messages.clone(),
        );
        let outbox_length = Gauge::default();
        registry.register(
            "outbox_length",
            "Messages in the durable outbox not sent yet (Redis store)",
            outbox_length.clone(),
        );
        let outbox_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest message in the durable outbox, 0 when it is empty (Redis store)",
            outbox_oldest_age.clone(),
        );
        let outbox_dead_letters = Gauge::default();
        registry.register(
            "outbox_dead_letters",
            "Messages given up on and kept in the dead-letter list (Redis store): see \
             GET /admin/v1/outbox",
            outbox_dead_letters.clone(),
        );
        let admin_requests = Family::<AdminLabels, Counter>::default();
        registry.register(
            "admin_requests",
            "Admin API calls by operation and outcome: ok, not_found, refused (a state that \
             does not allow it), bad_request, unauthorized (no or a wrong token), error",
            admin_requests.clone(),
        );
        let path_compat = Gauge::default();
        registry.register(
            "path_compat_active",
            "1 while v3 paths are forwarded as r0 (upstream.path_compat)",
            path_compat.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while the sidecar is ready for traffic",
            ready.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Client connections open, by listener",
            connections_open.clone(),
        );
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections refused because the listener had server.max_connections open",
            connections_refused.clone(),
        );
        let upstream_requests_open = Gauge::default();
        registry.register(
            "upstream_requests_open",
            "Requests to the homeserver in progress (each holds one upstream connection)",
            upstream_requests_open.clone(),
        );
        let upstream_requests_refused = Counter::default();
        registry.register(
            "upstream_requests_refused",
            "Requests answered 503 because upstream.max_connections requests to the homeserver \
             were in progress",
            upstream_requests_refused.clone(),
        );
        Self {
            registry,
            requests,
            request_counters: Default::default(),
            upstream_latency,
            upstream_errors,
            identity_calls,
            request_tokens,
            submits,
            rate_limited,
            store_latency,
            store_errors,
            messages,
            policy_refusals,
            sms_sent,
            notices,
            outbox_length,
            outbox_oldest_age,
            outbox_dead_letters,
            admin_requests,
            path_compat,
            ready,
            connections_open,
            connections_refused,
            upstream_requests_open,
            upstream_requests_refused,
        }
    }

    /// The gauge of requests in progress to the homeserver and the counter of those refused
    /// at its cap, to be kept by the upstream client.
    pub fn upstream_requests(&self) -> (Gauge, Counter) {
        (
            self.upstream_requests_open.clone(),
            self.upstream_requests_refused.clone(),
        )
    }

    /// A listener's open-connection gauge and refusal counter, to be kept by the listener:
    /// it updates them on every connection without looking them up.
    pub fn connections(&self, listener: &'static str) -> (Gauge, Counter) {
        let labels = ListenerLabels { listener };
        (
            self.connections_open.get_or_create(&labels).clone(),
            self.connections_refused.get_or_create(&labels).clone(),
        )
    }

    pub fn request(&self, route: RouteClass, status: u16) {
        let status = status_index(status);
        self.request_counters[route as usize][status]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: route.as_str(),
                        status: STATUS_CLASSES[status],
                    })
                    .clone()
            })
            .inc();
    }

    pub fn observe_upstream(&self, elapsed: Duration) {
        self.upstream_latency.observe(elapsed.as_secs_f64());
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .get_or_create(&ErrorLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub fn identity_call(&self, endpoint: &'static str, outcome: &'static str) {
        self.identity_calls
            .get_or_create(&EndpointLabels { endpoint, outcome })
            .inc();
    }

    pub fn request_token(&self, endpoint: &'static str, outcome: &'static str) {
        self.request_tokens
            .get_or_create(&EndpointLabels { endpoint, outcome })
            .inc();
    }

    pub fn submit(&self, endpoint: &'static str, outcome: &'static str) {
        self.submits
            .get_or_create(&EndpointLabels { endpoint, outcome })
            .inc();
    }

    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    pub fn store_call(&self, operation: &'static str, elapsed: Duration, ok: bool) {
        let labels = OperationLabels { operation };
        self.store_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.store_errors.get_or_create(&labels).inc();
        }
    }

    pub fn message(&self, medium: &'static str, outcome: &'static str) {
        self.messages
            .get_or_create(&MessageLabels { medium, outcome })
            .inc();
    }

    pub fn policy_refused(&self, medium: &'static str, reason: &'static str) {
        self.policy_refusals
            .get_or_create(&RefusalLabels { medium, reason })
            .inc();
    }

    /// An SMS went out to a number of `country` (empty when the number resolves to none).
    pub fn sms_sent(&self, country: &str) {
        self.sms_sent
            .get_or_create(&CountryLabels {
                country: country.to_owned(),
            })
            .inc();
    }

    pub fn notice(&self, notice: &'static str, outcome: &'static str) {
        self.notices
            .get_or_create(&NoticeLabels { notice, outcome })
            .inc();
    }

    /// The outbox as a sender last saw it: its length, its oldest message's age, and the
    /// dead letters kept.
    pub fn set_outbox(&self, length: u64, oldest_age_seconds: f64, dead_letters: u64) {
        self.outbox_length
            .set(i64::try_from(length).unwrap_or(i64::MAX));
        self.outbox_oldest_age.set(oldest_age_seconds);
        self.outbox_dead_letters
            .set(i64::try_from(dead_letters).unwrap_or(i64::MAX));
    }

    /// One admin API call (`outcome` as in the family's help).
    pub fn admin_request(&self, operation: &'static str, outcome: &'static str) {
        self.admin_requests
            .get_or_create(&AdminLabels { operation, outcome })
            .inc();
    }

    pub fn set_path_compat(&self, active: bool) {
        self.path_compat.set(i64::from(active));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_status_class() {
        let m = Metrics::new();
        m.request(RouteClass::Versions, 200);
        m.request(RouteClass::Forwarded, 502);
        m.upstream_error(UpstreamErrorKind::Connect);
        m.observe_upstream(Duration::from_millis(3));
        let text = m.encode();
        assert!(
            text.contains(
                r#"threepid_sidecar_http_requests_total{route="versions",status="2xx"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"threepid_sidecar_http_requests_total{route="forwarded",status="5xx"} 1"#
            )
        );
        assert!(text.contains(r#"threepid_sidecar_upstream_errors_total{kind="connect"} 1"#));
        assert!(text.contains("threepid_sidecar_upstream_response_seconds_count 1"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn messages_are_counted_by_outcome_and_the_outbox_has_gauges() {
        let m = Metrics::new();
        m.message("email", "queued");
        m.message("msisdn", "dead_lettered");
        m.set_outbox(3, 1.5, 2);
        let text = m.encode();
        for line in [
            r#"threepid_sidecar_messages_total{medium="email",outcome="queued"} 1"#,
            r#"threepid_sidecar_messages_total{medium="msisdn",outcome="dead_lettered"} 1"#,
            "threepid_sidecar_outbox_length 3",
            "threepid_sidecar_outbox_oldest_age_seconds 1.5",
            "threepid_sidecar_outbox_dead_letters 2",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }
}
