//! The plan of a transfer: from what each fd is, what the transfer asks for and what the
//! backend can do, how its bytes will move. Pure: no syscalls, unit-tested without a kernel.
//!
//! Every decision about a transfer's shape is made here, once, for both backends:
//! - the route (machine.rs): `Records` for a datagram/seqpacket source, `Direct` when one
//!   side is a pipe, `Copy` when asked or small, else `Pipe`;
//! - the syscall behind a direct transfer (`Via`): the fallback serves file sources as Go
//!   does (sendfile to sockets, copy_file_range to files);
//! - the mode: linked io_uring chains or inline steps;
//! - whether a file → socket transfer sends cached chunks inline and offloads cold ones.

use crate::error::{Error, Op, Result};
use crate::sys::{FdInfo, FdKind};
use crate::transfer::Strategy;

use super::machine::Route;

/// Who carries out a started transfer's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Linked io_uring operations, run by the kernel (io-wq).
    Chain,
    /// The engine's thread, after readiness.
    Inline,
}

/// The syscall behind a direct transfer (no staging pipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// `splice(2)`: one side is a pipe.
    Splice,
    /// `sendfile(2)`: regular file to socket.
    Sendfile,
    /// `copy_file_range(2)`: regular file to regular file.
    CopyFileRange,
}

impl Via {
    pub(crate) fn op(self) -> Op {
        match self {
            Via::Splice => Op::Splice,
            Via::Sendfile => Op::Sendfile,
            Via::CopyFileRange => Op::CopyFileRange,
        }
    }
}

/// What a queued transfer asks for, kept until it starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub(crate) length: Option<u64>,
    pub(crate) src_off: Option<u64>,
    pub(crate) dst_off: Option<u64>,
    pub(crate) strategy: Strategy,
    pub(crate) shutdown_dst: bool,
}

/// What the backend can do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    /// io_uring with `IORING_OP_SPLICE`: chains, and fills offloaded to io-wq.
    pub(crate) chains: bool,
    /// [`Builder::copy_threshold`](crate::Builder::copy_threshold).
    pub(crate) copy_threshold: u64,
}

/// Where a file source's next chunk starts, for the page-cache check of an offloading
/// transfer: the file position at start (no source offset given) and the size at start
/// (until end of file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FileFacts {
    pub(crate) pos_base: Option<u64>,
    pub(crate) size: Option<u64>,
}

/// How a transfer moves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) src: i32,
    pub(crate) dst: i32,
    pub(crate) route: Route,
    pub(crate) mode: Mode,
    pub(crate) via: Via,
    pub(crate) src_file: bool,
    pub(crate) dst_file: bool,
    pub(crate) dst_socket: bool,
    /// Copy chosen (`Strategy::Copy`, or `Auto` for a small message), for the stats.
    pub(crate) chose_copy: bool,
    /// A file sent to a socket: chunks in the page cache are sent inline with one
    /// `sendfile` (it cannot wait for the disk), other chunks are filled into the pipe by
    /// io-wq and drained inline as for sockets. Chains would hand every drain to a worker
    /// too, and a short drain into a full socket cancels the rest of the chain.
    pub(crate) offload: Option<FileFacts>,
    pub(crate) shutdown_dst: bool,
}

impl Plan {
    /// The plan of a transfer that failed before it started: nothing runs.
    pub(crate) fn failed(src: i32, dst: i32) -> Plan {
        Plan {
            src,
            dst,
            route: Route::Pipe,
            mode: Mode::Inline,
            via: Via::Splice,
            src_file: false,
            dst_file: false,
            dst_socket: false,
            chose_copy: false,
            offload: None,
            shutdown_dst: false,
        }
    }

    pub(crate) fn src_pollable(&self) -> bool {
        !self.src_file
    }

    pub(crate) fn dst_pollable(&self) -> bool {
        !self.dst_file
    }
}

/// Whether a transfer may offload its cold fills, so its [`FileFacts`] are worth reading.
pub(crate) fn may_offload(s: &FdInfo, d: &FdInfo, req: &Request, caps: Caps) -> bool {
    caps.chains
        && req.strategy == Strategy::Auto
        && s.kind == FdKind::File
        && d.kind == FdKind::Socket
        && !small(s, d, req, caps)
}

/// A small message between pollable endpoints is cheaper to copy than to splice through a
/// pipe (README, Performance: small transfers). A pipe on either side is one direct splice,
/// cheaper than read + write; a file source may block on the disk.
fn small(s: &FdInfo, d: &FdInfo, req: &Request, caps: Caps) -> bool {
    req.length.is_some_and(|n| n <= caps.copy_threshold)
        && base_route(s, d) == Route::Pipe
        && s.kind != FdKind::File
        && d.kind == FdKind::Socket
}

