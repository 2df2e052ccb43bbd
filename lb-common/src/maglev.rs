//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI'16).
//!
//! [`build_table`] fills one lookup table per service: slot `i` holds a
//! backend id and the XDP program sends a new flow to
//! `table[ring_slot(flow_hash, M)]`. Every backend walks its own permutation of the
//! slots, derived only from its address and port, and takes the next free
//! slot on it whenever its turn comes. Removing a backend therefore moves
//! its own slots and few others, and directors with the same configuration
//! build the same table.
//!
//! Turns go to the backend whose `(claimed + 1/2) / weight` is smallest
//! (Webster / Sainte-Laguë apportionment), ties to the lower key. With
//! equal weights that is the paper's round-robin; with unequal weights each
//! backend's slot count tracks `M * weight / sum(weights)`, however unequal
//! the weights and whether or not their sum exceeds `M`.
//!
//! Memory: a table is `M * 4` bytes (256 KiB at `M = 65537`). Building it
//! keeps one cursor per backend, not the `N * M` permutation matrix; the
//! order of turns repeats every `sum(weights)` turns, so working it out
//! takes `O(min(M, sum(weights)) log N)`, plus the permutation walks.

use core::cmp::Ordering;
use std::collections::BinaryHeap;
use std::vec;
use std::vec::Vec;

use crate::flow::hash_words;
use crate::maps::NO_BACKEND;

/// Seed of the hash that gives a backend's first slot.
const OFFSET_SEED: u32 = 0x6d61_676c;
/// Seed of the hash that gives a backend's permutation step.
const SKIP_SEED: u32 = 0x736b_6970;

/// One backend as the table sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// The id written into table slots (never 0; 0 = [`NO_BACKEND`] means "empty").
    pub id: u32,
    /// What the backend's permutation is derived from: its address words and port,
    /// e.g. `[a0, a1, a2, a3, port as u32]`. Must NOT be the id: ids can differ between
    /// directors, addresses do not, so identical configs give identical tables everywhere.
    pub key: [u32; 5],
    /// 0..=65535; 0 means the backend takes no slots (drained).
    pub weight: u16,
}

/// Builds a table of `size` slots.
///
/// Every slot holds the id of a backend with weight > 0; if there is none,
/// every slot is [`NO_BACKEND`]. Each backend's share of slots is
/// proportional to its weight (one with a tiny weight next to large ones
/// may get no slot). The result depends only on the set of backends, not
/// their order, and is the same in every run and process.
///
/// # Panics
///
/// If `size` is not prime, if two backends share a key, or if a backend's
/// id is [`NO_BACKEND`].
pub fn build_table(backends: &[MaglevBackend], size: u32) -> Vec<u32> {
    assert!(is_prime(size), "maglev table size {size} is not prime");
    let mut sorted = backends.to_vec();
    sorted.sort_unstable_by_key(|b| b.key);
    for pair in sorted.windows(2) {
        assert!(
            pair[0].key != pair[1].key,
            "maglev: backends {} and {} share key {:?}",
            pair[0].id,
            pair[1].id,
            pair[0].key
        );
    }
    assert!(
        sorted.iter().all(|b| b.id != NO_BACKEND),
        "maglev: backend id {NO_BACKEND} is reserved for empty slots"
    );

    let mut cursors: Vec<Cursor> = sorted
        .iter()
        .filter(|b| b.weight > 0)
        .map(|b| Cursor::new(b, size))
        .collect();
    let mut table = vec![NO_BACKEND; size as usize];
    if !cursors.is_empty() && equal_weights(&sorted) {
        fill_round_robin(&mut cursors, &mut table);
    } else {
        fill_by_weight(&mut cursors, &sorted, &mut table);
    }
    table
}

