//! The subscriber: the log (text or JSON lines, `[log] format`) and traces (issue 16 item 3),
//! one trace per transfer across protocols, as OpenTelemetry spans exported by OTLP over
//! HTTP/protobuf when `[telemetry] otlp_endpoint` is set.
//!
//! The spans are `tracing` spans (target `beeldbrug::trace`); `tracing-opentelemetry` turns
//! them into OpenTelemetry spans and the SDK's batch processor posts them to the collector.
//! A trace begins at a front: one root span per HTTP request ([`http_request`], continuing a
//! caller's W3C `traceparent`) and one per DIMSE operation ([`dimse_operation`]). What the
//! request causes is a child span: the PACS's C-FIND, C-GET or C-MOVE and each of its
//! sub-operations, a remote gateway's ITI-38 / ITI-39 / RAD-75 call (which carries our
//! `traceparent`, [`inject`]). The trace id goes into the audit record
//! (`trust::Caller::trace_id`, the record's `trace_id`).
//!
//! Without an endpoint no span is enabled: the `info_span!`s cost a check of a static.
//! docs/operations.md, "Traces", has the configuration and the span names.

pub use crate::config::LogFormat;
use crate::config::TelemetryConfig;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::io::IsTerminal;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The target of every span of ours (the span filter of the OpenTelemetry layer).
pub const TARGET: &str = "beeldbrug::trace";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(String),
    #[error("logging: {0}")]
    Subscriber(String),
}

/// The installed tracing: [`Telemetry::shutdown`] exports the spans still queued.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Export what is queued and stop the exporter (at the end of `serve`).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("beeldbrug: telemetry: {e}");
            }
        }
    }
}

/// Install the global subscriber: the log in `format` ([`log_layer`]) and, with
/// an OTLP endpoint configured, the OpenTelemetry layer for our spans. Exports run on
/// `runtime` (the SDK's batch thread hands each one over).
pub fn init(
    format: LogFormat,
    config: Option<&TelemetryConfig>,
    runtime: &tokio::runtime::Handle,
) -> Result<Telemetry, TelemetryError> {
    let provider = match config.filter(|c| c.enabled()) {
        Some(config) => Some(provider(config, runtime.clone())?),
        None => None,
    };
    let otel = provider.as_ref().map(|p| {
        let spans =
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("beeldbrug"))
            .with_location(false)
            .with_filter(spans)
    });
    tracing_subscriber::registry()
        .with(log_layer(format))
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(Telemetry { provider })
}

/// The tracer provider: a batch processor posting OTLP/HTTP protobuf to the endpoint.
fn provider(
    config: &TelemetryConfig,
    runtime: tokio::runtime::Handle,
) -> Result<SdkTracerProvider, TelemetryError> {
    let timeout = Duration::from_secs(config.timeout_secs.max(1));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpClient { client, runtime })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.traces_url())
        .with_timeout(timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build())
}

/// The exporter's HTTP client: reqwest (already built for object storage, http and https
/// with the system's roots), each call run on the tokio runtime, since the SDK's batch
/// processor exports from a thread of its own.
#[derive(Debug)]
struct OtlpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: axum::http::Request<bytes::Bytes>,
    ) -> Result<axum::http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let call = async move {
            let (parts, body) = request.into_parts();
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut answer = axum::http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, opentelemetry_http::HttpError>(answer.body(body)?)
        };
        self.runtime.spawn(call).await?
    }
}

/// The root span of one HTTP request, continuing the trace of the caller's `traceparent`
/// (W3C Trace Context) when it sent one. `route` is the route template (no UIDs).
pub fn http_request(method: &str, route: &str, headers: &axum::http::HeaderMap) -> tracing::Span {
    // A root whatever span is current: its parent is the caller's, if any.
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "http request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        // On an empty context: `extract` alone falls back to the current one.
        let parent = propagator().extract_with_context(&Context::new(), &HeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// The root span of one DIMSE operation (`C-FIND`, `C-GET`, ...) on an association.
pub fn dimse_operation(operation: &str, calling_ae: &str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        parent: None,
        "dimse operation",
        otel.name = %operation,
        otel.kind = "server",
        dicom.operation = %operation,
        dicom.calling_ae = %calling_ae,
    )
}

/// A span of a call to a peer (the PACS, a remote gateway), child of the current span.
pub fn peer_call(operation: &str, peer: &str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        "peer call",
        otel.name = %operation,
        otel.kind = "client",
        peer.name = %peer,
        otel.status_code = tracing::field::Empty,
    )
}

