//! The admin channel's request lines.
//!
//! Input: one line as the channel reads it (not UTF-8 is refused before
//! parsing there, as `lines()` fails on it).
#![no_main]

use kafka_trace_harness::broker::AdminCommand;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match AdminCommand::parse(line) {
        Ok(command) => {
            // A parsed command prints as a line that parses to itself.
            let text = command.to_string();
            assert_eq!(
                AdminCommand::parse(&text).as_ref(),
                Ok(&command),
                "{text:?}"
            );
            let AdminCommand::Create { topic, partitions } = &command else {
                return;
            };
            assert!(*partitions > 0);
            assert!(!topic.is_empty() && topic.len() <= 249);
        }
        Err(e) => {
            // The reply to a refused line is one short line.
            let reply = e.to_string();
            assert!(!reply.contains('\n') && !reply.contains('\r'), "{reply:?}");
            assert!(reply.chars().count() <= 1_000, "{reply:?}");
        }
    }
});
