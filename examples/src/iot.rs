//! IoT anomaly detection: per device, a rolling mean and standard deviation over its
//! last readings; a reading more than `k` deviations from the mean is an anomaly; a
//! device that sends nothing for `silence_ms` of event time is reported silent.
//!
//! Built on [`freshet::operators::KeyedState`]: readings are applied per device in
//! event-time order (so bursty, out-of-order arrival gives the same result as ordered
//! arrival), and a device's state expires after `silence_ms` without a reading, which
//! is what reports it silent. At the end of a bounded run every device's state
//! expires, so every device is reported silent once the input ends.

use std::collections::{BTreeMap, VecDeque};

use freshet::operators::KeyedState;
use freshet::time::Time;
use freshet::{Job, Json, KafkaSink, KafkaSource, PrintStdout, WriteKafka};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;

use crate::malformed::report_malformed;

/// One sensor reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Device id.
    pub device: u32,
    /// Event time, ms since the Unix epoch.
    pub ts: u64,
    /// The measured value.
    pub value: f64,
}

/// What the detector reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum IotAlert {
    /// A reading more than `k` deviations from its device's rolling mean.
    Anomaly {
        /// Device id.
        device: u32,
        /// The reading's event time.
        ts: u64,
        /// The reading.
        value: f64,
        /// Rolling mean before it.
        mean: f64,
        /// Rolling standard deviation before it.
        stddev: f64,
    },
    /// The device sent nothing for the silence timeout after `last_seen`.
    Silent {
        /// Device id.
        device: u32,
        /// Event time of its last reading.
        last_seen: u64,
    },
}

impl IotAlert {
    /// True for an anomaly.
    pub fn is_anomaly(&self) -> bool {
        matches!(self, IotAlert::Anomaly { .. })
    }
}

/// Detector settings.
#[derive(Clone, Copy, Debug)]
pub struct IotRule {
    /// Readings in the rolling window.
    pub window: usize,
    /// Readings needed before anything is judged.
    pub min_samples: usize,
    /// Deviations from the mean that make an anomaly.
    pub k: f64,
    /// Event-time ms without a reading after which a device is silent.
    pub silence_ms: u64,
}

impl Default for IotRule {
    fn default() -> Self {
        IotRule {
            window: 40,
            min_samples: 10,
            k: 4.0,
            silence_ms: 1_000,
        }
    }
}

/// A device's rolling statistics.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeviceStats {
    values: VecDeque<f64>,
    last_seen: u64,
}

impl DeviceStats {
    /// Judges `r` against the readings before it, then adds it (anomalies are not added,
    /// so a spike does not widen the band).
    pub fn observe(&mut self, r: &Reading, rule: &IotRule) -> Option<IotAlert> {
        self.last_seen = self.last_seen.max(r.ts);
        let n = self.values.len();
        if n >= rule.min_samples {
            let mean = self.values.iter().sum::<f64>() / n as f64;
            let var = self
                .values
                .iter()
                .map(|v| (v - mean) * (v - mean))
                .sum::<f64>()
                / n as f64;
            let stddev = var.sqrt();
            if (r.value - mean).abs() > rule.k * stddev.max(1e-9) {
                return Some(IotAlert::Anomaly {
                    device: r.device,
                    ts: r.ts,
                    value: r.value,
                    mean,
                    stddev,
                });
            }
        }
        self.values.push_back(r.value);
        if self.values.len() > rule.window {
            self.values.pop_front();
        }
        None
    }
}

/// The job's logic: readings in, anomalies and silent devices out.
pub fn detect<'s>(
    readings: StreamVec<'s, Time, Reading>,
    rule: IotRule,
) -> StreamVec<'s, Time, IotAlert> {
    readings.keyed_state_with(
        "devices",
        rule.silence_ms,
        |r: &Reading| r.device,
        move |_device, state: &mut Option<DeviceStats>, r: Reading| {
            state
                .get_or_insert_with(DeviceStats::default)
                .observe(&r, &rule)
        },
        |device, state: DeviceStats| {
            Some(IotAlert::Silent {
                device: *device,
                last_seen: state.last_seen,
            })
        },
    )
}

