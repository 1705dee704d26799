//! Codec throughput: JSON (`freshet::Json`), the binary codec (`freshet::Bincode`),
//! Protocol Buffers (`freshet::schema::Protobuf`, prost) and Avro
//! (`freshet::schema::Avro`, apache-avro), encode and decode messages per second on one
//! core, for a Nexmark event mix (1 : 3 : 46 persons, auctions, bids) and for the
//! 24-byte keyed event of the window benchmarks. Protobuf runs on prost message types
//! (`freshet_benches::nexmark::schemas`), converted from the events before timing, as a
//! job whose records are prost types would; Avro runs on the same serde types as JSON
//! and bincode, against a union-of-records schema. Each measurement repeats until it has run at least
//! `--millis` and reports the best of `--repeats` runs.
//!
//! ```text
//! cargo run --release -p freshet-benches --bin codec
//! ```

use std::hint::black_box;
use std::time::Instant;

use clap::Parser;
use freshet::codec::RawMessage;
use freshet::schema::{Avro, Protobuf};
use freshet::{Bincode, Decoder, Encoder, Json};
use freshet_benches::nexmark::schemas::{PbEvent, PbKeyed, EVENT_AVRO, KEYED_AVRO};
use freshet_benches::nexmark::{Event, NexmarkConfig};
use freshet_benches::report::Line;
use freshet_benches::windowed::{KeyedEvent, Workload};

#[derive(Parser, Debug)]
#[command(name = "codec")]
struct Args {
    /// Records per data set.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Minimum time per measurement, ms.
    #[arg(long, default_value_t = 300)]
    millis: u64,
    /// Measurements per case (best is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

fn msg(payload: &[u8]) -> RawMessage<'_> {
    RawMessage {
        topic: "bench",
        partition: 0,
        offset: 0,
        key: None,
        payload: Some(payload),
        timestamp: None,
    }
}

/// Best records/s over `repeats` runs of `f` (which handles `n` records per call).
fn rate(n: u64, args: &Args, mut f: impl FnMut()) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..args.repeats {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed().as_millis() < args.millis as u128 {
            f();
            calls += 1;
        }
        best = best.max((calls * n) as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn case<T, C>(data: &str, codec_name: &str, codec: C, records: &[T], args: &Args)
where
    C: Encoder<T> + Decoder<Output = T>,
{
    let n = records.len() as u64;
    let mut buf = Vec::new();
    let encode = rate(n, args, || {
        for r in records {
            buf.clear();
            codec.encode(r, &mut buf).expect("encode");
            black_box(&buf);
        }
    });
    let payloads: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let mut b = Vec::new();
            codec.encode(r, &mut b).expect("encode");
            b
        })
        .collect();
    let bytes = payloads.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    let decode = rate(n, args, || {
        for p in &payloads {
            black_box(codec.decode(&msg(p)).expect("decode"));
        }
    });
    Line::new("codec")
        .field("data", data)
        .field("codec", codec_name)
        .field("bytes_per_record", format!("{bytes:.1}"))
        .rate("encode_per_s", encode)
        .rate("decode_per_s", decode)
        .print();
}

fn main() {
    let args = Args::parse();
    let nexmark = NexmarkConfig::default();
    let events: Vec<Event> = (0..args.records).map(|n| nexmark.event(n)).collect();
    let w = Workload {
        keys: 10_000,
        per_second: 100_000,
        seconds: args.records.div_ceil(100_000),
        disorder_ms: 500,
        start_ms: 1_700_000_000_000,
        seed: 1,
    };
    let keyed: Vec<KeyedEvent> = (0..args.records).map(|i| w.event(i)).collect();
    case("nexmark", "json", Json::<Event>::new(), &events, &args);
    case(
        "nexmark",
        "bincode",
        Bincode::<Event>::new(),
        &events,
        &args,
    );
    let pb_events: Vec<PbEvent> = events.iter().map(PbEvent::from).collect();
    case(
        "nexmark",
        "protobuf",
        Protobuf::<PbEvent>::new(),
        &pb_events,
        &args,
    );
    let avro = Avro::<Event>::new(EVENT_AVRO).expect("the Nexmark Avro schema");
    case("nexmark", "avro", avro, &events, &args);
    case("keyed", "json", Json::<KeyedEvent>::new(), &keyed, &args);
    case(
        "keyed",
        "bincode",
        Bincode::<KeyedEvent>::new(),
        &keyed,
        &args,
    );
    let pb_keyed: Vec<PbKeyed> = keyed
        .iter()
        .map(|k| PbKeyed {
            key: k.key,
            value: k.value,
            ts: k.ts,
        })
        .collect();
    case(
        "keyed",
        "protobuf",
        Protobuf::<PbKeyed>::new(),
        &pb_keyed,
        &args,
    );
    let avro = Avro::<KeyedEvent>::new(KEYED_AVRO).expect("the keyed Avro schema");
    case("keyed", "avro", avro, &keyed, &args);
}