fn base_route(s: &FdInfo, d: &FdInfo) -> Route {
    if s.records {
        Route::Records
    } else if s.kind == FdKind::Pipe || d.kind == FdKind::Pipe {
        Route::Direct
    } else {
        Route::Pipe
    }
}

/// Plans a transfer whose endpoints passed [`check`]. `facts`: for a transfer that
/// [`may_offload`], what was read about the file (`None` when it could not be read: the
/// transfer then does not offload).
pub(crate) fn plan(
    (src, s): (i32, &FdInfo),
    (dst, d): (i32, &FdInfo),
    req: &Request,
    caps: Caps,
    facts: Option<FileFacts>,
) -> Plan {
    let mut route = base_route(s, d);
    let records = route == Route::Records;
    let copy = !records
        && (req.strategy == Strategy::Copy
            || (req.strategy == Strategy::Auto && small(s, d, req, caps)));
    if copy {
        route = Route::Copy;
    }
    // The fallback serves file sources as Go does: sendfile to sockets, copy_file_range
    // to files. The io_uring backend splices through its own 1 MiB pipes instead:
    // sendfile's internal pipe is the default 64 KiB.
    let mut via = Via::Splice;
    if !caps.chains && s.kind == FdKind::File && !copy && !records {
        via = match d.kind {
            FdKind::Socket => Via::Sendfile,
            FdKind::File => Via::CopyFileRange,
            _ => Via::Splice,
        };
        if via != Via::Splice {
            route = Route::Direct;
        }
    }
    let offload = facts.filter(|_| may_offload(s, d, req, caps) && route == Route::Pipe);
    let mode = match req.strategy {
        _ if !caps.chains || copy || records || offload.is_some() => Mode::Inline,
        Strategy::Chain => Mode::Chain,
        Strategy::Auto if s.kind == FdKind::File => Mode::Chain,
        Strategy::Inline | Strategy::Auto | Strategy::Copy => Mode::Inline,
    };
    if offload.is_some() {
        // Cached chunks go out with one sendfile (see step.rs).
        via = Via::Sendfile;
    }
    Plan {
        src,
        dst,
        route,
        mode,
        via,
        src_file: s.kind == FdKind::File,
        dst_file: d.kind == FdKind::File,
        dst_socket: d.kind == FdKind::Socket,
        chose_copy: copy,
        offload,
        shutdown_dst: req.shutdown_dst,
    }
}

