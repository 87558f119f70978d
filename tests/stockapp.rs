//! The stockapp core through its public API: the processor against an
//! independent straightforward computation, and seeded determinism.

use std::collections::{BTreeMap, HashMap};

use kafka_trace_harness::stockapp::{
    AvroRecord, Datagen, FilteredOut, SchemaRegistry, StockProcessor, StockTrade, TRADES_TOPIC,
    USERS_TOPIC, User, trade_to_json,
};
use proptest::prelude::*;

const ZIPS: [&str; 5] = ["94403", "92617", "94301", "95112", "94070"];
const SYMBOLS: [&str; 9] = [
    "ZBZX", "ZJZZT", "ZTEST", "ZVV", "ZVZZT", "ZWZZT", "ZXZZT", "ZTESt", "T",
];
const FIVE_MINUTES: i64 = 300_000;

#[derive(Debug, Clone)]
enum Event {
    /// A profile for `User_<n>`, with the zip code at that index, if any.
    User { n: u8, zip: Option<usize> },
    /// A tombstone for `User_<n>`.
    Tombstone { n: u8 },
    /// A trade; the timestamp advances by `delay_ms`, or goes back by it.
    Trade {
        symbol: usize,
        n: u8,
        price: i32,
        quantity: i32,
        delay_ms: i64,
        back: bool,
    },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (1..=4u8, proptest::option::weighted(0.85, 0..ZIPS.len()))
            .prop_map(|(n, zip)| Event::User { n, zip }),
        1 => (1..=4u8).prop_map(|n| Event::Tombstone { n }),
        8 => (
            0..SYMBOLS.len(),
            1..=5u8,
            prop_oneof![5..1000i32, -100_010..100_010i32],
            prop_oneof![1..5000i32, any::<i32>()],
            prop_oneof![0..1_000i64, 0..400_000i64],
            proptest::bool::weighted(0.2),
        )
            .prop_map(|(symbol, n, price, quantity, delay_ms, back)| Event::Trade {
                symbol,
                n,
                price,
                quantity,
                delay_ms,
                back,
            }),
    ]
}

