//! Priority lanes: how a read shares its free slots among an inbox's lanes (urgent, high,
//! the inbox itself, low), so that urgent work is taken first and low work never starves.
//!
//! The rule (`docs/protocol.md` §5.9): a read of `count` entries asks every lane for at least
//! one, and splits the rest among the lanes that had entries at the last read by weight —
//! urgent 8, high 4, normal 2, low 1. So an urgent message is read by the next read,
//! whatever the backlog of the others, and a busy low lane gets at least one entry per read
//! and a fifteenth of the rest. With fewer free slots than lanes, the lanes are asked in
//! priority order, except that every eighth read asks them lowest first.

/// Read weights, in lane order (urgent, high, normal, low).
pub(super) const WEIGHTS: [usize; 4] = [8, 4, 2, 1];

/// Every how many reads, with fewer slots than lanes, the lowest lane is asked first.
pub(super) const AGING_EVERY: u64 = 8;

/// How many entries to ask each lane for, when `count` is at least the number of lanes:
/// one each, and the rest by weight among the `busy` lanes (all lanes when none is), the
/// remainder of the division to the highest busy one. The total is `count`.
pub(super) fn quotas(count: usize, busy: &[bool]) -> Vec<usize> {
    let n = busy.len();
    let mut q = vec![1; n];
    let rest = count.saturating_sub(n);
    let any = busy.iter().any(|b| *b);
    let take = |i: usize| !any || busy[i];
    let total: usize = (0..n).filter(|i| take(*i)).map(|i| weight(i, n)).sum();
    if total == 0 || rest == 0 {
        return q;
    }
    let mut given = 0;
    for (i, slot) in q.iter_mut().enumerate() {
        if take(i) {
            let share = rest * weight(i, n) / total;
            *slot += share;
            given += share;
        }
    }
    if let Some(first) = (0..n).find(|i| take(*i)) {
        q[first] += rest - given;
    }
    q
}

/// The weight of lane `i` of `n` (a single stream weighs 1).
fn weight(i: usize, n: usize) -> usize {
    if n == WEIGHTS.len() { WEIGHTS[i] } else { 1 }
}

/// The order lanes are asked in when there are fewer free slots than lanes, at the
/// `read`-th such read: priority order, lowest first every [`AGING_EVERY`] reads.
pub(super) fn order(n: usize, read: u64) -> Vec<usize> {
    if read % AGING_EVERY == AGING_EVERY - 1 {
        (0..n).rev().collect()
    } else {
        (0..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lane_is_asked_and_the_rest_goes_by_weight_to_busy_lanes() {
        // Only the normal lane had entries: it gets all but the three probes.
        assert_eq!(quotas(100, &[false, false, true, false]), vec![1, 1, 97, 1]);
        // All busy: 96 split 8:4:2:1 (51, 25, 12, 6) plus one each, remainder to urgent.
        let q = quotas(100, &[true, true, true, true]);
        assert_eq!(q.iter().sum::<usize>(), 100);
        assert_eq!(q, vec![54, 26, 13, 7]);
        // Urgent and low busy: low still gets a share.
        let q = quotas(100, &[true, false, false, true]);
        assert_eq!(q.iter().sum::<usize>(), 100);
        assert!(q[3] > 10, "{q:?}");
        assert!(q[0] > 80, "{q:?}");
        // Nothing known: by weight over all.
        assert_eq!(quotas(4, &[false; 4]), vec![1, 1, 1, 1]);
        assert_eq!(quotas(10, &[false; 4]).iter().sum::<usize>(), 10);
        // One stream: everything.
        assert_eq!(quotas(50, &[false]), vec![50]);
        assert_eq!(quotas(50, &[true]), vec![50]);
    }

    #[test]
    fn lanes_are_asked_lowest_first_every_eighth_read() {
        assert_eq!(order(4, 0), vec![0, 1, 2, 3]);
        assert_eq!(order(4, 7), vec![3, 2, 1, 0]);
        assert_eq!(order(4, 15), vec![3, 2, 1, 0]);
        assert_eq!(order(4, 8), vec![0, 1, 2, 3]);
    }
}