/// Refuses endpoints that cannot be moved safely, with a message naming the side.
pub(crate) fn check(
    (src, s): (i32, &FdInfo),
    (dst, d): (i32, &FdInfo),
    req: &Request,
) -> Result<()> {
    let invalid = |msg: String| Err(Error::InvalidInput(msg));
    let (sk, dk) = (s.kind, d.kind);
    if sk == FdKind::Directory {
        return invalid(format!("source fd {src} is a directory"));
    }
    if dk == FdKind::Directory {
        return invalid(format!("destination fd {dst} is a directory"));
    }
    if sk == FdKind::Pipe && dk == FdKind::Pipe && s.id == d.id {
        return invalid(format!(
            "source fd {src} and destination fd {dst} are the same pipe"
        ));
    }
    if req.src_off.is_some() && sk != FdKind::File {
        return invalid(format!(
            "source fd {src}: offsets apply only to regular files"
        ));
    }
    if req.dst_off.is_some() && dk != FdKind::File {
        return invalid(format!(
            "destination fd {dst}: offsets apply only to regular files"
        ));
    }
    if s.flags & libc::O_ACCMODE == libc::O_WRONLY {
        return invalid(format!("source fd {src} is not open for reading"));
    }
    if d.flags & libc::O_ACCMODE == libc::O_RDONLY {
        return invalid(format!("destination fd {dst} is not open for writing"));
    }
    if req.shutdown_dst && dk != FdKind::Socket {
        return invalid(format!(
            "destination fd {dst}: shutdown_destination applies only to sockets"
        ));
    }
    // A byte stream written into a datagram or seqpacket socket would be cut into records
    // wherever a write happened to end: refuse it. A record source feeds it one record per
    // write.
    if d.records && !s.records {
        return invalid(format!(
            "destination fd {dst} is a datagram or seqpacket socket and source fd {src} is \
             a byte stream: records would be cut at arbitrary points"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: FdKind) -> FdInfo {
        FdInfo {
            kind,
            id: (1, kind as u64),
            flags: libc::O_RDWR,
            records: false,
        }
    }

    fn req(strategy: Strategy, length: Option<u64>) -> Request {
        Request {
            length,
            src_off: None,
            dst_off: None,
            strategy,
            shutdown_dst: false,
        }
    }

    const URING: Caps = Caps {
        chains: true,
        copy_threshold: 0,
    };
    const EPOLL: Caps = Caps {
        chains: false,
        copy_threshold: 0,
    };

    fn p(s: FdKind, d: FdKind, r: Request, caps: Caps, facts: Option<FileFacts>) -> Plan {
        plan((3, &info(s)), (4, &info(d)), &r, caps, facts)
    }

    #[test]
    fn file_to_socket_offloads_on_io_uring_and_sendfiles_on_the_fallback() {
        let auto = req(Strategy::Auto, None);
        let f = Some(FileFacts::default());
        let u = p(FdKind::File, FdKind::Socket, auto, URING, f);
        assert_eq!(
            (u.route, u.mode, u.via),
            (Route::Pipe, Mode::Inline, Via::Sendfile)
        );
        assert!(u.offload.is_some());
        // Facts unreadable: no offload, so Auto chains the file.
        let u = p(FdKind::File, FdKind::Socket, auto, URING, None);
        assert_eq!((u.mode, u.via, u.offload), (Mode::Chain, Via::Splice, None));
        let e = p(FdKind::File, FdKind::Socket, auto, EPOLL, f);
        assert_eq!(
            (e.route, e.mode, e.via),
            (Route::Direct, Mode::Inline, Via::Sendfile)
        );
        assert_eq!(e.offload, None);
        let e = p(FdKind::File, FdKind::File, auto, EPOLL, None);
        assert_eq!((e.route, e.via), (Route::Direct, Via::CopyFileRange));
    }

    #[test]
    fn sockets_run_inline_unless_chains_are_asked_for() {
        let s = FdKind::Socket;
        assert_eq!(
            p(s, s, req(Strategy::Auto, None), URING, None).mode,
            Mode::Inline
        );
        assert_eq!(
            p(s, s, req(Strategy::Chain, None), URING, None).mode,
            Mode::Chain
        );
        assert_eq!(
            p(s, s, req(Strategy::Chain, None), EPOLL, None).mode,
            Mode::Inline
        );
        let pipe = p(FdKind::Pipe, s, req(Strategy::Auto, None), URING, None);
        assert_eq!(pipe.route, Route::Direct);
    }

    #[test]
    fn small_known_lengths_between_sockets_are_copied_past_the_threshold_only() {
        let s = FdKind::Socket;
        let caps = Caps {
            chains: true,
            copy_threshold: 4096,
        };
        let small = p(s, s, req(Strategy::Auto, Some(4096)), caps, None);
        assert_eq!((small.route, small.chose_copy), (Route::Copy, true));
        let big = p(s, s, req(Strategy::Auto, Some(4097)), caps, None);
        assert_eq!(big.route, Route::Pipe);
        let file = p(FdKind::File, s, req(Strategy::Auto, Some(10)), caps, None);
        assert_ne!(file.route, Route::Copy);
    }

    #[test]
    fn record_sources_take_the_record_route_on_every_strategy() {
        let mut dgram = info(FdKind::Socket);
        dgram.records = true;
        for strategy in [
            Strategy::Auto,
            Strategy::Chain,
            Strategy::Inline,
            Strategy::Copy,
        ] {
            for caps in [URING, EPOLL] {
                let r = req(strategy, None);
                let pl = plan((3, &dgram), (4, &info(FdKind::Socket)), &r, caps, None);
                assert_eq!((pl.route, pl.mode), (Route::Records, Mode::Inline));
            }
        }
        // A stream into a record socket is refused; records into a stream are fine.
        let r = req(Strategy::Auto, None);
        assert!(check((3, &info(FdKind::Socket)), (4, &dgram), &r).is_err());
        assert!(check((3, &dgram), (4, &info(FdKind::Socket)), &r).is_ok());
    }

    #[test]
    fn checks_name_the_side() {
        let r = req(Strategy::Auto, None);
        let dir = info(FdKind::Directory);
        let sock = info(FdKind::Socket);
        let msg = |e: Result<()>| match e {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(msg(check((3, &dir), (4, &sock), &r)).starts_with("source fd 3"));
        assert!(msg(check((3, &sock), (4, &dir), &r)).starts_with("destination fd 4"));
        let pipe = info(FdKind::Pipe);
        assert!(msg(check((3, &pipe), (4, &pipe), &r)).contains("same pipe"));
        let mut shut = r;
        shut.shutdown_dst = true;
        assert!(msg(check((3, &sock), (4, &pipe), &shut)).contains("shutdown_destination"));
    }
}
