//! The flow key and the one hash both sides use, so userspace (and tests)
//! can predict which Maglev slot, and so which backend, a packet gets.

/// A transport 5-tuple. Addresses are the packet's bytes as four native
/// `u32` words (IPv4 in the first word, the rest zero); ports are in host
/// byte order. Aligned to 8 bytes, so that it compares as five words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// [`crate::maps::FAMILY_V4`] or [`crate::maps::FAMILY_V6`].
    pub family: u8,
    pub _pad: [u8; 2],
}

const PRIME_1: u32 = 0x9e37_79b1;
const PRIME_2: u32 = 0x85eb_ca77;
const PRIME_3: u32 = 0xc2b2_ae3d;

/// Mixes one word into the running hash.
#[inline(always)]
const fn mix(h: u32, word: u32) -> u32 {
    (h ^ word.wrapping_mul(PRIME_2))
        .rotate_left(13)
        .wrapping_mul(PRIME_1)
}

/// Final avalanche (MurmurHash3's fmix32).
#[inline(always)]
const fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(PRIME_2);
    h ^= h >> 13;
    h = h.wrapping_mul(PRIME_3);
    h ^ (h >> 16)
}

/// Hashes `words` with `seed`. Word-at-a-time, so it stays cheap in BPF.
#[inline(always)]
pub fn hash_words(seed: u32, words: &[u32]) -> u32 {
    let mut h = seed ^ PRIME_3;
    let mut i = 0;
    while i < words.len() {
        h = mix(h, words[i]);
        i += 1;
    }
    finish(h ^ words.len() as u32)
}

/// The hash that picks a Maglev slot for a new flow.
#[inline(always)]
pub fn flow_hash(key: &FlowKey, seed: u32) -> u32 {
    let ports = (key.sport as u32) << 16 | key.dport as u32;
    let tail = (key.proto as u32) << 8 | key.family as u32;
    let s = key.src;
    let d = key.dst;
    hash_words(
        seed,
        &[s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3], ports, tail],
    )
}

/// The Maglev slot (of a ring of `size`) for `hash`: a multiply and a
/// shift (Lemire's fast range) where `hash % size` would be a division.
#[inline(always)]
pub const fn ring_slot(hash: u32, size: u32) -> u32 {
    ((hash as u64 * size as u64) >> 32) as u32
}

/// An address's slot among `slots`, for per-address caches.
#[inline(always)]
pub const fn address_slot(addr: &[u32; 4], slots: u32) -> u32 {
    ring_slot(
        finish((addr[0] ^ addr[1] ^ addr[2] ^ addr[3]).wrapping_mul(PRIME_1)),
        slots,
    )
}

/// A hash of a flow's client side for the IP-in-IP outer source (see
/// [`crate::maps::spread_source`]): every bit mixed, so whichever bits of
/// the source vary, flows spread over them.
#[inline(always)]
pub const fn tunnel_flow_hash(src: &[u32; 4], sport: u16, dport: u16) -> u32 {
    let ports = (sport as u32) << 16 | dport as u32;
    finish((src[0] ^ src[1] ^ src[2] ^ src[3]).wrapping_mul(PRIME_1) ^ ports)
}

/// The hash for source-IP affinity: only the (masked) source address, so
/// every connection of one client lands on one backend.
#[inline(always)]
pub fn source_hash(masked_src: &[u32; 4], family: u8, seed: u32) -> u32 {
    let s = masked_src;
    hash_words(seed ^ 1, &[s[0], s[1], s[2], s[3], family as u32])
}

/// The keys of [`cache_bucket`]'s hash for hash seed `seed`
/// (SplitMix64's outputs): secret with the seed, so that clients cannot
/// aim their flows at one bucket.
pub const fn cache_keys(seed: u32) -> [u64; 5] {
    let mut keys = [0; 5];
    let mut state = seed as u64;
    let mut i = 0;
    while i < keys.len() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        keys[i] = z ^ (z >> 31);
        i += 1;
    }
    keys
}

/// Odd multipliers for the five words of [`cache_bucket`].
const CACHE_MULTIPLIERS: [u64; 5] = [
    0x9e37_79b9_7f4a_7c15,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
    0x85eb_ca77_c2b2_ae63,
    0x27d4_eb2f_1656_67c5,
];

/// The flow cache's bucket (of `buckets`) for `key`: the key's five
/// 8-byte words, each XORed with its secret key and multiplied, summed
/// (five independent multiplies, cheap in BPF), folded and mixed once so
/// that neighbouring ports spread, then scaled to the bucket count by a
/// multiply.
#[inline(always)]
pub fn cache_bucket(key: &FlowKey, keys: &[u64; 5], buckets: u32) -> u32 {
    // SAFETY: 40 bytes of plain integers with explicit padding, 8-aligned.
    let words = unsafe { &*(key as *const FlowKey as *const [u64; 5]) };
    let mut h = 0u64;
    let mut i = 0;
    while i < 5 {
        h = h.wrapping_add((words[i] ^ keys[i]).wrapping_mul(CACHE_MULTIPLIERS[i]));
        i += 1;
    }
    let folded = ((h >> 32) as u32 ^ h as u32).wrapping_mul(PRIME_1);
    (((folded ^ (folded >> 15)) as u64 * buckets as u64) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: [u32::from_ne_bytes([198, 18, 0, 1]), 0, 0, 0],
            dst: [u32::from_ne_bytes([198, 18, 0, 100]), 0, 0, 0],
            sport,
            dport: 80,
            proto: 6,
            family: 4,
            _pad: [0; 2],
        }
    }

    #[test]
    fn stable_values() {
        // Pinned: every director (and the BPF side) must compute these, so
        // a change here moves flows between backends during an upgrade.
        assert_eq!(flow_hash(&key(40000), 0), GOLDEN[0]);
        assert_eq!(flow_hash(&key(40001), 0), GOLDEN[1]);
        assert_eq!(source_hash(&key(1).src, 4, 0), GOLDEN[2]);
    }

    #[test]
    fn the_seed_changes_every_hash() {
        let seed = 0x5eed_1234;
        for port in 0..64u16 {
            assert_ne!(flow_hash(&key(port), 0), flow_hash(&key(port), seed));
        }
        assert_ne!(
            source_hash(&key(1).src, 4, 0),
            source_hash(&key(1).src, 4, seed)
        );
    }

    const GOLDEN: [u32; 3] = [0x4f59_7f6d, 0x4287_069c, 0x7039_a90d];

    #[test]
    fn spreads_ports_evenly() {
        let buckets = 16u32;
        let mut counts = [0u32; 16];
        for port in 0..16_000u16 {
            counts[(flow_hash(&key(port), 0) % buckets) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*max as f64 / *min as f64 <= 1.15, "{counts:?}");
    }

    #[test]
    fn cache_buckets_spread_ports_and_clients_evenly() {
        let keys = cache_keys(0x5eed);
        let buckets = 64u32;
        let mut counts = [0u32; 64];
        for port in 0..32_000u16 {
            let mut k = key(port);
            k.src[0] ^= (port as u32 % 7) << 24;
            counts[cache_bucket(&k, &keys, buckets) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*max as f64 / *min as f64 <= 1.25, "{counts:?}");
        assert_ne!(cache_keys(1), cache_keys(2));
    }

    #[test]
    fn source_hash_ignores_ports() {
        let a = key(1);
        assert_eq!(source_hash(&a.src, 4, 0), source_hash(&key(2).src, 4, 0));
        assert_ne!(source_hash(&a.src, 4, 0), source_hash(&a.dst, 4, 0));
    }
}
