//! Copy range: regular file → regular file in the kernel (`copy_file_range(2)`; reflinks
//! where the filesystem has them). Inline only, on the fallback: io_uring's chains splice
//! through the engine's pipe instead.

use super::{OpResult, res};
use crate::sys;

/// `copy_file_range(2)`. It answers `EBADF` for an `O_APPEND` destination (the fds were
/// checked open at start): a refusal of the pair, reported as splice's `EINVAL` so the
/// state machine falls back to a copy as it does for splice.
pub(crate) fn call(
    src: i32,
    src_off: Option<u64>,
    dst: i32,
    dst_off: Option<u64>,
    len: usize,
) -> OpResult {
    match res(sys::copy_file_range(src, src_off, dst, dst_off, len)) {
        Err(libc::EBADF) => Err(libc::EINVAL),
        r => r,
    }
}
