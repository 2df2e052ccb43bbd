//! Unpredictable-enough numbers for DNS query ids and start offsets, from
//! the standard library's randomly keyed hasher.

use std::hash::{BuildHasher, RandomState};

pub fn random_u64() -> u64 {
    // Each RandomState has fresh keys, so hashing nothing differs every call.
    RandomState::new().hash_one(())
}
