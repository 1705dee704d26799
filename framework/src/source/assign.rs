//! Static, deterministic partition assignment.

/// The global worker that reads partition `partition` of `topic` among `peers` workers:
/// `(hash(topic) + partition) mod peers`, the same in every process.
pub fn owner(topic: &str, partition: i32, peers: usize) -> usize {
    let spread = freshet_operators::hash::hash(topic);
    (spread.wrapping_add(partition as u64) % peers as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::owner;

    #[test]
    fn spreads_evenly_and_is_stable() {
        for peers in 1..6 {
            let mut counts = vec![0; peers];
            for p in 0..(peers as i32 * 3) {
                counts[owner("orders", p, peers)] += 1;
            }
            assert!(counts.iter().all(|&c| c == 3), "{counts:?}");
        }
        assert_eq!(owner("orders", 5, 4), owner("orders", 5, 4));
    }
}
