//! A latency histogram the workers of a process share.

/// Event-to-alert latencies in ms, shared by the workers of a process.
pub type Latencies = std::sync::Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>;

/// An empty latency histogram (1 ms to 1 hour, 3 significant digits).
pub fn latencies() -> Latencies {
    std::sync::Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::new_with_bounds(1, 3_600_000, 3).expect("histogram bounds"),
    ))
}
