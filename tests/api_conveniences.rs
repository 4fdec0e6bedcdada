//! The conveniences a new user asked for (issue 10's rough edges), each pinned on both
//! backends: `Engine::wait_all` with a deadline, `Completion::into_endpoints` and
//! `Endpoint::into_typed`, `Transfer::shutdown_destination` (a half-close passed on only on
//! success), `Engine::delivered` beside `Stats::bytes`, and errors that name the side.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use common::{Kind, Rng};
use ringsplice::{Endpoint, Error, Length};

/// `tcpi_state` of a TCP socket (`TCP_INFO`): 1 is `TCP_ESTABLISHED`; after
/// `shutdown(SHUT_WR)` it is `FIN_WAIT1` (4) or `FIN_WAIT2` (5).
fn tcp_state(s: &impl AsRawFd) -> u8 {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is valid for `len` bytes of writes.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    // SAFETY: getsockopt filled the struct (zeroed first, so any tail is defined).
    unsafe { info.assume_init() }.tcpi_state
}

const TCP_ESTABLISHED: u8 = 1;

#[test]
fn wait_all_runs_everything_to_completion_or_says_it_timed_out() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] wait_all");
        let mut e = cfg.engine();
        let mut feeds = Vec::new();
        let mut sinks = Vec::new();
        let payload = Rng::for_test(&what).bytes(300_000);
        for i in 0..4 {
            let (src, feed) = common::source_of(Kind::Tcp, "wait-all", &payload);
            let (dst, sink) = common::destination_of(Kind::Unix, "wait-all", b"");
            e.submit(cfg.transfer(src, dst).tag(i)).expect("submit");
            feeds.push(feed);
            sinks.push(sink);
        }
        let mut done = Vec::new();
        let n = e.wait_all(&mut done, common::HANG_GUARD).expect("wait_all");
        assert_eq!((n, done.len(), e.in_flight()), (4, 4, 0), "{what}");
        assert!(
            done.iter().all(|c| c.is_ok() && c.delivered == 300_000),
            "{what}: {done:#?}"
        );
        drop(done);
        for (f, s) in feeds.into_iter().zip(sinks) {
            f.finish(&what);
            common::assert_same_bytes(&s.contents(&what), &payload, &what);
        }

        // A transfer whose source never sends: the deadline passes, the transfer goes on.
        let (src, _quiet_peer) = common::stream_pair(Kind::Tcp, true);
        let (dst, _reader) = common::stream_pair(Kind::Unix, false);
        let id = e.submit(cfg.transfer(src, dst)).expect("submit");
        let mut done = Vec::new();
        match e.wait_all(&mut done, Duration::from_millis(50)) {
            Err(Error::TimedOut) => {}
            other => panic!("{what}: {other:?}"),
        }
        assert!(done.is_empty(), "{what}: {done:?}");
        assert_eq!(e.in_flight(), 1, "{what}");
        assert!(e.cancel(id));
        e.wait_all(&mut done, common::HANG_GUARD)
            .expect("wait_all after cancel");
        assert!(
            matches!(done[0].result, Err(Error::Cancelled)),
            "{what}: {done:?}"
        );
    });
}

#[test]
fn completion_hands_endpoints_back_typed() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] into_endpoints");
        let mut e = cfg.engine();
        let (a, mut a_peer) = common::tcp_pair();
        let (b, mut b_peer) = common::tcp_pair();
        a_peer.write_all(b"ping").unwrap();
        let t = cfg.transfer(a, b).length(Length::Exact(4));
        e.submit(t).expect("submit");
        let c = common::wait_one(&mut e, &what);
        assert!(c.is_ok(), "{what}: {c:?}");
        let (src, dst) = c.into_endpoints();
        let mut src: TcpStream = src.into_typed().expect("owned source");
        let dst: TcpStream = dst.into_typed().expect("owned destination");
        let mut got = [0u8; 4];
        b_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping", "{what}");
        // The sockets are ordinary std sockets again (blocking mode restored by the user).
        src.set_nonblocking(false).unwrap();
        src.write_all(b"pong").unwrap();
        a_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong", "{what}");
        drop(dst);
        // A shared endpoint has no owned fd to hand back.
        let shared = std::sync::Arc::new(std::os::fd::OwnedFd::from(src));
        assert!(Endpoint::shared(shared).into_typed::<TcpStream>().is_none());
    });
}

