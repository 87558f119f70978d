//! Trades a test writes to `stockapp.trades` by hand, beside the generated
//! ones (shared by `stockapp_dedup` and `stockapp_late` through `#[path]`).

use kafka_trace_harness::Broker;
use kafka_trace_harness::stockapp::pipeline::TradeClock;
use kafka_trace_harness::stockapp::{StockTrade, TRADES_TOPIC};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

/// The generated trades' clock: a 5-minute boundary, 7 s apart.
pub const CLOCK: TradeClock = TradeClock {
    start_ms: 1_700_000_000_000 - 1_700_000_000_000 % 300_000,
    spacing_ms: 7_000,
};

/// A trade of `User_1` in a symbol the query keeps (it ends in T).
pub fn trade(quantity: i32) -> StockTrade {
    StockTrade {
        side: "BUY".into(),
        quantity,
        symbol: "ZVZZT".into(),
        price: 100,
        account: "ABC123".into(),
        userid: "User_1".into(),
    }
}

/// Writes `records` to partition 0 of `stockapp.trades` in one batch.
pub async fn produce_trades(broker: &Broker, records: Vec<Record>) {
    broker
        .client()
        .await
        .expect("client")
        .partition_client(TRADES_TOPIC, 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition")
        .produce(records, Compression::NoCompression)
        .await
        .expect("produced");
}
