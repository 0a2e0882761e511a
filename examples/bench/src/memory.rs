//! Process figures: a counting allocator for live heap blocks and bytes, and the resident
//! set size and thread count from `/proc/self/status`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// The system allocator, counting live blocks and bytes and the peak of live bytes.
///
/// Install it in a binary with `#[global_allocator] static ALLOC: Counting = Counting::new();`.
#[derive(Debug)]
pub struct Counting {
    blocks: AtomicIsize,
    bytes: AtomicIsize,
    peak: AtomicUsize,
}

impl Counting {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self {
            blocks: AtomicIsize::new(0),
            bytes: AtomicIsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Heap blocks allocated and not yet freed.
    pub fn live_blocks(&self) -> isize {
        self.blocks.load(Ordering::Relaxed)
    }

    /// Bytes allocated and not yet freed.
    pub fn live_bytes(&self) -> isize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The largest `live_bytes` seen since the last [`reset_peak`](Self::reset_peak).
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new peak measurement from the current live bytes.
    pub fn reset_peak(&self) {
        let now = usize::try_from(self.live_bytes()).unwrap_or(0);
        self.peak.store(now, Ordering::Relaxed);
    }

    fn add(&self, size: usize) {
        self.blocks.fetch_add(1, Ordering::Relaxed);
        let size = isize::try_from(size).unwrap_or(isize::MAX);
        let now = self.bytes.fetch_add(size, Ordering::Relaxed) + size;
        self.peak
            .fetch_max(usize::try_from(now).unwrap_or(0), Ordering::Relaxed);
    }

    fn remove(&self, size: usize) {
        self.blocks.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(
            isize::try_from(size).unwrap_or(isize::MAX),
            Ordering::Relaxed,
        );
    }
}

impl Default for Counting {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            self.add(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        self.remove(layout.size());
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            self.add(layout.size());
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            self.remove(layout.size());
            self.add(new_size);
        }
        new
    }
}

/// A field of `/proc/self/status` in its first number (kB for sizes), if this system has it.
fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// Resident set size in KiB.
pub fn resident_kib() -> Option<u64> {
    status_field("VmRSS")
}

/// Peak resident set size in KiB.
pub fn peak_resident_kib() -> Option<u64> {
    status_field("VmHWM")
}

/// Threads of this process.
pub fn threads() -> Option<u64> {
    status_field("Threads")
}

/// CPU time used by this process so far (user and system, every thread, the exited ones
/// included), from `/proc/self/stat` in clock ticks of 1/100 s (Linux's `USER_HZ`).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}
