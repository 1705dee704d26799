//! Peak memory and the one-line results every benchmark prints.
//!
//! A result line starts with `RESULT` and is a list of `key=value` fields, so
//! `scripts/bench` can collect them without parsing prose.

use std::fmt::Write;

/// Peak resident set size of this process in KiB (`VmHWM` of `/proc/self/status`).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A result line under construction.
pub struct Line(String);

impl Line {
    /// A result of benchmark `bench`.
    pub fn new(bench: &str) -> Self {
        Line(format!("RESULT bench={bench}"))
    }

    /// Adds a field (spaces in the value become `_`).
    pub fn field(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        let v = value.to_string().replace(' ', "_");
        let _ = write!(self.0, " {key}={v}");
        self
    }

    /// Adds a rate field rounded to whole units.
    pub fn rate(self, key: &str, value: f64) -> Self {
        self.field(key, format!("{value:.0}"))
    }

    /// Adds this process's peak RSS and prints the line on stdout.
    pub fn print(self) {
        let line = self.field(
            "peak_rss_mib",
            format!("{:.1}", peak_rss_kib() as f64 / 1024.0),
        );
        println!("{}", line.0);
    }
}
