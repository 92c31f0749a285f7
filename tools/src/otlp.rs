//! A real OTLP trace receiver for tests and the benchmark: the
//! `opentelemetry-proto` service definitions served over gRPC (tonic) and
//! OTLP/HTTP (`POST /v1/traces`, protobuf), on loopback ports picked by the
//! OS. It keeps what it receives so a test can check trace ids and
//! parent/child links.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of its resource.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex; empty for a root.
    pub parent_span_id: String,
    /// OTLP span kind (4 producer, 5 consumer, 1 internal).
    pub kind: i32,
    /// Attributes, values as text.
    pub attributes: HashMap<String, String>,
    /// Linked (trace id, span id), hex.
    pub links: Vec<(String, String)>,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
}

impl ReceivedSpan {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// The span-counting view of an `ExportTraceServiceRequest`: the nesting
/// down to spans, every other field skipped undecoded. The benchmark's
/// receiver shares the two cores with the workers it measures; a full
/// decode (every attribute a `String`) took CPU from them that a
/// collector on another machine would not.
mod count_only {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {}

    impl Request {
        pub fn span_count(&self) -> u64 {
            self.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum()
        }
    }
}

#[derive(Debug, Default)]
struct Store {
    keep: bool,
    count: AtomicU64,
    spans: Mutex<Vec<ReceivedSpan>>,
}

impl Store {
    fn take_in(&self, request: ExportTraceServiceRequest) {
        let mut received = Vec::new();
        let mut n = 0u64;
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .map(|kv| text(kv.value.as_ref()))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                n += scope.spans.len() as u64;
                if !self.keep {
                    continue;
                }
                for span in scope.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                            .collect(),
                        links: span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                        start_unix_nano: span.start_time_unix_nano,
                        end_unix_nano: span.end_time_unix_nano,
                    });
                }
            }
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        if self.keep {
            self.spans.lock().unwrap_or_else(|p| p.into_inner()).extend(received);
        }
    }
}

struct Grpc(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take_in(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    /// gRPC endpoint address.
    pub grpc: SocketAddr,
    /// OTLP/HTTP endpoint address (base; spans go to `/v1/traces`).
    pub http: SocketAddr,
    store: Arc<Store>,
    stop: CancellationToken,
}

impl Receiver {
    /// Starts both endpoints on `127.0.0.1`. With `keep` false it only
    /// counts spans (for the benchmark).
    pub async fn start(keep: bool) -> std::io::Result<Self> {
        let store = Arc::new(Store { keep, ..Store::default() });
        let stop = CancellationToken::new();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc = grpc_listener.local_addr()?;
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = http_listener.local_addr()?;

        let service = TraceServiceServer::new(Grpc(store.clone())).max_decoding_message_size(64 << 20);
        let token = stop.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream_from(grpc_listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
                .await;
        });

        let http_store = store.clone();
        let router = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let store = http_store.clone();
                async move {
                    let decoded = if store.keep {
                        ExportTraceServiceRequest::decode(body).map(|request| store.take_in(request))
                    } else {
                        count_only::Request::decode(body).map(|request| {
                            store.count.fetch_add(request.span_count(), Ordering::Relaxed);
                        })
                    };
                    match decoded {
                        Ok(()) => {
                            let response = ExportTraceServiceResponse { partial_success: None };
                            (
                                StatusCode::OK,
                                [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                                response.encode_to_vec(),
                            )
                        }
                        Err(_) => (
                            StatusCode::BAD_REQUEST,
                            [(axum::http::header::CONTENT_TYPE, "text/plain")],
                            b"not an ExportTraceServiceRequest".to_vec(),
                        ),
                    }
                }
            }),
        );
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(http_listener, router).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        Ok(Self { grpc, http, store, stop })
    }

    /// `http://<grpc address>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://<http address>` (the base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Spans received so far (empty when not keeping them).
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many spans were received.
    pub fn count(&self) -> u64 {
        self.store.count.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Accepted connections of `listener` as the stream tonic serves.
fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}
