//! `stockapp.dollarsbyzip` JSON values as the API service reads them.
//!
//! Input: a whole record value.
#![no_main]

use kafka_trace_harness::stockapp::DollarsByZipRow;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match DollarsByZipRow::from_json(data) {
        Ok(row) => {
            assert!(row.window_end > row.window_start);
            // The API serves rows as `to_json`; it must read back the same.
            let text = row.to_json();
            let back = DollarsByZipRow::from_json(text.as_bytes())
                .unwrap_or_else(|e| panic!("{text} does not read back: {e}"));
            assert_eq!(back, row, "{text}");
        }
        Err(e) => {
            // Errors quote at most 200 bytes of the value.
            let report = e.to_string();
            assert!(report.len() < 2_000, "{} bytes", report.len());
        }
    }
});
