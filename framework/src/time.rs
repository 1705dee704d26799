//! The event time × epoch timestamp (defined with the operators, which are generic over it).

pub use freshet_operators::time::*;
pub use freshet_operators::Late;