/// Fills `table`, each backend taking a turn in proportion to its weight:
/// the turn goes to the least `(2 * claimed + 1) / weight`, ties to the
/// first in key order. That order repeats every `sum(weights)` turns once
/// each backend has had `weight` turns in the first round (every key has
/// then grown by 2, so every comparison is as at the start): one round is
/// worked out with the heap and replayed.
fn fill_by_weight(cursors: &mut [Cursor], sorted: &[MaglevBackend], table: &mut [u32]) {
    let weights: Vec<u64> = sorted
        .iter()
        .filter(|b| b.weight > 0)
        .map(|b| u64::from(b.weight))
        .collect();
    let round: u64 = weights.iter().sum();
    let order = match usize::try_from(round) {
        Ok(round) if round < table.len() => {
            let order = turns(&weights, round);
            let mut had = vec![0u64; weights.len()];
            for &index in &order {
                had[index] += 1;
            }
            if had == weights {
                order
            } else {
                turns(&weights, table.len())
            }
        }
        _ => turns(&weights, table.len()),
    };
    for &index in order.iter().cycle().take(table.len()) {
        let cursor = &mut cursors[index];
        let free = cursor.next_free(table);
        table[free] = cursor.id;
    }
}

/// The first `count` turns among backends of these `weights` (all above 0):
/// the index of the backend whose turn each is.
fn turns(weights: &[u64], count: usize) -> Vec<usize> {
    let mut queue: BinaryHeap<Turn> = weights
        .iter()
        .enumerate()
        .map(|(index, &weight)| Turn {
            claimed: 0,
            weight,
            index,
        })
        .collect();
    let mut order = Vec::with_capacity(count);
    for _ in 0..count {
        let Some(mut turn) = queue.peek_mut() else {
            break;
        };
        order.push(turn.index);
        turn.claimed += 1;
    }
    order
}

/// [`fill_by_weight`] when every weight is the same, without its heap:
/// each backend in key order, round and round.
fn fill_round_robin(cursors: &mut [Cursor], table: &mut [u32]) {
    for turn in 0..table.len() {
        let cursor = &mut cursors[turn % cursors.len()];
        let slot = cursor.next_free(table);
        table[slot] = cursor.id;
    }
}

/// Whether every backend that takes slots has the same weight.
fn equal_weights(sorted: &[MaglevBackend]) -> bool {
    let mut weights = sorted.iter().map(|b| b.weight).filter(|&w| w > 0);
    let first = weights.next();
    weights.all(|w| Some(w) == first)
}

/// True if `n` is prime (used to validate configured table sizes).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let n = u64::from(n);
    let mut d = 3u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// A backend's position on its permutation `(offset + j * skip) % size`.
struct Cursor {
    id: u32,
    pos: u64,
    skip: u64,
    size: u64,
}

impl Cursor {
    fn new(backend: &MaglevBackend, size: u32) -> Self {
        Cursor {
            id: backend.id,
            pos: u64::from(hash_words(OFFSET_SEED, &backend.key) % size),
            skip: u64::from(hash_words(SKIP_SEED, &backend.key) % (size - 1) + 1),
            size: u64::from(size),
        }
    }

    /// The first free slot from here on. `size` is prime and `skip` in
    /// `1..size`, so the walk visits every slot; callers ensure one is free.
    fn next_free(&mut self, table: &[u32]) -> usize {
        while table[self.pos as usize] != NO_BACKEND {
            // `pos` and `skip` are below `size`: one subtraction is the modulo.
            self.pos += self.skip;
            if self.pos >= self.size {
                self.pos -= self.size;
            }
        }
        self.pos as usize
    }
}

