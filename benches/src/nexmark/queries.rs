//! The Nexmark queries, written as a Freshet user would: timely's `map`/`filter` for
//! stateless steps and Freshet's window, join and keyed-state operators for the rest.
//! Every query takes the one stream of [`Event`]s at their event times.
//!
//! | query | what | Freshet operators |
//! | --- | --- | --- |
//! | Q0 | pass every event through | — |
//! | Q1 | bid prices in euros | `map` |
//! | Q2 | bids on auctions whose id is a multiple of 123 | `filter` |
//! | Q3 | sellers in OR, ID or CA with their category-10 auctions (incremental join) | `keyed_state` |
//! | Q4 | average winning bid per category, per tumbling window | `window_join_with`, `tumble_aggregate` ×2 |
//! | Q5 | the auction with the most bids per sliding window | `slide_count`, `tumble_aggregate` |
//! | Q7 | the highest bid per tumbling window | `tumble_aggregate` |
//! | Q8 | persons who opened an auction in the window they joined in | `window_join_with` |
//!
//! Deviations from the Nexmark text, all chosen so the result is deterministic and
//! checkable: Q4's "winning bid" of an auction is its highest bid in the tumbling
//! window the auction opened in; Q5 breaks ties by the larger auction id; Q7 breaks
//! ties by the larger auction id then bidder.

use freshet::operators::aggregate::{Max, Mean, MeanValue};
use freshet::operators::join::JoinKind;
use freshet::operators::{KeyedState, Slide, WindowJoin};
use freshet::time::Time;
use freshet::{Tumble, Windowed};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::filter::Filter;
use timely::dataflow::operators::vec::map::Map;
use timely::dataflow::operators::Concat;
use timely::dataflow::StreamVec;

use super::model::{Auction, Bid, Event, Person};

/// A stream of Nexmark events.
pub type Events<'s> = StreamVec<'s, Time, Event>;

/// Q0: every event, unchanged (the cost of moving records).
pub fn q0(events: Events<'_>) -> Events<'_> {
    events.map(|e| e)
}

/// Q1's output: a bid with its price in euros.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EuroBid {
    /// Auction.
    pub auction: u64,
    /// Bidder.
    pub bidder: u64,
    /// Price in euro cents (dollar price × 0.908).
    pub price: u64,
    /// Event time.
    pub date_time: u64,
}

/// Dollar cents to euro cents, as Q1 converts.
pub fn to_euro(price: u64) -> u64 {
    price * 908 / 1000
}

/// Q1: bids with their price in euros.
pub fn q1(events: Events<'_>) -> StreamVec<'_, Time, EuroBid> {
    events.flat_map(|e| {
        e.bid().map(|b| EuroBid {
            auction: b.auction,
            bidder: b.bidder,
            price: to_euro(b.price),
            date_time: b.date_time,
        })
    })
}

/// Q2: `(auction, price)` of bids on auctions whose id is a multiple of `modulus`
/// (123 in Nexmark).
pub fn q2(events: Events<'_>, modulus: u64) -> StreamVec<'_, Time, (u64, u64)> {
    events
        .flat_map(|e| e.bid())
        .filter(move |b| b.auction % modulus == 0)
        .map(|b| (b.auction, b.price))
}

/// Q3's output: a seller and one of their auctions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SellerAuction {
    /// Seller name.
    pub name: String,
    /// Seller city.
    pub city: String,
    /// Seller state.
    pub state: String,
    /// Auction id.
    pub auction: u64,
}

/// Q3's input to its join: a person or an auction, by person id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PersonOrAuction {
    /// A seller.
    Person(Person),
    /// An auction.
    Auction(Auction),
}

/// Q3's per-person state: the person once seen, auctions that arrived before them.
#[derive(Default, Serialize, Deserialize)]
pub struct SellerState {
    person: Option<Person>,
    waiting: Vec<u64>,
}

