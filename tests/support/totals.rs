//! The totals the stockapp's API must serve, computed straight from the
//! generated records (every user is sent before any trade).

use std::collections::{BTreeMap, HashMap};

use kafka_trace_harness::stockapp::pipeline::TradeClock;
use kafka_trace_harness::stockapp::processor::window_start;
use kafka_trace_harness::stockapp::{StockTrade, User};

/// A row of `stockapp.dollarsbyzip`: zip code and window start (ms).
pub type RowKey = (String, i64);

/// The latest profile of each user.
pub fn users_by_id(users: impl Iterator<Item = User>) -> HashMap<String, User> {
    users.map(|u| (u.userid.clone(), u)).collect()
}

/// Each row's total in cents, and how many trades make it, when trade `n`
/// happens at `clock.timestamp_ms(n)`.
pub fn expected_rows(
    trades: &[StockTrade],
    users: &HashMap<String, User>,
    clock: TradeClock,
) -> BTreeMap<RowKey, (i128, usize)> {
    let mut rows: BTreeMap<RowKey, (i128, usize)> = BTreeMap::new();
    for (index, trade) in trades.iter().enumerate() {
        let zip = users.get(&trade.userid).and_then(|u| u.zipcode());
        if let (true, Some(zip)) = (trade.symbol.ends_with('T'), zip) {
            let window = window_start(clock.timestamp_ms(index));
            let (total, count) = rows.entry((zip.to_owned(), window)).or_default();
            *total += i128::from(trade.price) * i128::from(trade.quantity);
            *count += 1;
        }
    }
    rows
}

/// The totals of `rows`, as `ApiState::totals_in_cents` gives them.
pub fn totals(rows: BTreeMap<RowKey, (i128, usize)>) -> BTreeMap<RowKey, i128> {
    rows.into_iter().map(|(k, (total, _))| (k, total)).collect()
}