/// A backend's place in the queue of turns; the heap's greatest goes next.
struct Turn {
    claimed: u64,
    weight: u64,
    /// Index into the key-sorted backends with weight > 0.
    index: usize,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // `self` goes first if (2c_s + 1) / w_s < (2c_o + 1) / w_o.
        let mine = (2 * self.claimed + 1) * other.weight;
        let theirs = (2 * other.claimed + 1) * self.weight;
        theirs.cmp(&mine).then_with(|| other.index.cmp(&self.index))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Turn {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::format;
    use std::time::Instant;

    const M: u32 = 65537;

    /// Backend `i` at 10.0.x.y:80 with id `i + 1`.
    fn backend(i: u32, weight: u16) -> MaglevBackend {
        let addr = u32::from_ne_bytes([10, 0, (i >> 8) as u8, i as u8]);
        MaglevBackend {
            id: i + 1,
            key: [addr, 0, 0, 0, 80],
            weight,
        }
    }

    fn equal(n: u32) -> Vec<MaglevBackend> {
        (0..n).map(|i| backend(i, 1)).collect()
    }

    /// Slots per backend id.
    fn counts(table: &[u32]) -> BTreeMap<u32, usize> {
        let mut counts = BTreeMap::new();
        for &id in table {
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }

    fn changed(a: &[u32], b: &[u32]) -> f64 {
        let moved = a.iter().zip(b).filter(|(x, y)| x != y).count();
        moved as f64 / a.len() as f64
    }

    #[test]
    fn equal_weights_share_evenly() {
        for (n, size) in [(3, M), (5, 503), (10, M), (100, M), (1000, M)] {
            let table = build_table(&equal(n), size);
            let counts = counts(&table);
            assert_eq!(counts.len(), n as usize, "n={n}: a backend got no slot");
            assert!(!counts.contains_key(&NO_BACKEND), "n={n}: empty slot");
            let max = *counts.values().max().unwrap() as f64;
            let min = *counts.values().min().unwrap() as f64;
            // M / N slots each, rounded either way.
            let bound = if size >= 100 * n { 1.01 } else { 66.0 / 65.0 };
            assert!(max / min <= bound, "n={n} size={size}: {max}/{min}");
        }
    }

    #[test]
    fn removing_and_adding_one_moves_little() {
        for n in [3u32, 10, 100] {
            let all = equal(n);
            let before = build_table(&all, M);
            for gone in (0..n).step_by(n.div_ceil(10) as usize) {
                let mut rest = all.clone();
                rest.remove(gone as usize);
                let after = build_table(&rest, M);
                let moved = changed(&before, &after);
                assert!(
                    moved <= 1.0 / n as f64 + 0.01,
                    "n={n}, removed {gone}: {moved}"
                );
                // Only the removed backend's slots had to move; they did.
                let id = all[gone as usize].id;
                assert!(!after.contains(&id));
            }
            let mut more = all.clone();
            more.push(backend(n, 1));
            let moved = changed(&before, &build_table(&more, M));
            assert!(
                moved <= 1.0 / (n + 1) as f64 + 0.01,
                "n={n}, added: {moved}"
            );
        }
    }

    #[test]
    fn weights_are_honoured() {
        let cases: [&[u16]; 6] = [
            &[1, 2, 3, 4],
            &[100, 200, 700],
            &[1, 65535],
            &[65535, 65535, 1000],
            &[65535; 8],
            &[1, 1, 1, 65535, 30000, 7],
        ];
        for weights in cases {
            let backends: Vec<_> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| backend(i as u32, w))
                .collect();
            let table = build_table(&backends, M);
            let counts = counts(&table);
            assert!(!counts.contains_key(&NO_BACKEND), "{weights:?}: empty slot");
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            for b in &backends {
                let want = f64::from(b.weight) / total;
                let got = *counts.get(&b.id).unwrap_or(&0) as f64 / f64::from(M);
                let ctx = format!("{weights:?}: id {} got {got}, want {want}", b.id);
                assert!((got - want).abs() <= 0.01, "{ctx}");
                if want > 0.05 {
                    assert!((got - want).abs() / want <= 0.01, "{ctx}");
                }
            }
        }
    }

    #[test]
    fn many_backends_build_fast() {
        let backends = equal(1000);
        let start = Instant::now();
        let table = build_table(&backends, M);
        let elapsed = start.elapsed();
        std::println!("N=1000, M={M}: {elapsed:?}");
        assert_eq!(counts(&table).len(), 1000);
        let start = Instant::now();
        build_table(&equal(3), M);
        std::println!("N=3, M={M}: {:?}", start.elapsed());
    }

    #[test]
    fn tables_are_deterministic() {
        let backends = [backend(7, 3), backend(1, 5), backend(300, 2)];
        let table = build_table(&backends, M);
        assert_eq!(table, build_table(&backends, M));
        let mut shuffled = backends;
        shuffled.reverse();
        assert_eq!(table, build_table(&shuffled, M));
        shuffled.swap(0, 1);
        assert_eq!(table, build_table(&shuffled, M));

        // Pinned: a change here means every director's table changes.
        let golden: [u32; 16] = [2, 8, 2, 2, 8, 8, 2, 2, 301, 8, 2, 301, 8, 2, 301, 2];
        assert_eq!(table[..16], golden, "{:?}", &table[..16]);
    }

    #[test]
    fn ids_do_not_affect_placement() {
        let backends = equal(10);
        let renumbered: Vec<_> = backends
            .iter()
            .map(|b| MaglevBackend {
                id: b.id + 100,
                ..*b
            })
            .collect();
        let a = build_table(&backends, M);
        let b = build_table(&renumbered, M);
        assert!(a.iter().zip(&b).all(|(x, y)| x + 100 == *y));
    }

    #[test]
    fn equal_weights_fill_as_the_weighted_order_does() {
        for (count, weight) in [(1, 1), (3, 1), (64, 7), (100, 100)] {
            let backends: Vec<MaglevBackend> = (0..count).map(|i| backend(i, weight)).collect();
            let mut sorted = backends.clone();
            sorted.sort_unstable_by_key(|b| b.key);
            let cursors = || -> Vec<Cursor> { sorted.iter().map(|b| Cursor::new(b, M)).collect() };
            let mut by_weight = vec![NO_BACKEND; M as usize];
            fill_by_weight(&mut cursors(), &sorted, &mut by_weight);
            assert_eq!(
                build_table(&backends, M),
                by_weight,
                "{count} backends of weight {weight}"
            );
        }
    }

    #[test]
    fn a_replayed_round_fills_as_the_full_order_does() {
        let weight_sets: [&[u16]; 5] =
            [&[2, 1, 1], &[1, 2], &[3, 5, 7, 11], &[100, 1], &[65535, 1]];
        for weights in weight_sets {
            let backends: Vec<MaglevBackend> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| backend(i as u32, w))
                .collect();
            let mut sorted = backends.clone();
            sorted.sort_unstable_by_key(|b| b.key);
            let weights: Vec<u64> = sorted.iter().map(|b| u64::from(b.weight)).collect();
            let mut cursors: Vec<Cursor> = sorted.iter().map(|b| Cursor::new(b, M)).collect();
            let mut full = vec![NO_BACKEND; M as usize];
            for index in turns(&weights, M as usize) {
                let free = cursors[index].next_free(&full);
                full[free] = cursors[index].id;
            }
            assert_eq!(build_table(&backends, M), full, "weights {weights:?}");
        }
    }

