//! Enrichment: a stream of orders joined with a compacted topic of customer records (a
//! stream–table join with `freshet::operators::Lookup`): each order gets its customer's
//! record as of the order's event time; orders of unknown customers go out with
//! `"customer": null`. The customers topic is a table side (`KafkaSource::table`): its
//! offsets are never committed (the orders' are); it is read from its start, or after a
//! restart from the checkpoint, which holds the table. An order
//! waits until the table's watermark passes its event time; a table topic at its end and
//! quiet for `--idle-timeout-ms` follows the wall clock, so live orders wait about that long.
//!
//! Zero-install demo (librdkafka's in-process mock cluster, fed by a generator):
//!
//! ```text
//! cargo run --release -p freshet-examples --bin enrich -- --demo
//! ```
//!
//! Against a real broker:
//!
//! ```text
//! scripts/kafka-broker create-topic customers 1
//! scripts/kafka-broker create-topic orders 4 && scripts/kafka-broker create-topic orders-enriched 4
//! cargo run --release -p freshet-examples --bin loadgen -- --topic customers --kind customers --count 1000
//! cargo run --release -p freshet-examples --bin loadgen -- --topic orders --kind orders --rate 5000 --seconds 60 &
//! cargo run --release -p freshet-examples --bin enrich -- \
//!     --brokers 127.0.0.1:9092 --orders orders --customers customers --output orders-enriched --print
//! ```
//!
//! Orders look like `{"id":1,"customer":7,"amount_cents":1250,"ts":1700000000123}`;
//! customers like `{"id":7,"name":"customer-7","tier":"gold","country":"DE","updated":1700000000000}`
//! (keyed by id; `updated` is the record's event time: the version valid from then on).

use std::time::Instant;

use clap::Parser;
use freshet::{run, JobArgs};
use freshet_examples::enrich;
use freshet_examples::enrich::{generate_customers, generate_orders};
use freshet_examples::{produce_json, Outgoing};

#[derive(Parser, Debug)]
#[command(
    name = "enrich",
    disable_help_flag = true,
    about = "Orders joined with a compacted customers table"
)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// Topic to read orders from.
    #[arg(long, default_value = "orders")]
    orders: String,
    /// Compacted topic of customer records (the table side).
    #[arg(long, default_value = "customers")]
    customers: String,
    /// Topic to write enriched orders to.
    #[arg(long, default_value = "orders-enriched")]
    output: String,
    /// Print each enriched order on stdout.
    #[arg(long)]
    print: bool,
    /// Run on an in-process mock Kafka cluster fed by a generator.
    #[arg(long)]
    demo: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn main() -> anyhow::Result<()> {
    freshet::cli::init_logging();
    let mut args = Args::parse();
    let _mock;
    let mut expected = None;
    if args.demo {
        let mock = freshet_examples::start_demo(&mut args.job)?;
        args.print = true;
        mock.create_topic(&args.orders, 4, 1)?;
        mock.create_topic(&args.customers, 1, 1)?;
        mock.create_topic(&args.output, 4, 1)?;
        let start = 1_700_000_000_000;
        let customers = generate_customers(100, start - 3_600_000, 3_630_000);
        let orders = generate_orders(3, 5_000, 100, 10, start, 60_000);
        let t = Instant::now();
        produce_json(
            &args.job.brokers,
            &args.customers,
            customers.iter().map(|c| Outgoing {
                partition: None,
                key: c.id.to_string(),
                ts: c.updated,
                value: c,
            }),
        )?;
        produce_json(
            &args.job.brokers,
            &args.orders,
            orders.iter().map(|o| Outgoing {
                partition: None,
                key: o.customer.to_string(),
                ts: o.ts,
                value: o,
            }),
        )?;
        eprintln!(
            "demo: produced {} customer records and {} orders in {:.2?}",
            customers.len(),
            orders.len(),
            t.elapsed()
        );
        expected = Some(orders.len());
        _mock = mock;
    }
    let config = args.job.into_config()?;
    freshet::cli::stop_on_signals(&config.stop)?;
    let summary = run(
        config,
        enrich::job(args.orders, args.customers, args.output, args.print),
    )?;
    println!("{summary}");
    if let Some(expected) = expected {
        println!("orders expected:   {expected}");
        anyhow::ensure!(
            summary.records_out as usize >= expected,
            "fewer enriched orders than orders"
        );
    }
    Ok(())
}
