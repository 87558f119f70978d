//! The subset of the Confluent Schema Registry REST API that serializers
//! use, served over HTTP from a [`SchemaRegistry`], so clients in other
//! languages can share the in-process registry:
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /subjects/{subject}/versions` with `{"schema": "..."}` | `{"id": 1}` |
//! | `GET /schemas/ids/{id}` | `{"schema": "..."}` |
//! | `GET /subjects/{subject}/versions/latest` | `{"subject": "...", "version": 1, "id": 1, "schema": "..."}` |
//!
//! Errors answer Confluent's `{"error_code": ..., "message": ...}` with its
//! codes: 40401 subject not found, 40403 schema not found, 42201 invalid
//! schema.
//!
//! ```
//! use kafka_trace_harness::stockapp::{RegistryServer, SchemaRegistry};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let registry = SchemaRegistry::new();
//!
//! let server = RegistryServer::start(registry.clone()).await?;
//!
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! server.shutdown().await?;
//! # Ok::<(), kafka_trace_harness::stockapp::Error>(())
//! # }).unwrap();
//! ```

use super::http::HttpServer;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::avro::SchemaId;
use super::registry::{RegistryError, SchemaRegistry};
use crate::stockapp::error::{Error, Result};

/// Content type of Schema Registry answers.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The REST routes over `registry`, to mount in another server if wanted.
pub fn router(registry: SchemaRegistry) -> Router {
    Router::new()
        .route("/subjects/{subject}/versions", post(register))
        .route("/subjects/{subject}/versions/latest", get(latest))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .with_state(registry)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, error_code: u32, message: String) -> Response {
    answer(
        status,
        json!({ "error_code": error_code, "message": message }),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterRequest {
    schema: String,
    schema_type: Option<String>,
}

async fn register(
    State(registry): State<SchemaRegistry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Response {
    let request: RegisterRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                422,
                format!("request body is not {{\"schema\": \"...\"}}: {e}"),
            );
        }
    };
    if let Some(kind) = request.schema_type.filter(|t| t != "AVRO") {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("schema type {kind:?} is not supported, only AVRO"),
        );
    }
    match registry.register(&subject, &request.schema) {
        Ok(id) => answer(StatusCode::OK, json!({ "id": id.0 })),
        Err(e @ RegistryError::InvalidSchema { .. }) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, 42201, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, 50001, e.to_string()),
    }
}

async fn latest(State(registry): State<SchemaRegistry>, Path(subject): Path<String>) -> Response {
    match registry.latest(&subject) {
        Some(found) => answer(
            StatusCode::OK,
            json!({
                "subject": found.subject,
                "version": found.version,
                "id": found.id.0,
                "schema": &*found.text,
            }),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{subject}' not found."),
        ),
    }
}

async fn schema_by_id(State(registry): State<SchemaRegistry>, Path(id): Path<String>) -> Response {
    let text = id
        .parse()
        .ok()
        .and_then(|id| registry.schema_text_by_id(SchemaId(id)));
    match text {
        Some(text) => answer(StatusCode::OK, json!({ "schema": &*text })),
        None => error(
            StatusCode::NOT_FOUND,
            40403,
            format!("Schema {id} not found"),
        ),
    }
}

/// Default port of [`RegistryServerBuilder`]: 0, any free port.
pub const DEFAULT_PORT: u16 = 0;

/// A running HTTP front of a [`SchemaRegistry`]. Dropping it stops serving;
/// [`RegistryServer::shutdown`] also waits for that and reports errors.
#[derive(Debug)]
pub struct RegistryServer {
    server: HttpServer,
}

impl RegistryServer {
    /// Serves `registry` on `127.0.0.1`, on any free port.
    pub async fn start(registry: SchemaRegistry) -> Result<Self> {
        Self::builder(registry).start().await
    }

