//! Per-CPU rate limits over one-second windows: the flood guard's new
//! flows and the ICMP messages the program sends.

use crate::maps::RATES;

const WINDOW_NS: u64 = 1_000_000_000;

/// Counts one event against `slot` of this CPU and says whether the
/// window's count is now over `limit` per second (never, for limit 0).
#[inline(always)]
pub fn over(slot: u32, limit: u32, now: u64) -> bool {
    if limit == 0 {
        return false;
    }
    let Some(window) = RATES.get_ptr_mut(slot) else {
        return false;
    };
    // Per-CPU slot: no other writer while this program runs here.
    let window = unsafe { &mut *window };
    if now.saturating_sub(window.start_ns) >= WINDOW_NS {
        window.start_ns = now;
        window.count = 0;
    }
    window.count += 1;
    window.count > limit as u64
}
