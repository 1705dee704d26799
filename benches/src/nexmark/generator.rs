//! A deterministic Nexmark generator.
//!
//! Event `n` is a function of the seed and `n` alone: of every 50 consecutive events,
//! 1 is a person, 3 are auctions and 46 are bids (the standard 1 : 3 : 46). Ids are
//! dense (person `1000 + k` is the person of block `k`), sellers and bidders are
//! persons that already exist, and bids go to auctions that already exist, mostly
//! recent ("hot") ones. Event `n` happens at `start_ms + n · 1000 / rate` moved back
//! by up to `disorder_ms`. Because any event can be generated alone, each worker of a
//! benchmark generates its own share.

use crate::windowed::mix;

use super::model::{Auction, Bid, Event, Person};

/// The first person id.
pub const FIRST_PERSON: u64 = 1000;
/// The first auction id.
pub const FIRST_AUCTION: u64 = 1000;
/// Events per block: 1 person, 3 auctions, 46 bids.
pub const BLOCK: u64 = 50;

const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const CITIES: [&str; 8] = [
    "Phoenix",
    "Los Angeles",
    "Boise",
    "Portland",
    "Seattle",
    "Cheyenne",
    "Bend",
    "Redmond",
];
const NAMES: [&str; 8] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie",
];
const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// Rate, timing and seed of a generated run.
#[derive(Clone, Copy, Debug)]
pub struct NexmarkConfig {
    /// Seed.
    pub seed: u64,
    /// Events per second of event time.
    pub rate: u64,
    /// Event time of event 0, ms.
    pub start_ms: u64,
    /// Each event's time is moved back by up to this many ms.
    pub disorder_ms: u64,
    /// How long an auction runs, ms.
    pub auction_ms: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            seed: 42,
            rate: 100_000,
            start_ms: 1_700_000_000_000,
            disorder_ms: 0,
            auction_ms: 10_000,
        }
    }
}

impl NexmarkConfig {
    /// Event `n`.
    pub fn event(&self, n: u64) -> Event {
        let h = mix(self.seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let g = mix(h);
        let base = self.start_ms + n * 1000 / self.rate.max(1);
        let back = if self.disorder_ms == 0 {
            0
        } else {
            g % (self.disorder_ms + 1)
        };
        let t = base.saturating_sub(back).max(self.start_ms);
        let block = n / BLOCK;
        let slot = n % BLOCK;
        // Persons 0..=block and auctions 0..3·block+3 exist by the time of a bid.
        let persons = block + 1;
        match slot {
            0 => {
                let id = FIRST_PERSON + block;
                let name = format!("{} {}", NAMES[(h % 8) as usize], NAMES[(g % 8) as usize]);
                Event::Person(Person {
                    id,
                    email: format!("p{id}@example.com"),
                    credit_card: format!("{:016}", h % 10_000_000_000_000_000),
                    city: CITIES[((h >> 8) % 8) as usize].to_string(),
                    state: STATES[((h >> 16) % 6) as usize].to_string(),
                    name,
                    date_time: t,
                })
            }
            1..=3 => {
                let id = FIRST_AUCTION + 3 * block + slot - 1;
                // A recent seller most of the time, anyone otherwise.
                let seller = if h % 10 < 8 {
                    FIRST_PERSON + block - (g % persons.min(20))
                } else {
                    FIRST_PERSON + g % persons
                };
                let initial_bid = 100 + h % 1000;
                Event::Auction(Auction {
                    id,
                    item_name: format!("item-{}", h % 10_000),
                    initial_bid,
                    reserve: initial_bid + (g >> 8) % 1000,
                    date_time: t,
                    expires: t + self.auction_ms,
                    seller,
                    category: 10 + (h >> 24) % 5,
                })
            }
            _ => {
                let auctions = 3 * block + 3;
                // Hot auctions: 90% of bids go to the 10 newest.
                let auction = if h % 10 < 9 {
                    FIRST_AUCTION + auctions - 1 - (g % auctions.min(10))
                } else {
                    FIRST_AUCTION + g % auctions
                };
                Event::Bid(Bid {
                    auction,
                    bidder: FIRST_PERSON + (g >> 20) % persons,
                    price: 100 + (h >> 32) % 100_000,
                    channel: CHANNELS[((h >> 12) % 4) as usize].to_string(),
                    date_time: t,
                })
            }
        }
    }

    /// Events `n` for `n` in `range` stepping by `step` (a worker's share).
    pub fn share(
        &self,
        range: std::ops::Range<u64>,
        index: usize,
        peers: usize,
    ) -> impl Iterator<Item = Event> + '_ {
        (range.start + index as u64..range.end)
            .step_by(peers.max(1))
            .map(move |n| self.event(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportions_and_determinism() {
        let c = NexmarkConfig::default();
        let (mut p, mut a, mut b) = (0, 0, 0);
        for n in 0..5000 {
            match c.event(n) {
                Event::Person(_) => p += 1,
                Event::Auction(_) => a += 1,
                Event::Bid(_) => b += 1,
            }
            assert_eq!(c.event(n), c.event(n));
        }
        assert_eq!((p, a, b), (100, 300, 4600));
    }
}
