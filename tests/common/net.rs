//! Sockets on 127.0.0.1: TCP pairs, one at a time or many through one listener, and pairs
//! with small buffers.

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use super::{Kind, Peer, set_rcvbuf, set_sndbuf, stream_pair};

/// A connected TCP pair on 127.0.0.1: (connecting side, accepted side).
pub(crate) fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let a = TcpStream::connect(l.local_addr().expect("local_addr")).expect("connect");
    let (b, _) = l.accept().expect("accept");
    (a, b)
}

/// A destination that holds only a few KiB on every kernel: a TCP pair on 127.0.0.1 with
/// small buffers (the receiver's set on the listener, so its window is small from the
/// handshake on), as (the engine's sending end, the peer that reads). A Unix stream socket
/// with a small `SO_SNDBUF` is no such destination before Linux 6.5: splicing into it went
/// through `unix_stream_sendpage`, which kept appending pages past the send buffer (seen on
/// Debian's 6.1: a transfer emptied its 64 KiB pipe into a Unix socket with a 4 KiB
/// `SO_SNDBUF` whose reader never read).
pub(crate) fn tcp_pair_small_buffers() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    set_rcvbuf(&l, 2048);
    let a = std::net::TcpStream::connect(l.local_addr().expect("local_addr")).expect("connect");
    set_sndbuf(&a, 4096);
    let (b, _) = l.accept().expect("accept");
    (a, b)
}

/// A TCP listener on 127.0.0.1 and `n` connected pairs made through it.
pub(crate) fn tcp_pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = l.local_addr().expect("local_addr");
    (0..n)
        .map(|_| {
            let a = TcpStream::connect(addr).expect("connect");
            let (b, _) = l.accept().expect("accept");
            (a, b)
        })
        .collect()
}

/// Connected pairs for many transfers: TCP pairs made up front through one listener (see
/// [`tcp_pairs`]), other kinds made as they are asked for.
#[derive(Debug)]
pub(crate) struct Pairs {
    tcp: std::vec::IntoIter<(TcpStream, TcpStream)>,
}

impl Pairs {
    /// Makes `tcp` TCP pairs now.
    pub(crate) fn new(tcp: usize) -> Pairs {
        Pairs {
            tcp: tcp_pairs(tcp).into_iter(),
        }
    }

    /// A connected stream of `kind`, as [`stream_pair`]: the engine's end and the test's.
    pub(crate) fn make(&mut self, kind: Kind, engine_reads: bool) -> (OwnedFd, Peer) {
        match kind {
            Kind::Tcp => {
                let (a, b) = self.tcp.next().expect("enough TCP pairs made up front");
                (b.into(), Peer::Tcp(a))
            }
            k => stream_pair(k, engine_reads),
        }
    }
}
