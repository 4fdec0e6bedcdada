//! Endpoint: one side of a transfer, and who keeps its file descriptor open.

use std::fmt;
use std::fs::File;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::sys::FdInfo;

/// One side of a [`Transfer`](crate::Transfer): a file descriptor the engine keeps open for as
/// long as any operation of the transfer may still name it, and hands back in the
/// [`Completion`](crate::Completion).
///
/// - [`Endpoint::owned`] (or `From` a `TcpStream`, `File`, `OwnedFd`, …): the engine owns the
///   fd until the completion returns it.
/// - [`Endpoint::shared`]: an `Arc<OwnedFd>`, so one socket can be the source of one transfer
///   and the destination of another (both directions of a proxy) at once.
/// - [`Endpoint::from_raw_fd`] (unsafe): the caller keeps the fd open.
///
/// Starting a transfer costs `fstat` plus one `ioctl`/`fcntl` per fd (its kind, and
/// `O_NONBLOCK` set on sockets and pipes). An owned or shared endpoint handed back by a
/// [`Completion`](crate::Completion) remembers what was learnt, so submitting it again costs
/// neither; nor does a shared fd that another transfer in flight already holds (the two
/// directions of a proxied connection).
pub struct Endpoint {
    hold: Hold,
    fd: RawFd,
    /// What a transfer learnt about this fd (owned and shared endpoints only), so the same
    /// endpoint submitted again, from a completion, starts without asking the kernel.
    pub(crate) known: Option<FdInfo>,
}

enum Hold {
    Owned(OwnedFd),
    Shared(Arc<OwnedFd>),
    Raw,
}

impl Endpoint {
    /// An endpoint that owns its fd until the completion hands it back.
    pub fn owned(fd: impl Into<OwnedFd>) -> Endpoint {
        let fd: OwnedFd = fd.into();
        Endpoint {
            fd: fd.as_raw_fd(),
            hold: Hold::Owned(fd),
            known: None,
        }
    }

    /// An endpoint that shares an fd: the engine holds one reference until the completion.
    pub fn shared(fd: Arc<OwnedFd>) -> Endpoint {
        Endpoint {
            fd: fd.as_raw_fd(),
            hold: Hold::Shared(fd),
            known: None,
        }
    }

    /// An endpoint for a raw fd that the caller keeps open.
    ///
    /// # Safety
    /// `fd` must stay open, and must not be closed and reused for another file, until the
    /// [`Completion`](crate::Completion) of the transfer that names it has been returned by
    /// `poll`/`wait`, or until the `Engine` has been dropped. The kernel resolves the fd of a
    /// linked io_uring operation only when that operation starts, which may be long after
    /// `submit`; a closed and reused fd number would make it read or write an unrelated file.
    #[allow(unsafe_code)] // the contract is the caller's; nothing unsafe happens here
    pub unsafe fn from_raw_fd(fd: RawFd) -> Endpoint {
        Endpoint {
            hold: Hold::Raw,
            fd,
            known: None,
        }
    }

    /// A stand-in naming no fd (`-1`): the `destination` of a fan-out's completion, whose
    /// destinations are in its branches.
    pub(crate) fn detached() -> Endpoint {
        Endpoint {
            hold: Hold::Raw,
            fd: -1,
            known: None,
        }
    }

    /// Whether what was learnt about the fd may be kept with the endpoint: not for a raw
    /// fd, which may be closed and its number reused once its transfer has completed.
    pub(crate) fn may_remember(&self) -> bool {
        !matches!(self.hold, Hold::Raw)
    }

    /// For a shared endpoint, the identity of the `Arc` it holds: while any transfer holds
    /// that `Arc`, the fd it names stays open and means the same file, so what the engine
    /// learnt about it (kind, flags) can be reused without asking the kernel again.
    pub(crate) fn shared_key(&self) -> Option<usize> {
        match &self.hold {
            Hold::Shared(a) => Some(Arc::as_ptr(a) as usize),
            _ => None,
        }
    }

    /// The owned fd back, if this endpoint owned one.
    pub fn into_owned_fd(self) -> Option<OwnedFd> {
        match self.hold {
            Hold::Owned(fd) => Some(fd),
            _ => None,
        }
    }

    /// The owned fd back as the type it came in as (or any other that takes an `OwnedFd`):
    /// `endpoint.into_typed::<TcpStream>()`. `None` for a shared or raw endpoint.
    pub fn into_typed<T: From<OwnedFd>>(self) -> Option<T> {
        self.into_owned_fd().map(T::from)
    }

    /// The shared fd back, if this endpoint was made by [`Endpoint::shared`].
    pub fn into_shared_fd(self) -> Option<Arc<OwnedFd>> {
        match self.hold {
            Hold::Shared(fd) => Some(fd),
            _ => None,
        }
    }
}

impl AsRawFd for Endpoint {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.hold {
            Hold::Owned(_) => "owned",
            Hold::Shared(_) => "shared",
            Hold::Raw => "raw",
        };
        f.debug_struct("Endpoint")
            .field("fd", &self.fd)
            .field("hold", &how)
            .finish()
    }
}

impl From<OwnedFd> for Endpoint {
    fn from(fd: OwnedFd) -> Endpoint {
        Endpoint::owned(fd)
    }
}

impl From<Arc<OwnedFd>> for Endpoint {
    fn from(fd: Arc<OwnedFd>) -> Endpoint {
        Endpoint::shared(fd)
    }
}

macro_rules! owned_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Endpoint {
            fn from(x: $t) -> Endpoint {
                Endpoint::owned(x)
            }
        }
    )*};
}
owned_from!(
    File,
    TcpStream,
    UnixStream,
    std::os::unix::net::UnixDatagram,
    std::net::UdpSocket,
    std::io::PipeReader,
    std::io::PipeWriter,
    std::process::ChildStdin,
    std::process::ChildStdout,
    std::process::ChildStderr
);
