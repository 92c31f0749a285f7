//! Bounded lists of recent items kept in order (by event time, then an id
//! that tells apart items of the same instant), oldest first: an item
//! arriving out of order lands where it belongs, an item delivered twice is
//! recognised, and the oldest go first beyond the bound.

use std::collections::VecDeque;

/// Inserts `item` at its place in `list` (ordered by `order`), then drops
/// the oldest items while more than `max` are kept; returns the items
/// dropped (possibly `item` itself, when it is older than every kept one).
/// An item of the same order as one kept is a duplicate: `list` is left
/// alone and `item` given back.
pub fn insert_bounded<T, K: Ord>(
    list: &mut VecDeque<T>,
    item: T,
    max: usize,
    order: impl Fn(&T) -> K,
) -> Result<Vec<T>, T> {
    let key = order(&item);
    let pos = list.partition_point(|kept| order(kept) < key);
    if list.get(pos).is_some_and(|kept| order(kept) == key) {
        return Err(item);
    }
    list.insert(pos, item);
    let excess = list.len().saturating_sub(max);
    Ok(list.drain(..excess).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_in_order_and_refuses_duplicates() {
        let mut list = VecDeque::new();
        let insert = |list: &mut VecDeque<(i64, u8)>, item| insert_bounded(list, item, 2, |i| *i);
        assert_eq!(insert(&mut list, (5, 1)), Ok(vec![]));
        assert_eq!(insert(&mut list, (3, 2)), Ok(vec![]));
        assert_eq!(insert(&mut list, (5, 1)), Err((5, 1)), "duplicate");
        assert_eq!(insert(&mut list, (4, 3)), Ok(vec![(3, 2)]));
        assert_eq!(insert(&mut list, (1, 4)), Ok(vec![(1, 4)]), "older than every kept one");
        assert_eq!(list, [(4, 3), (5, 1)]);
    }
}
