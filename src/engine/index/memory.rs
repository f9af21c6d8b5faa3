//! The index's memory estimate (`Index::heap_bytes`, behind `EngineStats::index_bytes`): what
//! malloc holds for the leaves, the map of leaves and the range deletes. The rule it keeps: the
//! estimate counts every allocation the index makes, as glibc's malloc rounds it, so that it
//! stays within a fifth of what a counting allocator sees (`tests/index_memory.rs`).

use super::leaf::{Leaf, Packed};
use super::{Index, RangeDelete};

/// What glibc's malloc takes for a request of `n` bytes (16-byte chunks, 8 bytes of header,
/// 32 bytes at least); 0 for no allocation.
fn malloc_bytes(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

/// Heap bytes of one leaf's slot in the map of leaves besides the leaf's own allocations: fence
/// box and leaf in a B-tree node at its typical two-thirds fill, plus node headers.
const LEAF_SLOT_BYTES: usize =
    (std::mem::size_of::<Box<[u8]>>() + std::mem::size_of::<Leaf>()) * 3 / 2 + 8;

/// Heap bytes of one range delete's slot in the map of range deletes besides its key and bound
/// allocations: as [`LEAF_SLOT_BYTES`], key and value in a B-tree node at two-thirds fill.
const RANGE_SLOT_BYTES: usize =
    (std::mem::size_of::<(Box<[u8]>, u64)>() + std::mem::size_of::<RangeDelete>()) * 3 / 2 + 8;

impl Leaf {
    /// Heap bytes of the leaf's allocations, as malloc counts them.
    fn heap_bytes(&self) -> usize {
        malloc_bytes(self.prefix.len())
            + malloc_bytes(self.ends.capacity() * std::mem::size_of::<u16>())
            + malloc_bytes(self.arena.capacity())
            + malloc_bytes(self.entries.capacity() * std::mem::size_of::<Packed>())
    }
}

impl Index {
    /// Estimated heap bytes: leaves (as malloc counts their allocations), the map of leaves, and
    /// range deletes. Walks the leaves (about one per hundred entries).
    pub fn heap_bytes(&self) -> usize {
        let inner = self.inner.read();
        inner
            .leaves
            .iter()
            .map(|(fence, leaf)| malloc_bytes(fence.len()) + leaf.heap_bytes() + LEAF_SLOT_BYTES)
            .sum::<usize>()
            + inner
                .ranges
                .iter()
                .map(|((start, _), r)| {
                    malloc_bytes(start.len())
                        + malloc_bytes(r.start.capacity())
                        + malloc_bytes(r.end.capacity())
                        + RANGE_SLOT_BYTES
                })
                .sum::<usize>()
    }
}