#[test]
fn shutdown_destination_passes_the_half_close_on_only_on_success() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] shutdown_destination");
        let mut e = cfg.engine();
        // Success: the peer reads everything then end of stream, while the socket stays
        // open for the other direction.
        let (src, mut src_peer) = common::tcp_pair();
        let (dst, mut dst_peer) = common::tcp_pair();
        let payload = Rng::for_test(&what).bytes(200_000);
        let (tx, rx) = mpsc::channel();
        let reader = common::spawn_named("rs-test-half-close", move || {
            dst_peer.set_read_timeout(Some(common::HANG_GUARD)).unwrap();
            let mut v = Vec::new();
            dst_peer
                .read_to_end(&mut v)
                .expect("read to the half-close");
            tx.send(()).unwrap();
            dst_peer.write_all(b"reply").unwrap(); // the other direction still works
            v
        });
        src_peer.write_all(&payload).unwrap();
        src_peer.shutdown(std::net::Shutdown::Write).unwrap();
        let id = e
            .submit(cfg.transfer(src, dst).shutdown_destination(true).tag(1))
            .expect("submit");
        let c = common::wait_one(&mut e, &what);
        common::assert_ok_completion(&c, id, 1, payload.len() as u64, &what);
        rx.recv_timeout(common::HANG_GUARD)
            .expect("peer saw end of stream");
        let got = common::join(reader, &what);
        common::assert_same_bytes(&got, &payload, &what);
        let (_src, dst) = c.into_endpoints();
        let mut dst: TcpStream = dst.into_typed().unwrap();
        assert_ne!(
            tcp_state(&dst),
            TCP_ESTABLISHED,
            "{what}: write side not shut"
        );
        dst.set_nonblocking(false).unwrap();
        let mut reply = [0u8; 5];
        dst.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"reply", "{what}");

        // Cancelled: nothing is shut down.
        let (src, _quiet) = common::tcp_pair();
        let (dst, _dst_peer) = common::tcp_pair();
        let id = e
            .submit(cfg.transfer(src, dst).shutdown_destination(true))
            .expect("submit");
        e.flush().unwrap();
        assert!(e.cancel(id));
        let c = common::wait_one(&mut e, &what);
        assert!(matches!(c.result, Err(Error::Cancelled)), "{what}: {c:?}");
        let (_s, d) = c.into_endpoints();
        let d: TcpStream = d.into_typed().unwrap();
        assert_eq!(
            tcp_state(&d),
            TCP_ESTABLISHED,
            "{what}: shut down after a cancel"
        );

        // Not a socket: refused up front, naming the destination.
        let (src, _feed) = common::source_of(Kind::Tcp, "half-close", b"x");
        let (dst, _sink) = common::destination_of(Kind::Pipe, "half-close", b"");
        e.submit(cfg.transfer(src, dst).shutdown_destination(true))
            .expect("submit");
        let c = common::wait_one(&mut e, &what);
        match &c.result {
            Err(Error::InvalidInput(m)) => assert!(m.contains("destination fd"), "{what}: {m}"),
            other => panic!("{what}: {other:?}"),
        }
    });
}

#[test]
fn delivered_shows_progress_that_stats_bytes_counts_at_completion() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] progress");
        let mut e = cfg.engine();
        let (src, mut src_peer) = common::tcp_pair();
        let (dst, sink) = common::destination_of(Kind::Unix, "progress", b"");
        let id = e.submit(cfg.transfer(src, dst).tag(1)).expect("submit");
        src_peer.write_all(&[7u8; 50_000]).unwrap();
        let deadline = std::time::Instant::now() + common::HANG_GUARD;
        let mut early = Vec::new();
        while e.delivered(id) != Some(50_000) {
            assert!(std::time::Instant::now() < deadline, "{what}: hang guard");
            e.wait(&mut early, Some(Duration::from_millis(5))).unwrap();
        }
        assert!(early.is_empty(), "{what}: {early:?}");
        assert_eq!(
            e.stats().bytes,
            0,
            "{what}: running transfers are not in Stats::bytes"
        );
        drop(src_peer);
        let c = common::wait_one(&mut e, &what);
        common::assert_ok_completion(&c, id, 1, 50_000, &what);
        assert_eq!(e.delivered(id), None, "{what}: completed");
        assert_eq!(e.stats().bytes, 50_000, "{what}");
        drop(c);
        assert_eq!(sink.contents(&what).len(), 50_000, "{what}");
    });
}

#[test]
fn errors_about_an_fd_name_its_side() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut e = cfg.engine();
        let dir = || std::fs::File::open(std::env::temp_dir()).expect("open dir");
        for (src_is_dir, side) in [(true, "source fd"), (false, "destination fd")] {
            let what = format!("[{cfg}] directory as {side}");
            let (good_src, _feed) = common::source_of(Kind::Tcp, "side", b"x");
            let (good_dst, _sink) = common::destination_of(Kind::Tcp, "side", b"");
            let t = if src_is_dir {
                cfg.transfer(dir(), good_dst)
            } else {
                cfg.transfer(good_src, dir())
            };
            e.submit(t).expect("submit");
            let c = common::wait_one(&mut e, &what);
            match &c.result {
                Err(Error::InvalidInput(m)) => {
                    assert!(m.contains(side) && m.contains("directory"), "{what}: {m}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    });
}
