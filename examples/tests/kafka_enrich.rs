//! The enrichment job against the real broker: orders joined with a customers table
//! topic as of each order's time; the table's offsets are never committed, the orders'
//! are, and a second run re-reads the whole table.

mod utils;

use freshet::{run, Cluster, JobConfig, KafkaConfig};
use freshet_examples::enrich::{self, EnrichedOrder};
use freshet_examples::{produce_json, Outgoing};
use utils::*;

#[test]
fn enrichment_matches_the_reference_and_never_commits_the_table() {
    let start = 1_700_000_000_000;
    let orders_topic = create_topic("orders", 2);
    let customers_topic = create_topic("customers", 1);
    let customers = enrich::generate_customers(30, start - 60_000, 80_000);
    let orders = enrich::generate_orders(9, 3_000, 30, 5, start, 40_000);
    produce_json(
        &brokers(),
        &customers_topic,
        customers.iter().map(|c| Outgoing {
            partition: Some(0),
            key: c.id.to_string(),
            ts: c.updated,
            value: c,
        }),
    )
    .unwrap();
    let (first, second) = orders.split_at(orders.len() / 2);
    let group = unique("enrich-group");
    let mut all = Vec::new();
    for part in [first, second] {
        produce_json(
            &brokers(),
            &orders_topic,
            part.iter().map(|o| Outgoing {
                partition: Some((o.id % 2) as i32),
                key: o.customer.to_string(),
                ts: o.ts,
                value: o,
            }),
        )
        .unwrap();
        let output = create_topic("enriched", 2);
        let mut config = JobConfig::new(KafkaConfig::new(brokers(), group.clone()));
        config.source.bounded = true;
        config.cluster = Cluster {
            workers: 2,
            ..Cluster::default()
        };
        let summary = run(
            config,
            enrich::job(
                orders_topic.clone(),
                customers_topic.clone(),
                output.clone(),
                false,
            ),
        )
        .expect("enrich job");
        // The whole table is read at every run; orders resume from the committed offsets.
        assert_eq!(summary.records_in, (customers.len() + part.len()) as u64);
        let mut got: Vec<EnrichedOrder> = decode(&read_topic(&output, 2));
        got.sort();
        assert_eq!(got, enrich::reference(part, &customers));
        all.extend(got);
    }
    assert!(all.iter().any(|e| e.customer.is_none()));
    assert!(all
        .iter()
        .any(|e| e.customer.as_ref().is_some_and(|c| c.tier == "gold")));
    assert_eq!(
        committed(&group, &orders_topic, 2),
        ends(&read_topic(&orders_topic, 2))
    );
    assert!(
        committed(&group, &customers_topic, 1).is_empty(),
        "the table's offsets were committed"
    );
}
