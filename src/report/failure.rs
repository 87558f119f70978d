//! The report a failing trace assertion writes: the traces it looked at,
//! as `target/kafka-trace-harness/<test name>.html`, named in the panic
//! message. [`REPORT_ENV`] says when: `on-failure` (the default), `always`
//! (also when the assertion holds) or `never`.

use std::path::{Path, PathBuf};

use super::HtmlReport;
use crate::forest::tree::SpanForest;

/// The environment variable that says when assertions write a report.
pub const REPORT_ENV: &str = "KAFKA_TRACE_HARNESS_REPORT";

/// When trace assertions write the HTML report (see [`REPORT_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportWhen {
    /// Never.
    Never,
    /// When the assertion fails (the default).
    OnFailure,
    /// After every assertion, failed or not.
    Always,
}

impl ReportWhen {
    /// From [`REPORT_ENV`]; unset or unknown values mean `on-failure`.
    pub fn from_env() -> Self {
        Self::parse(std::env::var(REPORT_ENV).ok().as_deref())
    }

    /// A value of [`REPORT_ENV`]: `never` (or `off`, `0`, `false`),
    /// `always`; anything else (or none) is `on-failure`.
    pub fn parse(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            Some("never" | "0" | "off" | "false") => Self::Never,
            Some("always") => Self::Always,
            _ => Self::OnFailure,
        }
    }
}

/// Where the report of the test running on this thread goes:
/// `<target dir>/kafka-trace-harness/<test name>.html`. The test name is
/// the thread's, as libtest names it (`module::test`, `::` written `__`);
/// the target dir is the one holding the running test binary
/// (`target/debug/deps/…`), else `CARGO_TARGET_DIR`, else `target` under
/// `CARGO_MANIFEST_DIR` or the current directory.
pub fn failure_report_path() -> PathBuf {
    let thread = std::thread::current();
    let name = match thread.name() {
        Some(name) if name != "main" => name.replace("::", "__"),
        _ => "trace-report".to_owned(),
    };
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    target_dir()
        .join("kafka-trace-harness")
        .join(format!("{file}.html"))
}

fn target_dir() -> PathBuf {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .find(|dir| dir.file_name().is_some_and(|n| n == "deps"))
            .and_then(Path::parent)
            .and_then(Path::parent)
            .map(Path::to_path_buf)
    });
    if let Some(dir) = from_exe {
        return dir;
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    base.join("target")
}

/// Writes the report of `forest` for an assertion that `failed` (or held),
/// if [`REPORT_ENV`] asks for it, and returns a line naming the file (or
/// why it could not be written) for the panic message.
pub fn write_failure_report(forest: &SpanForest, failed: bool) -> Option<String> {
    let when = ReportWhen::from_env();
    let write = match when {
        ReportWhen::Never => false,
        ReportWhen::OnFailure => failed,
        ReportWhen::Always => true,
    };
    if !write {
        return None;
    }
    let path = failure_report_path();
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            HtmlReport::new()
                .title(format!(
                    "{} (trace assertion)",
                    path.file_stem().unwrap_or_default().to_string_lossy()
                ))
                .write(forest, &path)
        });
    Some(match result {
        Ok(()) => format!(
            "HTML report of these traces: {} (set {REPORT_ENV}=never to skip it)",
            path.display()
        ),
        Err(e) => format!("the HTML report could not be written: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_says_never_always_or_on_failure() {
        assert_eq!(ReportWhen::parse(None), ReportWhen::OnFailure);
        assert_eq!(ReportWhen::parse(Some("on-failure")), ReportWhen::OnFailure);
        assert_eq!(ReportWhen::parse(Some(" never ")), ReportWhen::Never);
        assert_eq!(ReportWhen::parse(Some("0")), ReportWhen::Never);
        assert_eq!(ReportWhen::parse(Some("always")), ReportWhen::Always);
    }

    #[test]
    fn a_report_is_named_after_the_test_thread() {
        let path = std::thread::Builder::new()
            .name("forest::tests::a <b>".into())
            .spawn(failure_report_path)
            .unwrap()
            .join()
            .unwrap();
        assert!(
            path.ends_with("kafka-trace-harness/forest__tests__a__b_.html"),
            "{}",
            path.display()
        );
    }
}
