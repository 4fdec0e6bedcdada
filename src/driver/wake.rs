//! What both drivers keep the same way: the wake-up eventfd, the transfer timer's state,
//! and how long a blocking wait may sleep.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::error::{Error, Op, Result};
use crate::sys;

/// The eventfd that makes the engine's fd readable, and whether it may be readable now.
#[derive(Debug)]
pub(crate) struct Wake {
    fd: OwnedFd,
    dirty: bool,
}

impl Wake {
    pub(crate) fn new() -> Result<Wake> {
        let fd = sys::eventfd().map_err(|e| Error::io(Op::Eventfd, -1, e))?;
        Ok(Wake { fd, dirty: false })
    }

    /// Makes it readable (until cleared).
    pub(crate) fn signal(&mut self) {
        if !self.dirty {
            sys::eventfd_signal(self.fd.as_raw_fd());
            self.dirty = true;
        }
    }

    /// Notes that something else (the kernel, for io_uring CQEs) may have signalled it.
    pub(crate) fn mark(&mut self) {
        self.dirty = true;
    }

    /// Makes it quiet, with a syscall only if it may be readable.
    pub(crate) fn clear(&mut self) {
        if std::mem::take(&mut self.dirty) {
            sys::eventfd_clear(self.fd.as_raw_fd());
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// When the driver's timer for the earliest transfer timeout will fire.
#[derive(Debug, Default)]
pub(crate) struct Timer {
    armed: Option<Instant>,
}

impl Timer {
    /// Whether the timer must be (re)armed for `at`: nothing armed, or armed later.
    pub(crate) fn needs(&self, at: Instant) -> bool {
        self.armed.is_none_or(|a| a > at)
    }

    pub(crate) fn armed(&mut self, at: Instant) {
        self.armed = Some(at);
    }

    pub(crate) fn fired(&mut self) {
        self.armed = None;
    }
}

/// How long a blocking wait may sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sleep {
    /// The caller's deadline has passed: do not block.
    Never,
    /// At most this long.
    For(Duration),
    /// Until an event.
    Unbounded,
}

impl Sleep {
    /// Until the caller's deadline or the earliest transfer timer, whichever comes first.
    pub(crate) fn until(deadline: Option<Instant>, timer: Option<Instant>) -> Sleep {
        let now = Instant::now();
        let left = match deadline {
            Some(d) => match d.checked_duration_since(now) {
                Some(l) if !l.is_zero() => Some(l),
                _ => return Sleep::Never,
            },
            None => None,
        };
        let to_timer = timer.map(|t| t.saturating_duration_since(now));
        match (left, to_timer) {
            (Some(a), Some(b)) => Sleep::For(a.min(b)),
            (Some(a), None) | (None, Some(a)) => Sleep::For(a),
            (None, None) => Sleep::Unbounded,
        }
    }

    /// As a wait's timeout (`None`: no limit).
    pub(crate) fn timeout(self) -> Option<Duration> {
        match self {
            Sleep::Never => Some(Duration::ZERO),
            Sleep::For(d) => Some(d),
            Sleep::Unbounded => None,
        }
    }
}
