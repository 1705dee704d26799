//! Enrichment: orders joined with a compacted topic of customer records (a stream–table
//! join). Each order gets its customer's record as of the order's event time; orders of
//! unknown customers go out with `customer: None`.
//!
//! The customers topic is a *table side* ([`freshet::KafkaSource::table`]): never
//! committed, read from its start, or after a restart from the checkpoint, which holds
//! the table.

use std::collections::BTreeMap;

use freshet::operators::Lookup;
use freshet::time::Time;
use freshet::{Job, Json, KafkaSink, KafkaSource, PrintStdout, WriteKafka};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use crate::malformed::report_malformed;

/// An order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Order {
    /// Order id.
    pub id: u64,
    /// The customer who placed it.
    pub customer: u64,
    /// Amount, cents.
    pub amount_cents: i64,
    /// Event time, ms since the Unix epoch.
    pub ts: u64,
}

/// A customer record (the table's value; the key is `id`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Customer {
    /// Customer id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Tier: bronze, silver, gold.
    pub tier: String,
    /// Country code.
    pub country: String,
    /// When this version of the record became valid, ms.
    pub updated: u64,
}

/// An order with its customer as of the order's time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EnrichedOrder {
    /// The order.
    pub order: Order,
    /// Its customer's record, if there was one at the order's time.
    pub customer: Option<Customer>,
}

/// The job's logic: orders and customer upserts in, enriched orders out.
pub fn enrich<'s>(
    orders: StreamVec<'s, Time, Order>,
    customers: StreamVec<'s, Time, Customer>,
) -> StreamVec<'s, Time, EnrichedOrder> {
    let table = customers.map(|c| (c.id, c));
    orders.lookup_with(
        table,
        "customers",
        freshet::operators::JoinKind::Left,
        |o: &Order| o.customer,
        |order, c: Option<&Customer>| EnrichedOrder {
            order,
            customer: c.cloned(),
        },
    )
}

/// What a sequential loop produces, sorted: each order with the customer version of
/// greatest `updated <= order.ts`.
pub fn reference(orders: &[Order], customers: &[Customer]) -> Vec<EnrichedOrder> {
    let mut table: BTreeMap<u64, Vec<&Customer>> = BTreeMap::new();
    for c in customers {
        table.entry(c.id).or_default().push(c);
    }
    for versions in table.values_mut() {
        versions.sort();
        versions.sort_by_key(|c| c.updated);
    }
    let mut out: Vec<EnrichedOrder> = orders
        .iter()
        .map(|o| EnrichedOrder {
            order: o.clone(),
            customer: table
                .get(&o.customer)
                .and_then(|vs| vs.iter().rev().find(|c| c.updated <= o.ts))
                .map(|c| (*c).clone()),
        })
        .collect();
    out.sort();
    out
}

/// Customer records for ids `0..n` valid from `start_ms`, and a second version of every
/// tenth one (an upgrade to gold) valid from `start_ms + upgrade_after_ms`.
pub fn generate_customers(n: u64, start_ms: u64, upgrade_after_ms: u64) -> Vec<Customer> {
    const TIERS: [&str; 2] = ["bronze", "silver"];
    const COUNTRIES: [&str; 4] = ["DE", "FR", "US", "JP"];
    let mut out = Vec::new();
    for id in 0..n {
        out.push(Customer {
            id,
            name: format!("customer-{id}"),
            tier: TIERS[(id % 2) as usize].into(),
            country: COUNTRIES[(id % 4) as usize].into(),
            updated: start_ms,
        });
        if id % 10 == 0 {
            out.push(Customer {
                id,
                name: format!("customer-{id}"),
                tier: "gold".into(),
                country: COUNTRIES[(id % 4) as usize].into(),
                updated: start_ms + upgrade_after_ms,
            });
        }
    }
    out
}

/// `n` orders over `span_ms` from `start_ms` by customers `0..customers + unknown`
/// (ids at or past `customers` have no record). Deterministic in `seed`.
pub fn generate_orders(
    seed: u64,
    n: usize,
    customers: u64,
    unknown: u64,
    start_ms: u64,
    span_ms: u64,
) -> Vec<Order> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| Order {
            id: i as u64,
            customer: rng.gen_range(0..customers + unknown),
            amount_cents: rng.gen_range(100..100_000),
            ts: start_ms + span_ms * i as u64 / n.max(1) as u64,
        })
        .collect()
}

/// The enrichment job: JSON [`Order`]s from `orders`, joined with the table of
/// JSON [`Customer`]s in `customers` (a table side, never committed),
/// JSON [`EnrichedOrder`]s to `output`, keyed by order id.
pub fn job(
    orders: String,
    customers: String,
    output: String,
    print: bool,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    move |job| {
        let o = KafkaSource::new(orders.clone(), Json::<Order>::new())
            .event_time(|o: &Order| Some(o.ts))
            .build(job)?;
        let c = KafkaSource::new(customers.clone(), Json::<Customer>::new())
            .event_time(|c: &Customer| Some(c.updated))
            .table(job.source_config())
            .build(job)?;
        let enriched = enrich(o.records, c.records);
        if print {
            enriched.clone().print_stdout(job, "enriched");
        }
        enriched.write_kafka(
            job,
            KafkaSink::new(output.clone(), Json::<EnrichedOrder>::new())
                .key(|e: &EnrichedOrder| Some(e.order.id.to_string().into_bytes())),
        )?;
        report_malformed(job, o.errors);
        report_malformed(job, c.errors);
        Ok(())
    }
}
