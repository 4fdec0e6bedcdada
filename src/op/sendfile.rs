//! Sendfile: regular file → socket, with no pipe of the engine's. Inline only: io_uring has
//! no sendfile opcode (its splice through the engine's own pipes is the ring's form).
//! Used by the fallback for every file → socket transfer (as Go's `io.Copy` does) and by
//! io_uring's `Auto` for chunks already in the page cache.

use super::{OpResult, res};
use crate::sys::{self, SigpipeGuard};

/// `sendfile(2)`, guarded against `SIGPIPE`.
pub(crate) fn call(
    src: i32,
    off: Option<u64>,
    dst: i32,
    len: usize,
    guard: SigpipeGuard,
) -> OpResult {
    guard.run(true, || res(sys::sendfile(dst, src, off, len)))
}
