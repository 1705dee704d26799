//! The Nexmark records as other services would write them: Protocol Buffers messages
//! (prost, with a `oneof` for the event kind) and an Avro schema (a union of three
//! records), for the codec benchmark's Protobuf and Avro rows.

use super::model::{Auction, Bid, Event, Person};

/// `Person` as a Protobuf message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbPerson {
    /// Person id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Email address.
    #[prost(string, tag = "3")]
    pub email: String,
    /// Credit card number.
    #[prost(string, tag = "4")]
    pub credit_card: String,
    /// City.
    #[prost(string, tag = "5")]
    pub city: String,
    /// US state.
    #[prost(string, tag = "6")]
    pub state: String,
    /// Event time, ms.
    #[prost(uint64, tag = "7")]
    pub date_time: u64,
}

/// `Auction` as a Protobuf message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbAuction {
    /// Auction id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Item name.
    #[prost(string, tag = "2")]
    pub item_name: String,
    /// Starting price.
    #[prost(uint64, tag = "3")]
    pub initial_bid: u64,
    /// Reserve price.
    #[prost(uint64, tag = "4")]
    pub reserve: u64,
    /// Event time, ms.
    #[prost(uint64, tag = "5")]
    pub date_time: u64,
    /// When the auction closes, ms.
    #[prost(uint64, tag = "6")]
    pub expires: u64,
    /// The person selling.
    #[prost(uint64, tag = "7")]
    pub seller: u64,
    /// Category.
    #[prost(uint64, tag = "8")]
    pub category: u64,
}

/// `Bid` as a Protobuf message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbBid {
    /// The auction bid on.
    #[prost(uint64, tag = "1")]
    pub auction: u64,
    /// The person bidding.
    #[prost(uint64, tag = "2")]
    pub bidder: u64,
    /// Price, cents.
    #[prost(uint64, tag = "3")]
    pub price: u64,
    /// Channel the bid came through.
    #[prost(string, tag = "4")]
    pub channel: String,
    /// Event time, ms.
    #[prost(uint64, tag = "5")]
    pub date_time: u64,
}

/// One Nexmark event as a Protobuf message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbEvent {
    /// Which event.
    #[prost(oneof = "PbKind", tags = "1, 2, 3")]
    pub kind: Option<PbKind>,
}

/// The event kinds of [`PbEvent`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PbKind {
    /// A new person.
    #[prost(message, tag = "1")]
    Person(PbPerson),
    /// A new auction.
    #[prost(message, tag = "2")]
    Auction(PbAuction),
    /// A bid.
    #[prost(message, tag = "3")]
    Bid(PbBid),
}

impl From<&Event> for PbEvent {
    fn from(e: &Event) -> Self {
        let kind = match e.clone() {
            Event::Person(Person {
                id,
                name,
                email,
                credit_card,
                city,
                state,
                date_time,
            }) => PbKind::Person(PbPerson {
                id,
                name,
                email,
                credit_card,
                city,
                state,
                date_time,
            }),
            Event::Auction(Auction {
                id,
                item_name,
                initial_bid,
                reserve,
                date_time,
                expires,
                seller,
                category,
            }) => PbKind::Auction(PbAuction {
                id,
                item_name,
                initial_bid,
                reserve,
                date_time,
                expires,
                seller,
                category,
            }),
            Event::Bid(Bid {
                auction,
                bidder,
                price,
                channel,
                date_time,
            }) => PbKind::Bid(PbBid {
                auction,
                bidder,
                price,
                channel,
                date_time,
            }),
        };
        PbEvent { kind: Some(kind) }
    }
}

/// The Avro schema of [`Event`]: a union of the three records, in the enum's variant
/// order (serde's variant index is the union branch).
pub const EVENT_AVRO: &str = r#"[
  {"type":"record","name":"Person","namespace":"nexmark","fields":[
    {"name":"id","type":"long"},{"name":"name","type":"string"},
    {"name":"email","type":"string"},{"name":"credit_card","type":"string"},
    {"name":"city","type":"string"},{"name":"state","type":"string"},
    {"name":"date_time","type":"long"}]},
  {"type":"record","name":"Auction","namespace":"nexmark","fields":[
    {"name":"id","type":"long"},{"name":"item_name","type":"string"},
    {"name":"initial_bid","type":"long"},{"name":"reserve","type":"long"},
    {"name":"date_time","type":"long"},{"name":"expires","type":"long"},
    {"name":"seller","type":"long"},{"name":"category","type":"long"}]},
  {"type":"record","name":"Bid","namespace":"nexmark","fields":[
    {"name":"auction","type":"long"},{"name":"bidder","type":"long"},
    {"name":"price","type":"long"},{"name":"channel","type":"string"},
    {"name":"date_time","type":"long"}]}
]"#;

/// The Avro schema of the window benchmarks' keyed event.
pub const KEYED_AVRO: &str = r#"{"type":"record","name":"KeyedEvent","fields":[
  {"name":"key","type":"long"},{"name":"value","type":"long"},{"name":"ts","type":"long"}]}"#;

/// The keyed event as a Protobuf message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbKeyed {
    /// Key.
    #[prost(uint64, tag = "1")]
    pub key: u64,
    /// Value.
    #[prost(uint64, tag = "2")]
    pub value: u64,
    /// Event time, ms.
    #[prost(uint64, tag = "3")]
    pub ts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nexmark::NexmarkConfig;
    use freshet::codec::RawMessage;
    use freshet::schema::{Avro, Protobuf};
    use freshet::{Decoder, Encoder};

    fn msg(p: &[u8]) -> RawMessage<'_> {
        RawMessage {
            topic: "t",
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(p),
            timestamp: None,
        }
    }

    #[test]
    fn every_event_kind_round_trips_through_protobuf_and_avro() {
        let config = NexmarkConfig::default();
        let events: Vec<Event> = (0..100).map(|n| config.event(n)).collect();
        assert!(events.iter().any(|e| matches!(e, Event::Person(_))));
        assert!(events.iter().any(|e| matches!(e, Event::Auction(_))));
        let avro = Avro::<Event>::new(EVENT_AVRO).unwrap();
        let pb = Protobuf::<PbEvent>::new();
        for e in &events {
            let mut buf = Vec::new();
            avro.encode(e, &mut buf).unwrap();
            assert_eq!(&avro.decode(&msg(&buf)).unwrap(), e);
            let p = PbEvent::from(e);
            buf.clear();
            pb.encode(&p, &mut buf).unwrap();
            assert_eq!(pb.decode(&msg(&buf)).unwrap(), p);
        }
    }
}
