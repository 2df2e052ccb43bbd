//! Zeroed values without a call to `memset`, which BPF links as a byte
//! loop: LLVM merges a run of plain zero stores into such a call, and turns
//! moving a value it knows is zero into one, but not volatile stores to the
//! place the value stays in.

use core::mem::{size_of, MaybeUninit};

/// Zeroes `slot` a word at a time and returns it, initialised.
///
/// # Safety
/// All-zero bytes must be a valid `T`, and its size a multiple of 4.
#[inline(always)]
pub unsafe fn zero<T>(slot: &mut MaybeUninit<T>) -> &mut T {
    let words = slot.as_mut_ptr() as *mut u32;
    let mut i = 0;
    while i < size_of::<T>() / 4 {
        core::ptr::write_volatile(words.add(i), 0);
        i += 1;
    }
    slot.assume_init_mut()
}
