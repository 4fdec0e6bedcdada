//! Shared by the examples that accept many connections at once.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;

/// A listener on an IPv4 address with a backlog of 4096 (std's `bind` uses 128, which a burst of
/// a thousand connects overflows).
pub(crate) fn listen_wide(addr: SocketAddr) -> io::Result<TcpListener> {
    listen(addr, false)
}

/// `threads` listeners on one address, one per thread: [`listen_wide`] for one; for several,
/// [`listen_reuseport`] each, the first fixing the port when `addr` asks for port 0. (One
/// thread sets no `SO_REUSEPORT`: a second server started on its port by mistake fails to
/// bind instead of quietly taking half of the connections.)
#[allow(dead_code)] // Not every includer runs threads.
pub(crate) fn listen_per_thread(addr: SocketAddr, threads: usize) -> io::Result<Vec<TcpListener>> {
    let bind = if threads > 1 {
        listen_reuseport
    } else {
        listen_wide
    };
    let first = bind(addr)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..threads {
        all.push(bind(addr)?);
    }
    Ok(all)
}

/// One thread per listener, each running `serve(listener, ready)`; a thread sends one line on
/// `ready` (its engine's backend) once it is set up. Returns the threads and the receiving
/// end of `ready`.
#[allow(dead_code)] // Not every includer runs threads.
pub(crate) fn spawn_per_listener<T, F>(
    listeners: Vec<TcpListener>,
    serve: F,
) -> (Vec<thread::JoinHandle<T>>, mpsc::Receiver<String>)
where
    T: Send + 'static,
    F: Fn(TcpListener, mpsc::Sender<String>) -> T + Clone + Send + 'static,
{
    let (ready_tx, ready) = mpsc::channel();
    let workers = listeners
        .into_iter()
        .map(|listener| {
            let (serve, ready_tx) = (serve.clone(), ready_tx.clone());
            thread::spawn(move || serve(listener, ready_tx))
        })
        .collect();
    (workers, ready)
}

/// [`listen_wide`] with `SO_REUSEPORT` set before `bind`: several such listeners (of the
/// same user) can bind one address, and the kernel spreads new connections over them by a
/// hash of each connection's addresses.
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
