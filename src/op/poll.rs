//! Poll: wait until a side is ready. io_uring: `IORING_OP_POLL_ADD` (one-shot); epoll: a
//! one-shot interest. Both report through [`outcome`], so a wait ends the same way on
//! either backend:
//! - readable/writable, or `POLLERR`/`POLLHUP` (the next syscall reports the real error or
//!   end of file, with its errno): ready;
//! - `POLLNVAL` (the fd is not open): `EBADF`;
//! - the wait itself failed (a CQE's `-errno`, `epoll_ctl`'s errno): that errno.
//!
//! The transfer then fails on the side it waited for, with [`Op::Poll`](crate::Op::Poll).

use io_uring::{opcode, squeue, types};

use super::Dir;

/// `IORING_OP_POLL_ADD` for `dir` on `fd`.
pub(crate) fn sqe(fd: i32, dir: Dir) -> squeue::Entry {
    let events = match dir {
        Dir::Read => libc::POLLIN,
        Dir::Write => libc::POLLOUT,
    };
    opcode::PollAdd::new(types::Fd(fd), events as u32).build()
}

/// The epoll interest for the waits on one fd.
pub(crate) fn epoll_interest(readers: bool, writers: bool) -> u32 {
    let mut events = libc::EPOLLONESHOT as u32;
    if readers {
        events |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    }
    if writers {
        events |= libc::EPOLLOUT as u32;
    }
    events
}

/// Which waits an epoll event ends: `(readers, writers)`. An error or hang-up ends both.
pub(crate) fn epoll_woken(bits: u32) -> (bool, bool) {
    let err = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
    let read = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 | err;
    let write = libc::EPOLLOUT as u32 | err;
    (bits & read != 0, bits & write != 0)
}

/// What a finished wait means: `Ok` ready, or the errno that fails the transfer.
/// `res` is the poll mask (io_uring's CQE, epoll's event bits; the low bits agree:
/// `EPOLLIN == POLLIN`, …) or the errno of a wait that could not be made.
pub(crate) fn outcome(res: Result<u32, i32>) -> Result<(), i32> {
    match res {
        Ok(mask) if mask & libc::POLLNVAL as u32 != 0 => Err(libc::EBADF),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_hangups_are_ready_and_only_nval_fails() {
        for bits in [libc::POLLIN, libc::POLLOUT, libc::POLLERR, libc::POLLHUP] {
            assert_eq!(outcome(Ok(bits as u32)), Ok(()), "{bits:#x}");
        }
        assert_eq!(outcome(Ok(libc::POLLNVAL as u32)), Err(libc::EBADF));
        assert_eq!(outcome(Err(libc::ENOMEM)), Err(libc::ENOMEM));
    }

    #[test]
    fn an_epoll_error_wakes_both_directions() {
        assert_eq!(epoll_woken(libc::EPOLLERR as u32), (true, true));
        assert_eq!(epoll_woken(libc::EPOLLHUP as u32), (true, true));
        assert_eq!(epoll_woken(libc::EPOLLIN as u32), (true, false));
        assert_eq!(epoll_woken(libc::EPOLLOUT as u32), (false, true));
        assert_eq!(epoll_woken(libc::EPOLLRDHUP as u32), (true, false));
        let both = epoll_interest(true, true);
        assert_ne!(both & libc::EPOLLIN as u32, 0);
        assert_ne!(both & libc::EPOLLOUT as u32, 0);
        assert_ne!(both & libc::EPOLLONESHOT as u32, 0);
    }
}
