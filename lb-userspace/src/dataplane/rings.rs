//! The Maglev rings, memory-mapped: writing a ring is a pass over memory,
//! not a system call per slot.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::maps::MapData;

/// A slot's size: the map's 8-byte elements hold two slots each, so the
/// slots lie packed.
const STRIDE: usize = 4;

pub struct Rings {
    base: NonNull<u8>,
    len: usize,
    entries: u32,
}

// SAFETY: the mapping is plain shared memory, owned by this value alone.
unsafe impl Send for Rings {}
unsafe impl Sync for Rings {}

impl Rings {
    /// Maps `map`, an array of slot pairs created with `BPF_F_MMAPABLE`,
    /// as `entries` slots.
    pub fn map(map: &MapData, entries: u32) -> io::Result<Rings> {
        let len = entries as usize * STRIDE;
        // SAFETY: a shared mapping of the map's fd; the kernel checks the
        // length against the map's size.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Rings { base, len, entries })
    }

    fn slot(&self, index: u32) -> *mut u32 {
        assert!(index < self.entries, "ring slot {index} out of range");
        // SAFETY: in bounds by the assertion; slots are 4-byte aligned.
        unsafe { self.base.as_ptr().add(index as usize * STRIDE).cast() }
    }

    /// Writes `values` from slot `start` where they differ from `known`,
    /// what those slots are known to hold (empty: unknown).
    pub fn write(&mut self, start: u32, values: &[u32], known: &[u32]) {
        for (i, value) in values.iter().enumerate() {
            if known.get(i) != Some(value) {
                // SAFETY: a valid slot; an aligned 4-byte store is atomic
                // for the program reading it.
                unsafe { self.slot(start + i as u32).write_volatile(*value) };
            }
        }
    }

    pub fn read(&self, start: u32, count: u32) -> Vec<u32> {
        // SAFETY: valid slots, as in `write`.
        (start..start + count)
            .map(|i| unsafe { self.slot(i).read_volatile() })
            .collect()
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
