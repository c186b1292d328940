//! Heap budget of a DM tree: a simulated device's tree (49 nodes), built the way the device
//! builds it, as a clone, and as the engine loads it from TNDS, must stay within a few
//! kilobytes, since a lab holds two or three per device for tens of thousands of devices.
//!
//! A counting global allocator measures the bytes live on the test's own thread (per-thread
//! counters, so tests running in parallel do not disturb each other). Each allocation is
//! counted rounded up to 16 bytes, roughly what a real allocator spends on a small block.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use dmdeleg::dm::tree::{DmTree, Principal, TreeLimits};
use dmdeleg::dm::uri::{NodeUri, TndsSelection};
use dmdeleg::sim::device::SimDevice;
use dmdeleg::sim::fleet::FleetConfig;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static BLOCKS: Cell<isize> = const { Cell::new(0) };
}

fn rounded(size: usize) -> isize {
    size.div_ceil(16).max(1) as isize * 16
}

fn note(delta: isize, blocks: isize) {
    // `try_with`: a thread being torn down has no counters left, and nothing to measure.
    let _ = LIVE.try_with(|c| c.set(c.get() + delta));
    let _ = BLOCKS.try_with(|c| c.set(c.get() + blocks));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// thread-local `Cell`s that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(rounded(layout.size()), 1);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-rounded(layout.size()), -1);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(rounded(layout.size()), 1);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(rounded(new_size) - rounded(layout.size()), 0);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes and blocks that `make` left allocated (its result, and anything it set up for
/// later; whatever it freed on the way is not counted).
fn live_heap<T>(make: impl FnOnce() -> T) -> (T, isize, isize) {
    let (b0, n0) = (LIVE.with(Cell::get), BLOCKS.with(Cell::get));
    let value = make();
    let (b1, n1) = (LIVE.with(Cell::get), BLOCKS.with(Cell::get));
    (value, b1 - b0, n1 - n0)
}

/// Bytes a value occupies inline plus on the heap.
fn total<T>(heap: isize) -> isize {
    heap + std::mem::size_of::<T>() as isize
}

fn sim_device() -> SimDevice {
    let cfg = FleetConfig::new("dms1.example", "http://127.0.0.1:1/dm", 1);
    SimDevice::new(&cfg.dev_id(0), &cfg.account(0)).unwrap()
}

/// The budget of a simulated device's tree (49 nodes) in a lab, where trees share property
/// sets: each device (its tree and a little of its own), the engine's copy of the tree loaded
/// from TNDS, a clone. About 120 bytes a node.
const TREE_BUDGET: isize = 6 * 1024;
/// The budget of the first device of a process, whose tree holds the property sets later trees
/// share and which sets up the tables for sharing them.
const FIRST_BUDGET: isize = 12 * 1024;

fn tnds_of(tree: &DmTree) -> dmdeleg::dm::tnds::TndsDocument {
    tree.export_tnds(
        Principal::Device,
        &NodeUri::root(),
        &NodeUri::root(),
        &TndsSelection::ALL,
    )
    .unwrap()
}

#[test]
fn a_simulated_device_tree_fits_its_budget() {
    // The first device of a process: its tree holds what later trees share with it (property
    // sets), and it sets up the tables for sharing.
    let (first, first_heap, first_blocks) = live_heap(sim_device);
    let first_total = total::<SimDevice>(first_heap);
    let first_loaded = DmTree::from_tnds(&tnds_of(&first.tree), TreeLimits::default()).unwrap();
    // Each further device, and the engine's copy of its tree, as a lab holds thousands.
    let (dev, dev_heap, dev_blocks) = live_heap(sim_device);
    assert_eq!(dev.tree.len(), 49, "the budget is set for the 49-node tree");
    let doc = tnds_of(&dev.tree);
    let (loaded, loaded_heap, loaded_blocks) =
        live_heap(|| DmTree::from_tnds(&doc, TreeLimits::default()).unwrap());
    let (clone, clone_heap, clone_blocks) = live_heap(|| dev.tree.clone());
    let dev_total = total::<SimDevice>(dev_heap);
    let loaded_total = total::<DmTree>(loaded_heap);
    let clone_total = total::<DmTree>(clone_heap);
    println!(
        "first SimDevice::new: {first_total} bytes in {first_blocks} blocks; each further \
         one: {dev_total} bytes in {dev_blocks} blocks; its tree loaded from TNDS (as the \
         engine holds it): {loaded_total} bytes in {loaded_blocks} blocks ({} bytes a node); \
         a clone: {clone_total} bytes in {clone_blocks} blocks",
        loaded_total / loaded.len() as isize
    );
    assert!(clone.same_as(&dev.tree));
    assert!(loaded.same_as(&dev.tree), "{:?}", loaded.diff(&dev.tree));
    assert!(first_loaded.same_as(&first.tree));
    for (what, bytes, budget) in [
        ("the first simulated device", first_total, FIRST_BUDGET),
        ("a further simulated device", dev_total, TREE_BUDGET),
        (
            "the device tree loaded from TNDS",
            loaded_total,
            TREE_BUDGET,
        ),
        ("a clone of the device tree", clone_total, TREE_BUDGET),
    ] {
        assert!(
            bytes <= budget,
            "{what} takes {bytes} bytes (budget {budget})"
        );
    }
}
