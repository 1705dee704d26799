//! The sessionization job against the real broker: one summary per session, equal to a
//! sequential reference, at one worker and at two.

mod utils;

use freshet::{run, Cluster, JobConfig, KafkaConfig};
use freshet_examples::sessions::{self, SessionSummary};
use freshet_examples::{produce_json, Outgoing};
use utils::*;

#[test]
fn sessions_match_the_reference() {
    let input = create_topic("clicks", 4);
    let gap = 2_000;
    let clicks = sessions::generate_clicks(17, 60, 1_700_000_000_000, 120_000, gap, 200);
    produce_json(
        &brokers(),
        &input,
        clicks.iter().map(|c| Outgoing {
            partition: Some((c.user % 4) as i32),
            key: c.user.to_string(),
            ts: c.ts,
            value: c,
        }),
    )
    .unwrap();
    let expected = sessions::reference(&clicks, gap);
    for workers in [1, 2] {
        let output = create_topic("sessions", 2);
        let group = unique("sessions-group");
        let mut config = JobConfig::new(KafkaConfig::new(brokers(), group.clone()));
        config.source.bounded = true;
        config.cluster = Cluster {
            workers,
            ..Cluster::default()
        };
        run(
            config,
            sessions::job(input.clone(), output.clone(), gap, false),
        )
        .expect("job");
        let mut got: Vec<SessionSummary> = decode(&read_topic(&output, 2));
        got.sort();
        assert_eq!(got, expected, "{workers} worker(s)");
        assert_eq!(committed(&group, &input, 4), ends(&read_topic(&input, 4)));
    }
}
