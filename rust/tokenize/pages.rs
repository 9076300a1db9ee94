//! Large lookup tables in zeroed memory on huge pages where the system
//! gives them: the word cache and the merge table are read at random, and
//! with 4 KiB pages most of those reads also miss the TLB.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use memmap2::MmapMut;

/// Types whose all-zero bytes are a valid value.
///
/// # Safety
/// Implement only for types where that holds.
pub(super) unsafe trait ZeroIsValid {}
// SAFETY: integers and atomic integers have the bit validity of integers.
unsafe impl ZeroIsValid for u64 {}
// SAFETY: as above.
unsafe impl ZeroIsValid for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl ZeroIsValid for std::sync::atomic::AtomicU64 {}
// SAFETY: an array of such values.
unsafe impl<T: ZeroIsValid, const N: usize> ZeroIsValid for [T; N] {}

/// `len` zeros of `T` in an anonymous mapping, which the kernel fills page
/// by page as it is first written, asked to use huge pages (Linux).
pub(super) struct Zeroed<T> {
    map: MmapMut,
    len: usize,
    item: PhantomData<T>,
}

impl<T: ZeroIsValid> Zeroed<T> {
    pub(super) fn new(len: usize) -> Zeroed<T> {
        let layout = std::alloc::Layout::array::<T>(len.max(1)).expect("table size");
        // Out of memory is handled as by the allocator: the process stops.
        let map = MmapMut::map_anon(layout.size())
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(layout));
        // Only a hint: without huge pages the table works the same, slower.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        assert!(map.as_ptr().cast::<T>().is_aligned());
        Zeroed {
            map,
            len,
            item: PhantomData,
        }
    }
}

impl<T: ZeroIsValid> Deref for Zeroed<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the mapping holds `len` values of `T` (page-aligned, so
        // aligned for T), zeros being valid ones; it lives as long as self.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast(), self.len) }
    }
}

impl<T: ZeroIsValid> DerefMut for Zeroed<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().cast(), self.len) }
    }
}
