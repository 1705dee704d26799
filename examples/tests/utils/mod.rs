//! Helpers shared by the examples' Kafka integration tests: the framework tests' Kafka
//! helpers (the broker address, fresh topics, reading topics back, committed offsets),
//! one file for both.
#![allow(dead_code)]

#[path = "../../../framework/tests/support/kafka.rs"]
mod kafka;
pub use kafka::*;
