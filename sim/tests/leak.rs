//! Nothing a run allocates outlives it: a sweep of any length runs in the memory of one seed.
//!
//! Postmortem: every run left its madsim runtime behind, about 0.6 MB per seed of `one-to-one`
//! (490 MB for 800 seeds in one process, several GB for large groups). Each node's loop,
//! receive tasks and sleepers were still pending when the controller returned, and dropping a
//! madsim `Runtime` does not drop pending tasks: each holds a waker of itself, and their futures
//! held the world, the endpoints and the runtime's handles. `run::stop_nodes` now kills every
//! node at the end of the run, so the executor drops those tasks before `block_on` returns.
//!
//! The check counts live heap bytes with a counting allocator (exact, unlike RSS), so this file
//! holds this one test only: another test running beside it would allocate meanwhile.

use imsim_sim::{run, Scenario};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `pointer` came from `alloc` with this `layout`.
        unsafe { System.dealloc(pointer, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Growth allowed over all the seeds of one scenario. A leaking run of `one-to-one` kept about
/// 600 KB per seed; what remains is one-off (lazily initialised statics, tracing call sites).
const GROWTH_BYTES_MAX: isize = 256 * 1024;

#[test]
fn no_memory_outlives_a_run() {
    // `server-crash` too: its crashed and restarted nodes leave tasks of earlier incarnations.
    for (name, runs) in [("one-to-one", 12), ("server-crash", 6)] {
        let scenario = Scenario::load(name).expect("a shipped scenario");
        // The first run initialises what lives for the whole process.
        drop(run(&scenario, 0));
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        for seed in 1..=runs {
            drop(run(&scenario, seed));
        }
        let growth = LIVE_BYTES.load(Ordering::Relaxed) - before;
        assert!(
            growth < GROWTH_BYTES_MAX,
            "{name}: {growth} bytes still allocated after {runs} runs (at most \
             {GROWTH_BYTES_MAX}): something of each run outlives it"
        );
    }
}
