//! `datagen --topic`: the records produced to a topic, each in a root
//! `send` span of its own trace, as the stockapp's datagen service sends.

use std::time::Duration;

use apache_avro::types::Value;
use kafka_trace_harness::datagen::{DatagenSchema, SchemaGenerator};
use kafka_trace_harness::stockapp::{SchemaId, WireHeader, value_subject};
use kafka_trace_harness::traced::TracedProducer;
use kafka_trace_harness::{Backend, Broker, SpanCapture};
use opentelemetry::Context;
use rskafka::record::Record;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{progress_bar, tick};

/// How long registering the schema may take.
const REGISTRY_DEADLINE: Duration = Duration::from_secs(10);

/// Where and how to produce.
pub struct Target<'a> {
    pub topic: &'a str,
    pub bootstrap: &'a str,
    pub registry: Option<&'a str>,
    pub key_field: Option<&'a str>,
    pub rate: Option<f64>,
}

/// Sends `count` records; returns how many were acknowledged.
pub async fn produce(
    schema: &DatagenSchema,
    mut generator: SchemaGenerator,
    count: u64,
    target: Target<'_>,
) -> Result<u64, Box<dyn std::error::Error>> {
    if let Some(field) = target.key_field {
        let Value::Record(fields) = generator_peek(schema) else {
            return Err("--key-field needs a record schema".into());
        };
        if !fields.iter().any(|(name, _)| name == field) {
            return Err(format!("--key-field {field}: the record has no such field").into());
        }
    }
    let schema_id = match target.registry {
        Some(url) => Some(register(url, &value_subject(target.topic), schema).await?),
        None => None,
    };
    let broker = Broker::builder()
        .backend(Backend::External {
            bootstrap: target.bootstrap.to_owned(),
        })
        .start()
        .await?;
    let capture = SpanCapture::new();
    let producer = TracedProducer::connect(&broker, capture.tracer("datagen")).await?;
    let mut ticks = target.rate.filter(|r| *r > 0.0).map(|r| {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        ticks
    });
    let bar = progress_bar(count);
    for n in 0..count {
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        let value = generator.next_value();
        let key = target.key_field.map(|field| key_of(schema, &value, field));
        let body = match schema_id {
            Some(id) => WireHeader::new(id).frame(&schema.to_avro_datum(value)?),
            None => schema.to_json_string(&value).into_bytes(),
        };
        let record = Record {
            key,
            value: Some(body),
            headers: Default::default(),
            timestamp: chrono::Utc::now(),
        };
        producer
            .send(&Context::new(), target.topic, 0, record)
            .await?;
        tick(&bar, n);
    }
    bar.finish_and_clear();
    eprintln!(
        "sent {count} records to {} ({}), {} send spans",
        target.topic,
        match schema_id {
            Some(id) => format!("Avro, schema id {}", id.0),
            None => "JSON".to_owned(),
        },
        capture.spans().len()
    );
    Ok(count)
}

fn generator_peek(schema: &DatagenSchema) -> Value {
    schema.generator(0).next_value()
}

/// The key: a string field as it is, any other field as its JSON text.
fn key_of(schema: &DatagenSchema, value: &Value, field: &str) -> Vec<u8> {
    let Value::Record(fields) = value else {
        return Vec::new();
    };
    match fields.iter().find(|(name, _)| name == field) {
        Some((_, Value::String(s))) => s.as_bytes().to_vec(),
        Some((_, Value::Union(_, inner))) if matches!(**inner, Value::String(_)) => {
            match &**inner {
                Value::String(s) => s.as_bytes().to_vec(),
                _ => Vec::new(),
            }
        }
        Some(_) => {
            let json = schema.to_json(value);
            json.get(field)
                .map(|v| v.to_string().into_bytes())
                .unwrap_or_default()
        }
        None => Vec::new(),
    }
}

/// Registers the schema under `subject` with a Confluent Schema Registry
/// (`POST /subjects/{subject}/versions`); returns its id.
async fn register(
    url: &str,
    subject: &str,
    schema: &DatagenSchema,
) -> Result<SchemaId, Box<dyn std::error::Error>> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--schema-registry {url}: only http:// URLs are supported"))?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let schema_text = serde_json::to_string(schema.avro_schema())?;
    let body = serde_json::json!({ "schema": schema_text }).to_string();
    let request = format!(
        "POST {base}/subjects/{subject}/versions HTTP/1.1\r\nHost: {authority}\r\n\
         Content-Type: application/vnd.schemaregistry.v1+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(REGISTRY_DEADLINE, exchange)
        .await
        .map_err(|_| {
            format!("the schema registry at {url} did not answer within {REGISTRY_DEADLINE:?}")
        })?
        .map_err(|e| format!("the schema registry at {url}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("the schema registry at {url} sent no HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    if status != "200" {
        return Err(
            format!("the schema registry at {url} refused the schema: {status} {body}").into(),
        );
    }
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    let id = answer["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| format!("the schema registry at {url} answered without an id: {body}"))?;
    Ok(SchemaId(id))
}

/// The body of a chunked HTTP answer.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