/// Q3: each category-10 auction whose seller lives in OR, ID or CA, with the seller's
/// name, city and state, emitted as soon as both are seen. Per-person state lives
/// for `ttl_ms` of event time after its last record.
pub fn q3(events: Events<'_>, ttl_ms: u64) -> StreamVec<'_, Time, SellerAuction> {
    let persons = events
        .clone()
        .flat_map(|e| e.person())
        .filter(|p| matches!(p.state.as_str(), "OR" | "ID" | "CA"))
        .map(PersonOrAuction::Person);
    let auctions = events
        .flat_map(|e| e.auction())
        .filter(|a| a.category == 10)
        .map(PersonOrAuction::Auction);
    persons.concat(auctions).keyed_state(
        "q3",
        ttl_ms,
        |r: &PersonOrAuction| match r {
            PersonOrAuction::Person(p) => p.id,
            PersonOrAuction::Auction(a) => a.seller,
        },
        |_, state: &mut Option<SellerState>, r| {
            let s = state.get_or_insert_with(SellerState::default);
            let (ready, person) = match r {
                PersonOrAuction::Person(p) => {
                    let ready = std::mem::take(&mut s.waiting);
                    (ready, s.person.insert(p).clone())
                }
                PersonOrAuction::Auction(a) => match &s.person {
                    Some(p) => (vec![a.id], p.clone()),
                    None => {
                        s.waiting.push(a.id);
                        return Vec::new();
                    }
                },
            };
            ready
                .into_iter()
                .map(|auction| SellerAuction {
                    name: person.name.clone(),
                    city: person.city.clone(),
                    state: person.state.clone(),
                    auction,
                })
                .collect()
        },
    )
}

/// Q4: per tumbling window of `size` ms and category, the mean over the window's
/// auctions of each auction's highest bid in that window (auctions with no bid in it
/// are left out).
pub fn q4(events: Events<'_>, size: u64) -> StreamVec<'_, Time, Windowed<u64, MeanValue>> {
    let auctions = events.clone().flat_map(|e| e.auction());
    let bids = events.flat_map(|e| e.bid());
    auctions
        .window_join_with(
            bids,
            "q4-bids",
            size,
            JoinKind::Inner,
            |a: &Auction| a.id,
            |b: &Bid| b.auction,
            |_, a, b| (a.category, b.map_or(0, |b| b.price)),
        )
        // Highest bid per auction; the category rides along (one per auction).
        .tumble_aggregate(
            "q4-winning",
            size,
            |w: &Windowed<u64, (u64, u64)>| w.key,
            Max::new(|w: &Windowed<u64, (u64, u64)>| (w.value.1, w.value.0)),
        )
        .tumble_aggregate(
            "q4-mean",
            size,
            |w: &Windowed<u64, Option<(u64, u64)>>| w.value.map_or(0, |v| v.1),
            Mean::new(|w: &Windowed<u64, Option<(u64, u64)>>| w.value.map_or(0, |v| v.0)),
        )
}

/// Q5: per sliding window of `size` ms every `slide` ms, `(bids, auction)` of the
/// auction with the most bids (ties: the larger id), keyed by the window's end.
pub fn q5(events: Events<'_>, size: u64, slide: u64) -> StreamVec<'_, Time, (u64, u64, u64)> {
    events
        .flat_map(|e| e.bid())
        .slide_count("q5-counts", size, slide, |b: &Bid| b.auction)
        // A sliding window's results are at `end - 1`: the tumbling window of `slide`
        // holding that time gathers exactly the windows ending at `end`.
        .tumble_aggregate(
            "q5-hottest",
            slide,
            |w: &Windowed<u64, u64>| w.end,
            Max::new(|w: &Windowed<u64, u64>| (w.value, w.key)),
        )
        .flat_map(|w| w.value.map(|(count, auction)| (w.key, count, auction)))
}

/// Q7: the highest bid per tumbling window of `size` ms, as `(window start, price,
/// auction, bidder)` (ties: larger auction, then bidder).
pub fn q7(events: Events<'_>, size: u64) -> StreamVec<'_, Time, (u64, u64, u64, u64)> {
    events
        .flat_map(|e| e.bid())
        .tumble_aggregate(
            "q7",
            size,
            |_: &Bid| (),
            Max::new(|b: &Bid| (b.price, b.auction, b.bidder)),
        )
        .flat_map(|w| w.value.map(|(p, a, b)| (w.start, p, a, b)))
}

/// Q8: `(window start, person id, name, auction id)` for each person who joined and
/// opened an auction in the same tumbling window of `size` ms.
pub fn q8(events: Events<'_>, size: u64) -> StreamVec<'_, Time, (u64, u64, String, u64)> {
    let persons = events.clone().flat_map(|e| e.person());
    let auctions = events.flat_map(|e| e.auction());
    persons
        .window_join_with(
            auctions,
            "q8",
            size,
            JoinKind::Inner,
            |p: &Person| p.id,
            |a: &Auction| a.seller,
            |_, p, a| (p.name.clone(), a.map_or(0, |a| a.id)),
        )
        .map(|w| (w.start, w.key, w.value.0, w.value.1))
}
