//! Prometheus metrics of one instance, in a registry of its own: several applications in one
//! process (tests, an app that embeds this one) never mix their numbers. Counters the code
//! updates as things happen live here; the state of the pool, the writer and the broker is read
//! from them at scrape time. docs/operations.md says what each metric tells.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use newspaper_events::ChannelLayer;
use newspaper_persistence::Database;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::ApiError;
use crate::state::AppState;

/// Request durations, in seconds: from a cached page to a slow search.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The metrics of one instance.
pub struct Metrics {
    registry: Registry,
    /// `newspaper_http_requests_total{method, route, status}`.
    pub(crate) http_requests: IntCounterVec,
    /// `newspaper_http_request_duration_seconds{method, route}`.
    pub(crate) http_duration: HistogramVec,
    /// `newspaper_ws_streams`: open live streams.
    pub(crate) streams_open: IntGauge,
    /// `newspaper_ws_streams_opened_total`.
    pub(crate) streams_opened: IntCounter,
    /// `newspaper_ws_streams_closed_total{code}`.
    pub(crate) streams_closed: IntCounterVec,
    /// `newspaper_ws_group_joins_total{group}` (`blog_feed`, `post`, `user`).
    pub(crate) group_joins: IntCounterVec,
    /// `newspaper_ws_group_leaves_total{group}`.
    pub(crate) group_leaves: IntCounterVec,
    /// `newspaper_ws_events_delivered_total{via}` (`live`, `replay`).
    pub(crate) events_delivered: IntCounterVec,
    /// `newspaper_ws_events_delivered_total{via="live"}`, looked up once: it counts every
    /// delivery of every event.
    pub(crate) events_delivered_live: IntCounter,
    /// `newspaper_ws_replays_total`.
    pub(crate) replays: IntCounter,
    /// `newspaper_dispatcher_events_published_total`.
    pub(crate) events_published: IntCounter,
    /// `newspaper_dispatcher_lag_seconds`.
    pub(crate) dispatcher_lag: Gauge,
    /// `newspaper_outbox_backlog_events`.
    pub(crate) outbox_backlog: IntGauge,
    /// `newspaper_database_up`.
    pub(crate) database_up: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    made: Result<C, prometheus::Error>,
) -> C {
    // The names and labels are constants of this file: an error is a bug caught by the tests.
    #[allow(clippy::expect_used)]
    let collector = made.expect("a valid metric definition");
    #[allow(clippy::expect_used)]
    registry.register(Box::new(collector.clone())).expect("metric names are unique");
    collector
}

impl Metrics {
    /// The metrics of an instance; [`Metrics::observe`] adds its database and channel layer.
    pub fn new() -> Self {
        let registry = Registry::new();
        let events_delivered = counter_vec(
            &registry,
            "newspaper_ws_events_delivered_total",
            "Post events sent to clients, live or replayed from the outbox.",
            &["via"],
        );
        let metrics = Self {
            http_requests: counter_vec(
                &registry,
                "newspaper_http_requests_total",
                "HTTP requests answered, by method, route template and status.",
                &["method", "route", "status"],
            ),
            http_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "newspaper_http_request_duration_seconds",
                        "Time to answer an HTTP request, by method and route template.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["method", "route"],
                ),
            ),
            streams_open: register(
                &registry,
                IntGauge::new("newspaper_ws_streams", "Live WebSocket streams open now."),
            ),
            streams_opened: register(
                &registry,
                IntCounter::new("newspaper_ws_streams_opened_total", "Live streams opened."),
            ),
            streams_closed: counter_vec(
                &registry,
                "newspaper_ws_streams_closed_total",
                "Live streams ended, by close code (`gone`: the client vanished).",
                &["code"],
            ),
            group_joins: counter_vec(
                &registry,
                "newspaper_ws_group_joins_total",
                "Groups joined by streams: blog_feed, post (one post) or user (its own user).",
                &["group"],
            ),
            group_leaves: counter_vec(
                &registry,
                "newspaper_ws_group_leaves_total",
                "Groups left by streams (when they unsubscribe or end).",
                &["group"],
            ),
            events_delivered_live: events_delivered.with_label_values(&["live"]),
            events_delivered,
            replays: register(
                &registry,
                IntCounter::new(
                    "newspaper_ws_replays_total",
                    "Outbox replays: since, gaps, rejoins and catch-ups after broker outages.",
                ),
            ),
            events_published: register(
                &registry,
                IntCounter::new(
                    "newspaper_dispatcher_events_published_total",
                    "Outbox events this instance published to the channel layer.",
                ),
            ),
            dispatcher_lag: register(
                &registry,
                Gauge::new(
                    "newspaper_dispatcher_lag_seconds",
                    "How long after its commit the last event this instance published went out; 0 \
                     once the dispatcher has caught up.",
                ),
            ),
            outbox_backlog: register(
                &registry,
                IntGauge::new(
                    "newspaper_outbox_backlog_events",
                    "Outbox events committed but not yet published (head minus published), as \
                     the publishing instance sees it; 0 elsewhere.",
                ),
            ),
            database_up: register(
                &registry,
                IntGauge::new(
                    "newspaper_database_up",
                    "1 when the dispatcher's last round reached the database, 0 when it failed.",
                ),
            ),
            registry,
        };
        metrics.database_up.set(1);
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            // Process metrics are best-effort: a platform without /proc just lacks them.
            let _ = metrics.registry.register(Box::new(process));
        }
        metrics
    }

    /// Reads the pool's, the writer's and the layer's state at every scrape from now on
    /// (once; later calls change nothing).
    pub fn observe(&self, db: Database, layer: Arc<dyn ChannelLayer>) {
        // A second registration is refused as a duplicate, which is what "once" means here.
        let _ = self.registry.register(Box::new(Pulled::new(db, layer)));
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }

    /// Counts a stream's leaving `group` (kind).
    pub(crate) fn left(&self, group: &str) {
        self.group_leaves.with_label_values(&[group]).inc();
    }

    /// Counts a stream's joining `group` (kind).
    pub(crate) fn joined(&self, group: &str) {
        self.group_joins.with_label_values(&[group]).inc();
    }
}