    #[test]
    fn zero_weight_takes_no_slots() {
        let mut backends = equal(4);
        backends[2].weight = 0;
        let table = build_table(&backends, M);
        assert!(!table.contains(&backends[2].id));
        assert!(!table.contains(&NO_BACKEND));
        // A drained backend is as good as absent.
        backends.remove(2);
        assert_eq!(table, build_table(&backends, M));

        let drained: Vec<_> = (0..4).map(|i| backend(i, 0)).collect();
        assert!(build_table(&drained, 503)
            .iter()
            .all(|&id| id == NO_BACKEND));
        assert_eq!(build_table(&[], 503), vec![NO_BACKEND; 503]);
    }

    #[test]
    fn primes() {
        for p in [
            2,
            3,
            5,
            503,
            65537,
            655_373,
            1_000_003,
            2_147_483_647,
            4_294_967_291,
        ] {
            assert!(is_prime(p), "{p}");
        }
        for n in [0, 1, 4, 9, 65535, 65536, 65539 * 3, 4_294_967_295] {
            assert!(!is_prime(n), "{n}");
        }
    }

    #[test]
    #[should_panic(expected = "maglev table size 65536 is not prime")]
    fn non_prime_size_panics() {
        build_table(&equal(3), 65536);
    }

    #[test]
    #[should_panic(expected = "share key")]
    fn duplicate_keys_panic() {
        let mut twin = backend(1, 1);
        twin.id = 9;
        build_table(&[backend(1, 1), twin], 503);
    }
}
