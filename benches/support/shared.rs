//! What every bench here shares: the runtime they run on, and whether
//! criterion measures for real. Included with
//! `#[path = "support/shared.rs"] mod shared;`.

// A bench that uses only one of these must not fail `clippy -D warnings`.
#![allow(dead_code)]

/// Two worker threads: the development machine's cores, as the program
/// runs on them.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `cargo bench` passes `--bench`; `cargo test --benches` does not, and
/// `cargo bench -- --test` adds `--test`: then summaries make one small run
/// of each kind instead of several large ones.
pub fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}
