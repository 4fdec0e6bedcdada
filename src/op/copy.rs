//! Copy: `read(2)` into an engine buffer, `write(2)` out; no pipe. For pairs splice
//! refuses, for [`Strategy::Copy`](crate::Strategy::Copy) and small messages. Inline only.

use super::{OpResult, res};
use crate::sys::{self, SigpipeGuard};

/// The largest read/write buffer of a copy.
const COPY_BUF: usize = 256 << 10;
/// Copy buffers up to this size are freed while their transfer waits for its source.
pub(crate) const KEEP_BUF: usize = 64 << 10;

/// A transfer's read/write buffer: `data[start..end]` is read and not yet written.
#[derive(Debug)]
pub(crate) struct CopyBuf {
    pub(crate) data: Box<[u8]>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The transfer's copy buffer, made on first use with room for `want` bytes (at most
/// [`COPY_BUF`]): a small message gets a buffer its size.
pub(crate) fn buffer(b: &mut Option<CopyBuf>, want: usize) -> &mut CopyBuf {
    b.get_or_insert_with(|| CopyBuf {
        data: vec![0u8; want.clamp(1, COPY_BUF)].into_boxed_slice(),
        start: 0,
        end: 0,
    })
}

/// `read(2)`/`pread(2)` of up to `len` bytes into an empty buffer.
pub(crate) fn fill(src: i32, off: Option<u64>, b: &mut Option<CopyBuf>, len: usize) -> OpResult {
    let buf = buffer(b, len);
    let len = len.min(buf.data.len());
    let r = res(sys::read(src, off, &mut buf.data[..len]));
    if let Ok(n) = r {
        buf.start = 0;
        buf.end = n;
    }
    r
}

/// Where a copy's drain writes, and how.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sink {
    pub(crate) fd: i32,
    pub(crate) off: Option<u64>,
    pub(crate) socket: bool,
    /// The engine's pipe, if staged bytes may be in it.
    pub(crate) pipe_r: Option<i32>,
}

/// Writes what the buffer holds. When it is empty but bytes are staged, they are in the
/// pipe (splice refused the destination after a fill), so they are read out of the pipe
/// first.
pub(crate) fn drain(b: &mut Option<CopyBuf>, to: Sink, guard: SigpipeGuard) -> OpResult {
    let buf = buffer(b, COPY_BUF);
    if buf.start == buf.end {
        let Some(pfd) = to.pipe_r else {
            return Err(libc::EIO);
        };
        let n = res(sys::read(pfd, None, &mut buf.data))?;
        buf.start = 0;
        buf.end = n;
    }
    let chunk = &buf.data[buf.start..buf.end];
    // Sockets are written with MSG_NOSIGNAL; pipes and others need the guard.
    let r = guard.run(!to.socket, || {
        res(sys::write(to.fd, to.off, chunk, to.socket))
    });
    if let Ok(n) = r {
        buf.start += n;
    }
    r
}
