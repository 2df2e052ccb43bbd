//! This CPU's flow table ([`lb_common::maps::MAP_FLOW_CACHE`]): a
//! set-associative cache in a plain array, a bucket of [`FLOW_WAYS`] ways
//! per flow hash, with a region of buckets per CPU. A lookup is an array
//! index (which the kernel inlines) and five word compares per way, with
//! no lock and no sharing between CPUs; a full bucket gives up the way
//! refreshed longest ago.

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_jiffies64};
use lb_common::{
    flow::{cache_bucket, FlowKey},
    maps::{CachedFlow, FlowBucket, Settings, FLOW_WAYS},
};

use crate::maps::{CPUS, FLOW_BUCKETS, FLOW_CACHE};

/// The most CPUs a SYN that reuses a port clears the flow from.
const MAX_CPUS: u32 = 1024;

/// The flow's bucket index within a CPU's region.
#[inline(always)]
pub fn index(key: &FlowKey, settings: &Settings) -> u32 {
    cache_bucket(key, &settings.cache_keys, FLOW_BUCKETS.load())
}

/// The jiffies counter's low 32 bits: inlined by the kernel, so far cheaper
/// than a clock read.
#[inline(always)]
pub fn jiffies() -> u32 {
    unsafe { bpf_jiffies64() as u32 }
}

#[inline(always)]
fn bucket(cpu: u32, index: u32) -> Option<&'static mut FlowBucket> {
    let at = cpu.checked_mul(FLOW_BUCKETS.load())?.checked_add(index)?;
    FLOW_CACHE.get_ptr_mut(at).map(|b| unsafe { &mut *b })
}

#[inline(always)]
fn own_bucket(index: u32) -> Option<&'static mut FlowBucket> {
    bucket(unsafe { bpf_get_smp_processor_id() }, index)
}

/// Whether `way` holds `key`: five 8-byte compares (an empty way's family
/// is 0, which no key has).
#[inline(always)]
fn holds(way: &CachedFlow, key: &FlowKey) -> bool {
    let a = &way.key as *const FlowKey as *const [u64; 5];
    let b = key as *const FlowKey as *const [u64; 5];
    let (a, b) = unsafe { (&*a, &*b) };
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4]
}

/// This CPU's entry for `key`, in place.
#[inline(always)]
pub fn find(key: &FlowKey, index: u32) -> Option<&'static mut CachedFlow> {
    let bucket = own_bucket(index)?;
    for i in 0..FLOW_WAYS {
        if holds(&bucket.ways[i], key) {
            return Some(&mut bucket.ways[i]);
        }
    }
    None
}

/// What a way holds besides its key.
pub struct Entry {
    pub backend: u32,
    pub generation: u32,
    pub flags: u32,
    pub seen_jiffies: u32,
    pub last_seen_ns: u64,
}

/// Records `entry` for `key` on this CPU: in its own way if it has one,
/// else an empty way, else the way refreshed longest ago.
#[inline(always)]
pub fn insert(key: &FlowKey, index: u32, entry: &Entry) {
    let Some(bucket) = own_bucket(index) else {
        return;
    };
    let now = entry.seen_jiffies;
    let mut victim = 0;
    let mut oldest = 0;
    for i in 0..FLOW_WAYS {
        let way = &bucket.ways[i];
        if holds(way, key) || way.key.family == 0 {
            victim = i;
            break;
        }
        let age = now.wrapping_sub(way.seen_jiffies);
        if age >= oldest {
            oldest = age;
            victim = i;
        }
    }
    write(&mut bucket.ways[victim], key, entry);
}

/// Copies word by word (a struct copy would be a call to memcpy).
#[inline(always)]
fn write(way: &mut CachedFlow, key: &FlowKey, entry: &Entry) {
    let to = &mut way.key as *mut FlowKey as *mut [u64; 5];
    let from = key as *const FlowKey as *const [u64; 5];
    unsafe {
        let (to, from) = (&mut *to, &*from);
        to[0] = from[0];
        to[1] = from[1];
        to[2] = from[2];
        to[3] = from[3];
        to[4] = from[4];
    }
    way.backend = entry.backend;
    way.generation = entry.generation;
    way.flags = entry.flags;
    way.seen_jiffies = entry.seen_jiffies;
    way.last_seen_ns = entry.last_seen_ns;
}

/// Empties `way` (one byte store, so a reader on another CPU never sees
/// half a key match).
#[inline(always)]
pub fn clear(way: &mut CachedFlow) {
    way.key.family = 0;
}

/// Clears `key` from every CPU's cache: a SYN that reuses the port of a
/// known flow starts a new connection, which no CPU's old entry may
/// contradict. (Rare: bounded by the CPU count, read from `CPUS`.)
#[inline(always)]
pub fn forget_everywhere(key: &FlowKey, index: u32) {
    let cpus = CPUS.load();
    for cpu in 0..MAX_CPUS {
        if cpu >= cpus {
            break;
        }
        if let Some(bucket) = bucket(cpu, index) {
            for i in 0..FLOW_WAYS {
                if holds(&bucket.ways[i], key) {
                    clear(&mut bucket.ways[i]);
                }
            }
        }
    }
}
