//! Shared by the examples that accept many connections at once.

use std::io;
use std::net::{SocketAddr, TcpListener};

/// A listener on an IPv4 address with a backlog of 4096 (std's `bind` uses 128, which a burst of
/// a thousand connects overflows).
pub(crate) fn listen_wide(addr: SocketAddr) -> io::Result<TcpListener> {
    listen(addr, false)
}

/// [`listen_wide`] with `SO_REUSEPORT` set before `bind`: several such listeners (of the
/// same user) can bind one address, and the kernel spreads new connections over them by a
/// hash of each connection's addresses.
#[allow(dead_code)] // Only the proxy uses it.
pub(crate) fn listen_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    listen(addr, true)
}

fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv4 only"));
    };
    // SAFETY: plain socket calls; the fd is owned by the returned listener (or closed on
    // error through the OwnedFd).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let set = |opt| {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        set(libc::SO_REUSEADDR);
        if reuse_port && set(libc::SO_REUSEPORT) != 0 {
            return Err(io::Error::last_os_error());
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
            || libc::listen(fd, 4096) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(TcpListener::from(owned))
    }
}
