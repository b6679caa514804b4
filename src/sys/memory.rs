//! Memory of pilfered's own, outside the allocator: private anonymous
//! mappings (the io_uring buffers shared with the kernel, the chunk queue's
//! bytes), and the equal pieces one mapping is cut into for the queue.
//!
//! Every raw-pointer use of that memory is here, next to the reasoning that
//! makes it sound: a [`Mapping`] is owned alone from `mmap` to `munmap`, and
//! a [`Piece`] owns its bytes alone, disjoint from every other piece, while
//! the mapping they were cut from lives on in an `Arc` until the last piece
//! is dropped.
//!
//! The file imports nothing of this crate: `tests/queue_shuttle.rs`
//! compiles it next to the queue.

use std::io;
use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags, madvise, mmap_anonymous, munmap};
use nix::unistd::{SysconfVar, sysconf};

/// The size of a memory page (4096 unless the system says otherwise).
pub(crate) fn page_size() -> usize {
    sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096)
}

/// A private anonymous mapping of `len` bytes, owned alone and unmapped on
/// drop (or never: [`Mapping::leak`]).
///
/// It starts zero-filled on a page boundary; its pages are committed as
/// they are first written. It is left out of core dumps
/// (`MADV_DONTDUMP`), and a child forked from the process sees it zeroed
/// (`MADV_WIPEONFORK`): the random bytes in it are never written anywhere
/// else, nor held by two processes. (Both are refused by no Linux since
/// 4.14; should one be, the mapping is used without it.)
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` owns its memory alone, like a `Box<[u8]>`, which is
// `Send` and `Sync`; shared references only read it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes, or fails (out of memory, or `len` is 0).
    pub(crate) fn new(len: usize) -> io::Result<Mapping> {
        let size = NonZeroUsize::new(len).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a new private anonymous mapping aliases no other memory.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }?;
        for advice in [MmapAdvise::MADV_DONTDUMP, MmapAdvise::MADV_WIPEONFORK] {
            // SAFETY: the advice applies to the mapping just made, and
            // neither changes what it holds for this process.
            let _ = unsafe { madvise(ptr, len, advice) };
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Where the mapping starts, to hand to the kernel.
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The mapping's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The mapping's bytes. (A caller that lent them to the kernel must
    /// know that the kernel is not writing them meanwhile.)
    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `len` bytes mapped until drop, and
        // `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Leaves the memory mapped until the process exits: for memory the
    /// kernel may still write into, which must not become anything else.
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped with this length in `new`, unmapped only here, and
        // no reference into it outlives `self` (pieces hold the mapping).
        // munmap fails only on bad arguments, which these are not.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// `len` bytes of a mapping cut by [`pieces`], owned alone like a
/// `Box<[u8]>`: no other piece overlaps them. The mapping is unmapped when
/// its last piece is dropped; a piece is not wiped on drop (its owner
/// wipes what it wrote).
pub(crate) struct Piece {
    ptr: NonNull<u8>,
    len: usize,
    _mapping: Arc<Mapping>,
}

// SAFETY: a piece owns its bytes alone, like a `Box<[u8]>`, which is `Send`
// and `Sync`; shared references only read them.
unsafe impl Send for Piece {}
// SAFETY: as above.
unsafe impl Sync for Piece {}

/// One mapping cut into `count` pieces of `size` bytes each, back to back,
/// zeroed: pieces of whole pages start on a page. Fails if memory is short.
pub(crate) fn pieces(size: usize, count: usize) -> io::Result<impl Iterator<Item = Piece>> {
    let total = size
        .checked_mul(count)
        .and_then(|n| n.checked_next_multiple_of(page_size()))
        .ok_or(io::ErrorKind::OutOfMemory)?;
    let mapping = Arc::new(Mapping::new(total)?);
    Ok((0..count).map(move |i| Piece {
        // SAFETY: `i * size + size <= total`: the piece lies inside the
        // mapping, and pieces of different `i` do not overlap.
        ptr: unsafe { mapping.ptr.add(i * size) },
        len: size,
        _mapping: mapping.clone(),
    }))
}

impl Deref for Piece {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` bytes of a mapping kept alive by
        // `_mapping`, which no other piece or reference touches.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Piece {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only
        // reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` of the mapping that holds `addr`, from
    /// `/proc/self/smaps`.
    fn vm_flags(addr: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&addr);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().map(String::from).collect();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn pieces_are_disjoint_zeroed_and_page_aligned_when_whole_pages() {
        let page = page_size();
        for size in [64, 192, 4032, 6016, page, 2 * page, 1 << 20] {
            let mut all: Vec<Piece> = pieces(size, 5).unwrap().collect();
            for (i, p) in all.iter_mut().enumerate() {
                assert_eq!(p.len(), size);
                assert!(p.iter().all(|&b| b == 0));
                p.fill(u8::try_from(i + 1).unwrap());
                if size.is_multiple_of(page) {
                    assert_eq!(p.as_ptr() as usize % page, 0, "{size}-byte piece");
                }
            }
            for (i, p) in all.iter().enumerate() {
                assert!(
                    p.iter().all(|&b| usize::from(b) == i + 1),
                    "piece {i} overwritten"
                );
            }
            // The mapping outlives all but its last piece.
            let last = all.pop().unwrap();
            drop(all);
            assert!(last.iter().all(|&b| b == 5));
        }
    }

    /// The random bytes stay out of core dumps and forked children.
    #[test]
    fn mappings_are_kept_from_core_dumps_and_children() {
        let mut m = Mapping::new(3 * page_size()).unwrap();
        m.bytes()[0] = 1;
        let flags = vm_flags(m.as_mut_ptr() as usize);
        assert!(
            flags.iter().any(|f| f == "dd"),
            "no MADV_DONTDUMP: {flags:?}"
        );
        assert!(
            flags.iter().any(|f| f == "wf"),
            "no MADV_WIPEONFORK: {flags:?}"
        );
        let p = pieces(64, 3).unwrap().next().unwrap();
        let flags = vm_flags(p.as_ptr() as usize);
        assert!(flags.iter().any(|f| f == "dd") && flags.iter().any(|f| f == "wf"));
    }

    #[test]
    fn zero_and_impossible_sizes_fail() {
        assert!(Mapping::new(0).is_err());
        assert!(pieces(usize::MAX / 2, 3).is_err());
    }
}
