//! Record: one whole record of a datagram or seqpacket socket into the engine's buffer.
//! Splicing such a socket into a pipe keeps the part of a record that fits and drops the
//! rest (see KERNEL_REQUIREMENTS.md), so records are never spliced. Inline only.

use super::copy::{self, CopyBuf};
use super::{OpResult, res};
use crate::sys;

/// What taking the next record gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// The next record's length, before anything was taken: `admit` refused it.
    Refused,
    /// The record (or end of stream, `Ok(0)`), or the errno.
    Whole(OpResult),
    /// Another reader took the peeked record and this one was cut to `len` bytes: the
    /// part that fit is in the buffer, the rest is lost.
    Cut(usize),
}

/// Takes the next record whole into `b`, grown to hold it, if `admit(length)` agrees.
pub(crate) fn fill(fd: i32, b: &mut Option<CopyBuf>, admit: impl FnOnce(usize) -> bool) -> Taken {
    let len = match res(sys::peek_record_len(fd)) {
        Ok(n) => n,
        Err(e) => return Taken::Whole(Err(e)),
    };
    if len > 0 && !admit(len) {
        return Taken::Refused;
    }
    let buf = copy::buffer(b, len);
    if buf.data.len() < len {
        // Past the copy buffer's size: a record is taken whole, so the buffer holds the
        // largest seen.
        buf.data = vec![0u8; len].into_boxed_slice();
    }
    // Length 0 is end of stream, or an empty record, which this takes off the socket.
    let r = res(sys::recv_record(fd, &mut buf.data[..len]));
    let n = match r {
        Ok(n) => n,
        Err(e) => return Taken::Whole(Err(e)),
    };
    buf.start = 0;
    buf.end = n.min(len);
    if n > len {
        Taken::Cut(len)
    } else {
        Taken::Whole(Ok(n))
    }
}
