//! Sequential references for the queries: plain loops over the events, in no
//! particular order, with the same definitions as [`super::queries`].

use std::collections::{BTreeMap, BTreeSet};

use super::model::Event;
use super::queries::{to_euro, EuroBid, SellerAuction};

/// Q1.
pub fn q1(events: &[Event]) -> Vec<EuroBid> {
    let mut out: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Bid(b) => Some(EuroBid {
                auction: b.auction,
                bidder: b.bidder,
                price: to_euro(b.price),
                date_time: b.date_time,
            }),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Q2.
pub fn q2(events: &[Event], modulus: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Bid(b) if b.auction % modulus == 0 => Some((b.auction, b.price)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Q3 (state never expires).
pub fn q3(events: &[Event]) -> Vec<SellerAuction> {
    let persons: BTreeMap<u64, _> = events
        .iter()
        .filter_map(|e| match e {
            Event::Person(p) if matches!(p.state.as_str(), "OR" | "ID" | "CA") => Some((p.id, p)),
            _ => None,
        })
        .collect();
    let mut out: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) if a.category == 10 => {
                persons.get(&a.seller).map(|p| SellerAuction {
                    name: p.name.clone(),
                    city: p.city.clone(),
                    state: p.state.clone(),
                    auction: a.id,
                })
            }
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Q4: `(window start, category) -> (sum, count)` of winning bids.
pub fn q4(events: &[Event], size: u64) -> BTreeMap<(u64, u64), (i128, u64)> {
    let mut auctions = BTreeMap::new();
    for e in events {
        if let Event::Auction(a) = e {
            auctions.insert(a.id, (a.date_time - a.date_time % size, a.category));
        }
    }
    let mut best: BTreeMap<u64, u64> = BTreeMap::new();
    for e in events {
        if let Event::Bid(b) = e {
            if let Some(&(w, _)) = auctions.get(&b.auction) {
                if b.date_time - b.date_time % size == w {
                    let m = best.entry(b.auction).or_insert(0);
                    *m = (*m).max(b.price);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (auction, price) in best {
        let (w, cat) = auctions[&auction];
        let acc: &mut (i128, u64) = out.entry((w, cat)).or_default();
        acc.0 += price as i128;
        acc.1 += 1;
    }
    out
}

/// Q5: `(window end, bids, auction)`.
pub fn q5(events: &[Event], size: u64, slide: u64) -> Vec<(u64, u64, u64)> {
    let mut counts: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for e in events {
        if let Event::Bid(b) = e {
            let t = b.date_time;
            // Windows [s, s + size) with s a multiple of slide containing t.
            let last = t - t % slide;
            let mut s = last as i128;
            while s > t as i128 - size as i128 {
                if s >= 0 {
                    *counts.entry((s as u64 + size, b.auction)).or_default() += 1;
                }
                s -= slide as i128;
            }
        }
    }
    let mut best: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for ((end, auction), c) in counts {
        let m = best.entry(end).or_insert((0, 0));
        *m = (*m).max((c, auction));
    }
    best.into_iter().map(|(end, (c, a))| (end, c, a)).collect()
}

/// Q7: `(window start, price, auction, bidder)`.
pub fn q7(events: &[Event], size: u64) -> Vec<(u64, u64, u64, u64)> {
    let mut best: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for e in events {
        if let Event::Bid(b) = e {
            let w = b.date_time - b.date_time % size;
            let m = best.entry(w).or_insert((0, 0, 0));
            *m = (*m).max((b.price, b.auction, b.bidder));
        }
    }
    best.into_iter()
        .map(|(w, (p, a, b))| (w, p, a, b))
        .collect()
}

/// Q8: `(window start, person, name, auction)`.
pub fn q8(events: &[Event], size: u64) -> Vec<(u64, u64, String, u64)> {
    let mut persons = BTreeMap::new();
    for e in events {
        if let Event::Person(p) = e {
            persons.insert(p.id, (p.date_time - p.date_time % size, p.name.clone()));
        }
    }
    let mut out = BTreeSet::new();
    for e in events {
        if let Event::Auction(a) = e {
            if let Some((w, name)) = persons.get(&a.seller) {
                if a.date_time - a.date_time % size == *w {
                    out.insert((*w, a.seller, name.clone(), a.id));
                }
            }
        }
    }
    out.into_iter().collect()
}
