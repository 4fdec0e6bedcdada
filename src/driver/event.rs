//! What a driver reports, and what a round's operations name.

use std::os::fd::RawFd;

use crate::core::id::Id;
use crate::op::{Dir, OpKind};

/// What a driver reports.
#[derive(Debug)]
pub(crate) enum Event {
    /// A readiness wait ended (epoll): the event bits, or the errno of a wait that could
    /// not be made.
    Ready {
        id: Id,
        dir: Dir,
        res: Result<u32, i32>,
    },
    /// Every operation of an io_uring round has completed: each one's CQE result, in
    /// submission order (`-ECANCELED`: not run). Give `ops` back with
    /// `Driver::recycle`.
    Round { id: Id, ops: Vec<(OpKind, i32)> },
}

/// What a round's SQEs name: the endpoints, the engine's pipe, the machine's offsets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundFds {
    pub(crate) src: RawFd,
    pub(crate) dst: RawFd,
    /// (read end, write end).
    pub(crate) pipe: Option<(RawFd, RawFd)>,
    pub(crate) src_off: Option<u64>,
    pub(crate) dst_off: Option<u64>,
}
