//! Readiness behaves the same on both backends (io_uring's `IORING_OP_POLL_ADD`, the
//! fallback's epoll): several transfers may wait on one fd in one direction, and a
//! hang-up counts as ready, so the next call reports what happened.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use common::Rng;
use ringsplice::{Endpoint, Error, Length};

/// Two transfers read from one shared socket, each an exact length, parked on the same fd
/// for reading before any byte arrives: both are woken, both complete, and the bytes they
/// delivered are exactly the bytes written (each byte once, to one of them).
#[test]
fn two_transfers_wait_on_one_fd_in_one_direction() {
    let _g = common::serial();
    const N: usize = 24 << 10;
    common::for_each_config(|cfg| {
        let mut e = cfg.engine();
        let (writer, src) = UnixStream::pair().expect("socketpair");
        let src: Arc<OwnedFd> = Arc::new(src.into());
        let mut sinks = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..2 {
            // A pipe holds N bytes: no reader is needed while the transfers run.
            let (r, w) = std::io::pipe().expect("pipe");
            let t = cfg
                .transfer(Endpoint::shared(Arc::clone(&src)), w)
                .length(Length::Exact(N as u64));
            ids.push(e.submit(t).expect("submit"));
            sinks.push(r);
        }
        // Both start and wait: nothing has been written yet.
        let none = common::pump_until(&mut e, &format!("[{cfg}] park"), || true);
        assert!(
            none.is_empty(),
            "[{cfg}] finished before any byte: {none:?}"
        );
        let data = Rng::for_test("two waiters").bytes(2 * N);
        (&writer).write_all(&data).expect("write");
        let done = common::wait_n(&mut e, 2, &format!("[{cfg}] two waiters"));
        let mut got = Vec::new();
        for c in &done {
            assert!(c.is_ok(), "[{cfg}] {:?}", c.result);
            assert_eq!(c.delivered, N as u64, "[{cfg}] each takes its length");
        }
        drop(done);
        for mut r in sinks {
            let mut buf = vec![0u8; N];
            r.read_exact(&mut buf).expect("sink holds its bytes");
            got.extend_from_slice(&buf);
        }
        assert_eq!(
            histogram(&got),
            histogram(&data),
            "[{cfg}] bytes lost or doubled"
        );
    });
}

/// The source's peer writes part of an exact length and hangs up while the transfer waits
/// for more: the hang-up is readiness, the next read sees end of stream, and the transfer
/// ends with the exact count on every backend and strategy.
#[test]
fn a_hangup_while_waiting_is_readiness_on_both_backends() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut e = cfg.engine();
        let (mut writer, src) = UnixStream::pair().expect("socketpair");
        let (dst, _reader) = UnixStream::pair().expect("socketpair");
        let t = cfg.transfer(src, dst).length(Length::Exact(10_000));
        let id = e.submit(t).expect("submit");
        writer.write_all(&[7u8; 3000]).expect("write");
        // Until the 3000 bytes are delivered and the transfer waits for more.
        let deadline = std::time::Instant::now() + common::HANG_GUARD;
        let mut none = Vec::new();
        while e.delivered(id) != Some(3000) {
            assert!(std::time::Instant::now() < deadline, "[{cfg}] hang guard");
            e.wait(&mut none, Some(std::time::Duration::from_millis(50)))
                .expect("wait");
        }
        assert!(none.is_empty(), "[{cfg}] finished early: {none:?}");
        drop(writer);
        let c = common::wait_one(&mut e, &format!("[{cfg}] hang-up"));
        match c.result {
            Err(Error::UnexpectedEof {
                expected: 10_000,
                delivered: 3000,
            }) => {}
            ref other => panic!("[{cfg}] {other:?}"),
        }
        assert_eq!((c.delivered, c.undelivered), (3000, 0), "[{cfg}]");
    });
}

fn histogram(b: &[u8]) -> Vec<usize> {
    let mut h = vec![0; 256];
    for &x in b {
        h[x as usize] += 1;
    }
    h
}
