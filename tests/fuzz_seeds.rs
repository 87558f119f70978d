//! The Confluent Avro seeds of the fuzz targets (`fuzz/corpus/`) are this
//! crate's own encodings; `UPDATE_FUZZ_SEEDS=1 cargo test --test
//! fuzz_seeds` rewrites them after a schema change.
#![cfg(feature = "stockapp")]

use std::path::Path;

use kafka_trace_harness::stockapp::{
    Datagen, SchemaId, SchemaRegistry, StockTrade, TRADES_TOPIC, USERS_TOPIC, User, WireHeader,
};

/// Compares `bytes` with the seed file `name`, or writes it when asked.
fn check_seed(name: &str, bytes: &[u8]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/confluent_avro")
        .join(name);
    if std::env::var_os("UPDATE_FUZZ_SEEDS").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let seed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        seed,
        bytes,
        "{} is stale: rerun with UPDATE_FUZZ_SEEDS=1",
        path.display()
    );
}

#[test]
fn avro_seeds_are_the_encoders_output() {
    // Registered in the fuzz target's order: trades are id 1, users id 2.
    let registry = SchemaRegistry::new();
    let datagen = Datagen::new(1);
    let trade = datagen.trades().next().unwrap();
    let user = datagen.users().next().unwrap();
    let trade_bytes = registry.encode_value(TRADES_TOPIC, &trade).unwrap();
    let user_bytes = registry.encode_value(USERS_TOPIC, &user).unwrap();
    assert_eq!(
        WireHeader::split(&trade_bytes).unwrap().0.schema_id,
        SchemaId(1)
    );
    assert_eq!(
        WireHeader::split(&user_bytes).unwrap().0.schema_id,
        SchemaId(2)
    );
    assert_eq!(
        registry.decode_value::<StockTrade>(&trade_bytes).unwrap(),
        trade
    );
    assert_eq!(registry.decode_value::<User>(&user_bytes).unwrap(), user);

    check_seed("seed-trade", &trade_bytes);
    check_seed("seed-user", &user_bytes);
}
