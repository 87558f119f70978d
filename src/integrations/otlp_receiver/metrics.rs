//! Metrics received over OTLP (`POST /v1/metrics`, protobuf or JSON, and
//! gRPC `MetricsService/Export`): not kept, only counted, data points per
//! service and instrument, so that a test sees which metrics an exporter
//! sent ([`OtlpReceiver::metric_points`](super::OtlpReceiver::metric_points)).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message as _;
use tonic::codegen::{Service, http};

use super::{BoxedResponse, Format, decompress, service_name};

/// Path of OTLP/HTTP metric exports.
pub const HTTP_METRICS_PATH: &str = "/v1/metrics";

/// Path (service and method) of OTLP/gRPC metric exports.
pub const GRPC_METRICS_PATH: &str =
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// Data points received, per service (resource `service.name`), then per
/// instrument name.
pub type MetricPoints = BTreeMap<String, BTreeMap<String, u64>>;

/// The counts, shared by both servers and the receiver.
pub(super) type Counts = Arc<Mutex<MetricPoints>>;

/// Adds the data points of `request` to `counts`.
fn count(counts: &Counts, request: &ExportMetricsServiceRequest) {
    let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
    for resource in &request.resource_metrics {
        let service = service_name(resource.resource.as_ref());
        let per_metric = counts.entry(service.to_string()).or_default();
        for scope in &resource.scope_metrics {
            for metric in &scope.metrics {
                let points = match &metric.data {
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                };
                *per_metric.entry(metric.name.clone()).or_default() += points as u64;
            }
        }
    }
}

pub(super) async fn export_http(
    State(counts): State<Counts>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let format = match Format::of(&headers) {
        Ok(format) => format,
        Err(message) => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response(),
    };
    let body = match decompress(&headers, body) {
        Ok(body) => body,
        Err((status, message)) => {
            return format.failure(status, tonic::Code::InvalidArgument, message);
        }
    };
    let decoded = match format {
        Format::Protobuf => ExportMetricsServiceRequest::decode(&body[..])
            .map_err(|e| format!("not a protobuf ExportMetricsServiceRequest: {e}")),
        Format::Json => serde_json::from_slice(&body)
            .map_err(|e| format!("not an OTLP/JSON ExportMetricsServiceRequest: {e}")),
    };
    match decoded {
        Ok(request) => {
            count(&counts, &request);
            let answer = ExportMetricsServiceResponse::default();
            let body = match format {
                Format::Protobuf => answer.encode_to_vec(),
                Format::Json => serde_json::to_vec(&answer).unwrap_or_default(),
            };
            format.respond(StatusCode::OK, body)
        }
        Err(message) => format.failure(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            message,
        ),
    }
}

/// The gRPC metrics service (opentelemetry-proto's generated server).
struct CountPoints {
    counts: Counts,
}

#[tonic::async_trait]
impl MetricsService for CountPoints {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        count(&self.counts, request.get_ref());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Answers one gRPC metrics export.
pub(super) fn export_grpc(
    counts: &Counts,
    request: http::Request<tonic::body::Body>,
) -> BoxedResponse {
    let mut server = MetricsServiceServer::new(CountPoints {
        counts: Arc::clone(counts),
    })
    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    .max_decoding_message_size(super::MAX_REQUEST_BYTES);
    Box::pin(async move { server.call(request).await })
}
