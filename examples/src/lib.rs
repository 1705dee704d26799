//! The example jobs, and what they and their tests share.
//!
//! Each example is one module holding its record types, its logic as a function over
//! input streams ([`risk::risk_alerts`], [`iot::detect`], [`sessions::sessionize`],
//! [`enrich::enrich`], the window count), a sequential reference, a generator, and its
//! job: a build function for [`freshet::run`] that adds the Kafka sources and sinks
//! around the logic ([`risk::job`], [`iot::job`], [`sessions::job`], [`enrich::job`],
//! [`window_count::job`]). So the same logic runs under [`freshet::testing::Harness`]
//! (no broker) and in the job binaries.
//!
//! Shared pieces: [`demo`] (a mock cluster for `--demo`), [`produce`] (preloading
//! topics), [`latency`] (an alert-latency histogram).

#![forbid(missing_docs)]

pub mod demo;
pub mod enrich;
pub mod iot;
pub mod latency;
mod malformed;
pub mod produce;
pub mod risk;
pub mod risk_score;
pub mod sessions;
pub mod window_count;

pub use demo::start_demo;
pub use freshet::clock::now_ms;
pub use latency::{latencies, Latencies};
pub use produce::{produce, produce_json, Outgoing};
pub use window_count::{generate, reference_counts, Event, WindowCount};