    /// A builder with the defaults: host `127.0.0.1`, port [`DEFAULT_PORT`].
    pub fn builder(registry: SchemaRegistry) -> RegistryServerBuilder {
        RegistryServerBuilder {
            registry,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
        }
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The base URL for a client's `schema.registry.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Stops serving and waits until the server has stopped.
    pub async fn shutdown(self) -> Result<()> {
        let addr = self.server.addr().to_string();
        self.server
            .shutdown()
            .await
            .map_err(|source| Error::RegistryServer { addr, source })
    }
}

/// Builder of [`RegistryServer`]; see [`RegistryServer::builder`] for the
/// defaults.
#[derive(Debug, Clone)]
pub struct RegistryServerBuilder {
    registry: SchemaRegistry,
    addr: SocketAddr,
}

impl RegistryServerBuilder {
    /// Port to listen on. Default [`DEFAULT_PORT`] (0: any free port, which
    /// keeps parallel tests apart; the original stack uses 8081).
    pub fn port(mut self, port: u16) -> Self {
        self.addr.set_port(port);
        self
    }

    /// Address to listen on. Default `127.0.0.1`; `0.0.0.0` lets containers
    /// reach the registry.
    pub fn host(mut self, host: IpAddr) -> Self {
        self.addr.set_ip(host);
        self
    }

    /// Binds the address and starts serving on the current Tokio runtime.
    pub async fn start(self) -> Result<RegistryServer> {
        let server = HttpServer::serve(self.addr, router(self.registry))
            .await
            .map_err(|source| Error::RegistryServer {
                addr: self.addr.to_string(),
                source,
            })?;
        Ok(RegistryServer { server })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stockapp::{AvroRecord, StockTrade};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 exchange with a bare client: `(status, JSON body)`.
    async fn call(
        server: &RegistryServer,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            server.addr(),
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(head.contains(CONTENT_TYPE), "{head}");
        (status, serde_json::from_str(body).unwrap())
    }

    #[tokio::test]
    async fn register_then_read_back_by_id_and_latest() {
        let registry = SchemaRegistry::new();
        let server = RegistryServer::start(registry.clone()).await.unwrap();
        let body = json!({ "schema": StockTrade::SCHEMA_JSON }).to_string();

        let (status, answer) = call(
            &server,
            "POST",
            "/subjects/stockapp.trades-value/versions",
            &body,
        )
        .await;
        assert_eq!((status, answer), (200, json!({ "id": 1 })));
        // In-process registrations show through the HTTP front.
        registry.register("other-value", r#""string""#).unwrap();

        let (status, answer) = call(&server, "GET", "/schemas/ids/1", "").await;
        assert_eq!(status, 200);
        assert_eq!(answer["schema"], StockTrade::SCHEMA_JSON);

        let (status, answer) =
            call(&server, "GET", "/subjects/other-value/versions/latest", "").await;
        assert_eq!(status, 200);
        assert_eq!(
            answer,
            json!({ "subject": "other-value", "version": 1, "id": 2, "schema": "\"string\"" })
        );
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn errors_use_confluent_codes() {
        let server = RegistryServer::start(SchemaRegistry::new()).await.unwrap();

        let (status, answer) = call(&server, "GET", "/schemas/ids/9", "").await;
        assert_eq!((status, &answer["error_code"]), (404, &json!(40403)));
        let (status, answer) = call(&server, "GET", "/schemas/ids/nine", "").await;
        assert_eq!((status, &answer["error_code"]), (404, &json!(40403)));
        let (status, answer) = call(&server, "GET", "/subjects/nope/versions/latest", "").await;
        assert_eq!((status, &answer["error_code"]), (404, &json!(40401)));
        let (status, answer) = call(
            &server,
            "POST",
            "/subjects/s/versions",
            r#"{"schema": "{bad"}"#,
        )
        .await;
        assert_eq!((status, &answer["error_code"]), (422, &json!(42201)));
        let protobuf = r#"{"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"}"#;
        let (status, answer) = call(&server, "POST", "/subjects/s/versions", protobuf).await;
        assert_eq!((status, &answer["error_code"]), (422, &json!(42201)));
        let (status, answer) = call(&server, "POST", "/subjects/s/versions", "not json").await;
        assert_eq!((status, &answer["error_code"]), (422, &json!(422)));
        assert!(answer["message"].as_str().unwrap().contains("schema"));
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let first = RegistryServer::start(SchemaRegistry::new()).await.unwrap();
        let err = RegistryServer::builder(SchemaRegistry::new())
            .port(first.addr().port())
            .start()
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&first.addr().to_string()), "{err}");
        drop(first);
    }
}
