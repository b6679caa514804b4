//! A chunk's memory, and the only `unsafe` of the engine: a block of
//! zeroed bytes owned like a `Box<[u8]>`, either a memory mapping of its own
//! (whole pages) or an allocation.
//!
//! The queue above reads and writes a block only through `Deref` and
//! `DerefMut`, so every raw-pointer use is here, next to the reasoning that
//! makes it sound: the block owns its `len` bytes alone from `zeroed` until
//! `drop`, and hands out references only while it is borrowed.

use std::alloc::Layout;
use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use nix::unistd::{SysconfVar, sysconf};

/// A chunk could not be allocated: memory is exhausted (or limited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

/// A chunk's memory: zeroed when allocated, and freed (not wiped: see
/// `Chunk`) on drop.
///
/// A chunk of whole pages (the default 4 KiB, or 64 KiB, 1 MiB...) is a
/// mapping of its own, so it starts on a page: a read answered from it
/// spans as few pages as it can, and the kernel pins each one it spans.
/// Other sizes come from the allocator, which puts no header between them
/// and wastes nothing; aligning those too would cost up to a page each.
pub(crate) struct Block {
    ptr: NonNull<u8>,
    len: usize,
    mapped: bool,
}

// SAFETY: a `Block` owns its memory alone, like a `Box<[u8]>`, which is
// `Send` and `Sync`.
unsafe impl Send for Block {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for Block {}

impl Block {
    pub(crate) fn zeroed(len: usize) -> Result<Self, OutOfMemory> {
        let size = NonZeroUsize::new(len).expect("chunks are never empty");
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| usize::try_from(p).ok())
            .unwrap_or(4096);
        if len.is_multiple_of(page) {
            // SAFETY: a new private anonymous mapping aliases no other
            // memory; it is zero-filled, and committed page by page as a
            // generator first fills it.
            let ptr = unsafe {
                mmap_anonymous(
                    None,
                    size,
                    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                    MapFlags::MAP_PRIVATE,
                )
            }
            .map_err(|_| OutOfMemory)?;
            return Ok(Block {
                ptr: ptr.cast(),
                len,
                mapped: true,
            });
        }
        // SAFETY: the layout of `[u8; len]` has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(Self::layout(len)) };
        // Zeroed by calloc, which leaves fresh pages untouched as well.
        let ptr = NonNull::new(ptr).ok_or(OutOfMemory)?;
        Ok(Block {
            ptr,
            len,
            mapped: false,
        })
    }

    fn layout(len: usize) -> Layout {
        Layout::array::<u8>(len).expect("a chunk size fits in memory")
    }
}

impl Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised bytes that this block
        // owns until it is dropped.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Block {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only
        // reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: mapped with this length in `zeroed`, unmapped only
            // here, and no reference into it outlives `self`.
            // munmap fails only on bad arguments, which these are not.
            let _ = unsafe { munmap(self.ptr.cast(), self.len) };
        } else {
            // SAFETY: allocated by the global allocator with this layout,
            // in `zeroed`, and freed only here.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
        }
    }
}