/// What a sequential loop reports over `readings` (all of them, then the end of input).
pub fn reference(readings: &[Reading], rule: &IotRule) -> Vec<IotAlert> {
    let mut by_device: BTreeMap<u32, Vec<&Reading>> = BTreeMap::new();
    for r in readings {
        by_device.entry(r.device).or_default().push(r);
    }
    let mut out = Vec::new();
    for (device, mut rs) in by_device {
        rs.sort_by_key(|r| r.ts);
        let mut stats: Option<DeviceStats> = None;
        for r in rs {
            if let Some(s) = &stats {
                if r.ts > s.last_seen + rule.silence_ms {
                    out.push(IotAlert::Silent {
                        device,
                        last_seen: s.last_seen,
                    });
                    stats = None;
                }
            }
            out.extend(
                stats
                    .get_or_insert_with(DeviceStats::default)
                    .observe(r, rule),
            );
        }
        if let Some(s) = stats {
            out.push(IotAlert::Silent {
                device,
                last_seen: s.last_seen,
            });
        }
    }
    out
}

/// Generates readings from `devices` devices, one every 50 ms each for `span_ms` from
/// `start_ms`, with occasional spikes (`spike_every` readings on average) and device 0
/// silent for `gap_ms` in the middle. Delivery is bursty: each reading is delayed by up
/// to `disorder_ms`, and the result is in delivery order (so out of event-time order).
pub fn generate_readings(
    seed: u64,
    devices: u32,
    start_ms: u64,
    span_ms: u64,
    spike_every: u32,
    gap_ms: u64,
    disorder_ms: u64,
) -> Vec<Reading> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out: Vec<(u64, Reading)> = Vec::new();
    let mid = start_ms + span_ms / 2;
    let mut ts = start_ms;
    while ts < start_ms + span_ms {
        for device in 0..devices {
            if device == 0 && ts >= mid && ts < mid + gap_ms {
                continue;
            }
            let base = 20.0 + (device % 10) as f64;
            let noise: f64 = (0..4).map(|_| rng.gen_range(-0.5..0.5)).sum();
            let spike = spike_every > 0 && rng.gen_range(0..spike_every) == 0;
            let value = if spike { base + 25.0 } else { base + noise };
            let delay = rng.gen_range(0..=disorder_ms);
            out.push((ts + delay, Reading { device, ts, value }));
        }
        ts += 50;
    }
    out.sort_by_key(|(arrival, r)| (*arrival, r.device));
    out.into_iter().map(|(_, r)| r).collect()
}

/// The IoT job: JSON [`Reading`]s from `input`; anomalies to `anomalies`, silent
/// devices to `status` (both JSON [`IotAlert`]s keyed by device).
pub fn job(
    input: String,
    anomalies: String,
    status: String,
    rule: IotRule,
    print: bool,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    use timely::dataflow::operators::vec::Filter;
    move |job| {
        let s = KafkaSource::new(input.clone(), Json::<Reading>::new())
            .event_time(|r: &Reading| Some(r.ts))
            .build(job)?;
        let alerts = detect(s.records, rule);
        if print {
            alerts.clone().print_stdout(job, "iot");
        }
        let key = |a: &IotAlert| {
            let d = match a {
                IotAlert::Anomaly { device, .. } | IotAlert::Silent { device, .. } => device,
            };
            Some(d.to_string().into_bytes())
        };
        alerts.clone().filter(|a| a.is_anomaly()).write_kafka(
            job,
            KafkaSink::new(anomalies.clone(), Json::<IotAlert>::new()).key(key),
        )?;
        alerts.filter(|a| !a.is_anomaly()).write_kafka(
            job,
            KafkaSink::new(status.clone(), Json::<IotAlert>::new()).key(key),
        )?;
        report_malformed(job, s.errors);
        Ok(())
    }
}