/// A sub-operation of a C-GET or C-MOVE (one instance arriving), child of the current span.
pub fn sub_operation(operation: &str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        "sub-operation",
        otel.name = %operation,
        otel.kind = "server",
        dicom.status = tracing::field::Empty,
    )
}

/// Mark `span` failed (`otel.status_code = ERROR`).
pub fn failed(span: &tracing::Span) {
    span.record("otel.status_code", "ERROR");
}

/// The trace id (32 lower-case hex digits, W3C) of `span`, if it is recorded in a trace.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The trace id of the current span (see [`trace_id`]).
pub fn current_trace_id() -> Option<String> {
    trace_id(&tracing::Span::current())
}

/// Add the current span's `traceparent` (and `tracestate`) to an outgoing request's headers.
pub fn inject(headers: &mut axum::http::HeaderMap) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    let context: Context = span.context();
    propagator().inject_context(&context, &mut HeaderInjector(headers));
}

impl LogFormat {
    /// `BEELDBRUG_LOG_FORMAT` (`text` or `json`) when set, else `configured` (`[log] format`);
    /// anything else is an error.
    pub fn from_env_or(configured: LogFormat) -> Result<LogFormat, String> {
        match std::env::var("BEELDBRUG_LOG_FORMAT") {
            Err(_) => Ok(configured),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" => Ok(configured),
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err(format!(
                    "BEELDBRUG_LOG_FORMAT={v:?}: expected \"text\" or \"json\""
                )),
            },
        }
    }
}

/// The log's filter: `BEELDBRUG_LOG` (an `EnvFilter` directive), default `info`.
fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("BEELDBRUG_LOG").unwrap_or_else(|_| "info".into())
}

/// The log's layer on stderr in `format`, ANSI colours only when stderr is a terminal, with
/// its own filter ([`filter`]). It sees events only, so a line reads the same with or
/// without the spans of `telemetry` (which `BEELDBRUG_LOG` does not filter).
pub fn log_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::Layer;
    let events_only = filter().and(tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_event()
    }));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => layer
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(events_only)
            .boxed(),
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_ansi(false)
            .with_filter(events_only)
            .boxed(),
    }
}

fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_otlp_path_once() {
        let mut c = TelemetryConfig {
            otlp_endpoint: "http://127.0.0.1:4318/".into(),
            ..Default::default()
        };
        assert_eq!(c.traces_url(), "http://127.0.0.1:4318/v1/traces");
        c.otlp_endpoint = "https://collector/v1/traces".into();
        assert_eq!(c.traces_url(), "https://collector/v1/traces");
        assert!(c.enabled());
        assert!(!TelemetryConfig::default().enabled());
    }

    /// With the OpenTelemetry layer (a provider without exporter): a request's span continues
    /// the caller's `traceparent`, and an outgoing call from within it carries the same
    /// trace id with the id of our span (`peer_call`) as parent.
    #[test]
    fn traceparent_is_continued_and_passed_on() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("test"))
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target(TARGET, tracing::Level::INFO),
                ),
        );
        tracing::subscriber::with_default(subscriber, || {
            let mut incoming = axum::http::HeaderMap::new();
            incoming.insert(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                    .parse()
                    .unwrap(),
            );
            let request = http_request("POST", "/xca/retrieve", &incoming);
            assert_eq!(
                trace_id(&request).as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
            let _in_request = request.enter();
            assert_eq!(current_trace_id(), trace_id(&request));
            let call = peer_call("CrossGatewayRetrieveImagingDocumentSet", "peer");
            let _in_call = call.enter();
            let mut outgoing = axum::http::HeaderMap::new();
            inject(&mut outgoing);
            let sent = outgoing["traceparent"].to_str().unwrap().to_string();
            let parts: Vec<&str> = sent.split('-').collect();
            assert_eq!(parts.len(), 4, "{sent}");
            assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
            let call_span = call.context().span().span_context().span_id().to_string();
            assert_eq!(parts[2], call_span, "our call's span is the peer's parent");
            assert_ne!(parts[2], "00f067aa0ba902b7");
            assert_eq!(parts[3], "01", "sampled");

            // A request without traceparent starts a trace of its own.
            let fresh = http_request("GET", "/dicomweb/studies", &axum::http::HeaderMap::new());
            let id = trace_id(&fresh).expect("a new trace");
            assert_eq!(id.len(), 32);
            assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        });
    }

    #[test]
    fn without_a_subscriber_spans_carry_no_trace_id() {
        let span = http_request("GET", "/x", &axum::http::HeaderMap::new());
        assert_eq!(trace_id(&span), None);
        let mut headers = axum::http::HeaderMap::new();
        let _entered = span.enter();
        inject(&mut headers);
        assert!(headers.is_empty());
    }
}