/// What is read from the pool, the writer and the layer at scrape time.
struct Pulled {
    db: Database,
    layer: Arc<dyn ChannelLayer>,
    descs: Vec<Desc>,
}

/// The pulled metrics: name, help, type.
const PULLED: &[(&str, &str, MetricType)] = &[
    ("newspaper_db_pool_connections", "Pooled database connections, by state.", MetricType::GAUGE),
    (
        "newspaper_db_pool_waiting",
        "Requests waiting for a pooled connection now.",
        MetricType::GAUGE,
    ),
    ("newspaper_db_write_queue", "Writes waiting for the database writer now.", MetricType::GAUGE),
    (
        "newspaper_db_write_batch_size",
        "Writes committed together in one transaction by the writer.",
        MetricType::HISTOGRAM,
    ),
    (
        "newspaper_db_write_batches_failed_total",
        "Write batches that could not begin or commit.",
        MetricType::COUNTER,
    ),
    (
        "newspaper_channel_layer_reconnects_total",
        "Times the channel layer lost its broker connection and made it again.",
        MetricType::COUNTER,
    ),
    (
        "newspaper_channel_layer_errors_total",
        "Broker commands and connection attempts that failed.",
        MetricType::COUNTER,
    ),
];

impl Pulled {
    fn new(db: Database, layer: Arc<dyn ChannelLayer>) -> Self {
        let descs = PULLED
            .iter()
            .filter_map(|(name, help, _)| {
                Desc::new((*name).to_owned(), (*help).to_owned(), Vec::new(), HashMap::new()).ok()
            })
            .collect();
        Self { db, layer, descs }
    }
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn gauge(value: f64, labels: Vec<proto::LabelPair>) -> proto::Metric {
    let mut gauge = proto::Gauge::default();
    gauge.set_value(value);
    let mut metric = proto::Metric::default();
    metric.set_gauge(gauge);
    metric.set_label(labels);
    metric
}

fn counter(value: u64) -> proto::Metric {
    let mut counter = proto::Counter::default();
    counter.set_value(value as f64);
    let mut metric = proto::Metric::default();
    metric.set_counter(counter);
    metric
}

impl Collector for Pulled {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let db = self.db.stats();
        let layer = self.layer.stats();
        let in_use = f64::from(db.connections.saturating_sub(db.idle_connections));
        let mut histogram = proto::Histogram::default();
        let total = db.batch_sizes.last().map_or(0, |(_, count)| *count);
        histogram.set_sample_count(total);
        histogram.set_sample_sum(db.writes as f64);
        histogram.set_bucket(
            db.batch_sizes
                .iter()
                .filter(|(bound, _)| *bound != u64::MAX)
                .map(|(bound, count)| {
                    let mut bucket = proto::Bucket::default();
                    bucket.set_upper_bound(*bound as f64);
                    bucket.set_cumulative_count(*count);
                    bucket
                })
                .collect(),
        );
        let mut batches = proto::Metric::default();
        batches.set_histogram(histogram);
        let values = vec![
            vec![
                gauge(in_use, vec![label("state", "in_use")]),
                gauge(f64::from(db.idle_connections), vec![label("state", "idle")]),
            ],
            vec![gauge(db.waiting as f64, Vec::new())],
            vec![gauge(db.write_queue as f64, Vec::new())],
            vec![batches],
            vec![counter(db.failed_batches)],
            vec![counter(layer.reconnects)],
            vec![counter(layer.errors)],
        ];
        PULLED
            .iter()
            .zip(values)
            .map(|((name, help, kind), metrics)| family(name, help, *kind, metrics))
            .collect()
    }
}

/// `GET /metrics`: every metric, in the Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = state.realtime.metrics().render().map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(text))
}

/// `GET /metrics` on the main port: there unless `NEWSPAPER_METRICS_BIND` moved it elsewhere.
pub async fn metrics_on_main_port(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.settings.metrics_bind.is_some() {
        return Err(ApiError::not_found());
    }
    metrics(state).await
}

#[cfg(test)]
mod tests {
    use newspaper_events::InMemoryChannelLayer;
    use newspaper_persistence::testing::TestDatabase;

    use super::*;

    #[test]
    fn every_metric_renders_with_its_help_and_type() {
        let test_db = TestDatabase::sqlite();
        let metrics = Metrics::new();
        metrics.observe(test_db.migrated(), Arc::new(InMemoryChannelLayer::default()));
        metrics.http_requests.with_label_values(&["GET", "/api/posts/", "200"]).inc();
        metrics.joined("blog_feed");
        let text = metrics.render().unwrap();
        for name in [
            "newspaper_http_requests_total",
            "newspaper_ws_streams",
            "newspaper_db_write_batch_size_bucket",
            "newspaper_db_pool_connections{state=\"idle\"}",
            "newspaper_channel_layer_errors_total 0",
            "newspaper_database_up 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains("# TYPE newspaper_db_write_batch_size histogram"), "{text}");
    }
}
