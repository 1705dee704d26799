//! Nexmark: an online auction's persons, auctions and bids, generated
//! deterministically ([`generator`]), and the standard queries written with the
//! public Freshet API ([`queries`]) next to sequential references ([`reference`]).

pub mod generator;
pub mod model;
pub mod queries;
pub mod reference;
pub mod schemas;

pub use generator::NexmarkConfig;
pub use model::{Auction, Bid, Event, Person};
