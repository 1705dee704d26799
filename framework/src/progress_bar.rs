//! A progress bar for bounded runs (indicatif), drawn on stderr only when stderr is a
//! terminal.
//!
//! It shows records read of the total, the rate and an ETA. The total is, over every
//! partition this process reads, the partition's **high watermark as of the latest fetch
//! response** (reported by librdkafka's statistics every second) minus the first offset
//! this run read from it. ListOffsets "latest" is not used because Tansu, the test broker,
//! answers it too low (the first offset of the last batch plus one). So the total is known only once a partition has
//! been fetched from, grows while producers append, and a partition not yet read from
//! does not count yet.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressDrawTarget, ProgressStyle};

use crate::metrics::Metrics;

/// The bar's thread; finishes the bar when dropped.
pub struct ProgressBar {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressBar {
    /// Starts a bar over `metrics` if stderr is a terminal (else does nothing).
    pub fn start(metrics: Arc<Metrics>) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        Some(Self::start_on(metrics, ProgressDrawTarget::stderr()))
    }

    /// Starts a bar drawing to `target` (tests use a hidden target).
    pub fn start_on(metrics: Arc<Metrics>, target: ProgressDrawTarget) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let thread = std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::with_draw_target(Some(0), target);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records ({msg}, ETA {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let start = std::time::Instant::now();
            let update = |bar: &indicatif::ProgressBar| {
                let (read, total) = metrics.progress();
                bar.set_length(total.max(read));
                bar.set_position(read);
                let secs = start.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{:.0}/s", read as f64 / secs));
            };
            while !d.load(Ordering::Relaxed) {
                update(&bar);
                std::thread::sleep(Duration::from_millis(200));
            }
            update(&bar);
            bar.finish();
        });
        ProgressBar {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_from_the_first_offset_read_to_the_fetched_high_watermark() {
        let m = Arc::new(Metrics::default());
        assert_eq!(m.progress(), (0, 0));
        // Known high watermark, nothing read yet: not counted (no start offset).
        m.high_watermark("t", 0, 100);
        assert_eq!(m.progress(), (0, 0));
        m.position("t", 0, Some(40), Some(70), false);
        m.position("t", 1, Some(0), Some(5), false); // no high watermark yet: 5 of 5
        assert_eq!(m.progress(), (35, 65));
        m.high_watermark("t", 1, 10);
        assert_eq!(m.progress(), (35, 70));
        // Read past a stale high watermark: the total follows what was read.
        m.position("t", 1, Some(0), Some(12), false);
        assert_eq!(m.progress(), (42, 72));
        let bar = ProgressBar::start_on(m.clone(), ProgressDrawTarget::hidden());
        drop(bar);
        assert!(m
            .prom
            .encode()
            .contains("freshet_consumer_lag{partition=\"0\",topic=\"t\"} 30"));
    }
}