fn user(n: u8, zip: Option<usize>) -> User {
    let mut contactinfo = BTreeMap::from([("state".to_owned(), "CA".to_owned())]);
    if let Some(zip) = zip {
        contactinfo.insert("zipcode".to_owned(), ZIPS[zip].to_owned());
    }
    User {
        registertime: 1_500_000_000_000,
        userid: format!("User_{n}"),
        regionid: format!("Region_{n}"),
        gender: "OTHER".to_owned(),
        interests: vec!["News".to_owned(), "Movies".to_owned()],
        contactinfo,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Totals per (zip, window) equal a direct computation: latest zip per
    /// user, symbols ending in `T`, `price * quantity` cents when the price
    /// fits `DECIMAL(7,2)`, windows `ts - ts % 5min`. Timestamps stay well
    /// inside the 24-hour grace period, so no window closes.
    #[test]
    fn totals_match_a_direct_computation(events in proptest::collection::vec(event(), 0..120)) {
        let mut processor = StockProcessor::<usize>::new();
        let mut zip_of: HashMap<u8, Option<&str>> = HashMap::new();
        let mut expected: HashMap<(&str, i64), i128> = HashMap::new();
        let mut expected_ids: HashMap<(&str, i64), Vec<usize>> = HashMap::new();
        let mut ts: i64 = 1_700_000_000_000;

        for (i, event) in events.iter().enumerate() {
            match *event {
                Event::User { n, zip } => {
                    processor.upsert_user(user(n, zip));
                    zip_of.insert(n, zip.map(|z| ZIPS[z]));
                }
                Event::Tombstone { n } => {
                    processor.remove_user(&format!("User_{n}"));
                    zip_of.remove(&n);
                }
                Event::Trade { symbol, n, price, quantity, delay_ms, back } => {
                    ts = if back { ts - delay_ms } else { ts + delay_ms };
                    let trade = StockTrade {
                        side: "BUY".to_owned(),
                        quantity,
                        symbol: SYMBOLS[symbol].to_owned(),
                        price,
                        account: "ABC123".to_owned(),
                        userid: format!("User_{n}"),
                    };
                    let outcome = processor.process_trade(&trade, ts, i);

                    let kept = SYMBOLS[symbol].ends_with('T');
                    let zip = zip_of.get(&n).copied().flatten();
                    match (kept, zip) {
                        (true, Some(zip)) => {
                            let start = ts - ts % FIVE_MINUTES;
                            let cents = if price.unsigned_abs() <= 99_999 {
                                i128::from(price) * i128::from(quantity)
                            } else {
                                0
                            };
                            let total = expected.entry((zip, start)).or_default();
                            *total += cents;
                            let ids = expected_ids.entry((zip, start)).or_default();
                            ids.push(i);

                            let update = outcome.expect("kept trade yields a row");
                            prop_assert_eq!(update.row.key(), zip);
                            prop_assert_eq!(update.row.window_start, start);
                            prop_assert_eq!(update.row.window_end, start + FIVE_MINUTES);
                            prop_assert_eq!(update.row.total_dollars.cents(), *total);
                            prop_assert_eq!(&update.row.contributors, ids);
                            let json: serde_json::Value = serde_json::from_str(&update.row.to_json()).unwrap();
                            prop_assert_eq!(&json["ZIPCODE"], zip);
                            let text = update.row.total_dollars.to_string();
                            prop_assert_eq!(text.replace('.', "").parse::<i128>().unwrap(), *total);
                            prop_assert_eq!(text.split('.').nth(1).map(str::len), Some(2));
                        }
                        (true, None) => {
                            let is_reason = matches!(
                                outcome,
                                Err(FilteredOut::UnknownUser { .. } | FilteredOut::NoZipCode { .. })
                            );
                            prop_assert!(is_reason);
                        }
                        (false, _) => {
                            let is_reason = matches!(outcome, Err(FilteredOut::SymbolNotEndingInT { .. }));
                            prop_assert!(is_reason);
                        }
                    }
                }
            }
        }

        for ((zip, start), total) in &expected {
            let row = processor.window_row(zip, *start).expect("row exists");
            prop_assert_eq!(row.total_dollars.cents(), *total);
        }
        prop_assert_eq!(processor.window_rows().count(), expected.len());
    }

    /// Every generated record survives the wire format and the JSON form.
    #[test]
    fn generated_records_round_trip(seed in any::<u64>()) {
        let registry = SchemaRegistry::new();
        let datagen = Datagen::builder().seed(seed).trades(5).users(5).build();
        for trade in datagen.trades() {
            let bytes = registry.encode_value(TRADES_TOPIC, &trade).unwrap();
            prop_assert_eq!(registry.decode_value::<StockTrade>(&bytes).unwrap(), trade.clone());
            let json: StockTrade = serde_json::from_str(&trade_to_json(&trade)).unwrap();
            prop_assert_eq!(json, trade);
        }
        for user in datagen.users() {
            let bytes = registry.encode_value(USERS_TOPIC, &user).unwrap();
            prop_assert_eq!(registry.decode_value::<User>(&bytes).unwrap(), user);
        }
    }
}

/// The whole pipeline's output bytes for one seed, for comparing runs.
fn pipeline_bytes(seed: u64) -> Vec<Vec<u8>> {
    let datagen = Datagen::builder().seed(seed).users(30).trades(300).build();
    let registry = SchemaRegistry::new();
    let mut processor = StockProcessor::<usize>::new();
    let mut out = Vec::new();
    for user in datagen.users() {
        let bytes = registry.encode_value(USERS_TOPIC, &user).unwrap();
        processor.upsert_user(registry.decode_value(&bytes).unwrap());
        out.push(bytes);
    }
    for (i, trade) in datagen.trades().enumerate() {
        let bytes = registry.encode_value(TRADES_TOPIC, &trade).unwrap();
        let decoded: StockTrade = registry.decode_value(&bytes).unwrap();
        out.push(bytes);
        out.push(trade_to_json(&decoded).into_bytes());
        let ts = 1_700_000_000_000 + i as i64 * 7_000;
        if let Ok(update) = processor.process_trade(&decoded, ts, i) {
            out.push(update.row.key().as_bytes().to_vec());
            out.push(update.row.to_json().into_bytes());
        }
    }
    out
}

#[test]
fn same_seed_gives_identical_bytes_end_to_end() {
    assert_eq!(pipeline_bytes(2024), pipeline_bytes(2024));
    assert_ne!(pipeline_bytes(2024), pipeline_bytes(2025));
}

/// Pins the generators' output (the generic datagen on the bundled
/// schemas), so a change of draw order or of a dependency's algorithm
/// shows up here rather than as a silent change of every seeded test in
/// the workspace.
#[test]
fn seeded_output_is_pinned() {
    let datagen = Datagen::new(42);
    let trade = datagen.trades().next().unwrap();
    let user = datagen.users().next().unwrap();
    let hex = |bytes: Vec<u8>| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        trade_to_json(&trade),
        r#"{"side":"BUY","quantity":732,"symbol":"ZXZZT","price":430,"account":"LMN456","userid":"User_6"}"#
    );
    assert_eq!(
        serde_json::to_string(&user).unwrap(),
        r#"{"registertime":1510335991946,"userid":"User_6","regionid":"Region_2","gender":"MALE","interests":["Game","Sport"],"contactinfo":{"city":"Palo Alto","phone":"6503889999","state":"CA","zipcode":"94301"}}"#
    );
    // Avro binary: zig-zag varints, length-prefixed strings, one map block.
    assert_eq!(
        hex(trade.to_avro().unwrap()),
        "06425559b80b0a5a585a5a54dc060c4c4d4e3435360c557365725f36"
    );
    assert_eq!(
        hex(user.to_avro().unwrap()),
        "94c2d2f0f4570c557365725f3610526567696f6e5f32084d414c45040847616d650a53706f7274000808\
         636974791250616c6f20416c746f0a70686f6e6514363530333838393939390a73746174650443410e\
         7a6970636f64650a393433303100"
    );
}
