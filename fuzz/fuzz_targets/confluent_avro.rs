//! Confluent wire-format framing and Avro decoding of trades and users.
//!
//! Input: a whole record value. The registry holds the trade schema as id 1
//! and the user schema as id 2, as a pipeline's first registrations do.
#![no_main]

use std::sync::LazyLock;

use kafka_trace_harness::stockapp::{
    AvroRecord, DecodeError, SchemaRegistry, StockTrade, TRADES_TOPIC, USERS_TOPIC, User,
    WireHeader,
};
use libfuzzer_sys::fuzz_target;

static REGISTRY: LazyLock<SchemaRegistry> = LazyLock::new(|| {
    let registry = SchemaRegistry::new();
    registry
        .register(&format!("{TRADES_TOPIC}-value"), StockTrade::SCHEMA_JSON)
        .expect("the trade schema parses");
    registry
        .register(&format!("{USERS_TOPIC}-value"), User::SCHEMA_JSON)
        .expect("the user schema parses");
    registry
});

fuzz_target!(|data: &[u8]| {
    match WireHeader::split(data) {
        Ok((header, body)) => assert_eq!(header.frame(body), data),
        Err(DecodeError::TooShort { len }) => assert_eq!(len, data.len()),
        Err(DecodeError::WrongMagicByte { found }) => assert_eq!(Some(&found), data.first()),
        Err(other) => panic!("split can only fail on the header: {other}"),
    }
    check::<StockTrade>(data, TRADES_TOPIC);
    check::<User>(data, USERS_TOPIC);
});

/// Decodes `data` as a `T`; whatever decodes encodes and decodes back to
/// the same value.
fn check<T: AvroRecord + PartialEq + std::fmt::Debug>(data: &[u8], topic: &str) {
    match REGISTRY.decode_value::<T>(data) {
        Ok(value) => {
            let bytes = REGISTRY
                .encode_value(topic, &value)
                .expect("a decoded value encodes");
            let back: T = REGISTRY
                .decode_value(&bytes)
                .expect("an encoded value decodes");
            assert_eq!(back, value);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
