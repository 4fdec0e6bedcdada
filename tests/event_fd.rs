//! The engine's fd, as a caller's own epoll/mio loop sees it: readable when `poll` has
//! progress to make, and not readable when it has none (a loop must not spin), on both
//! backends.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ringsplice::{Engine, Strategy, Transfer};

fn readable(e: &Engine, timeout_ms: u64) -> bool {
    common::poll_readable(e.as_raw_fd(), Duration::from_millis(timeout_ms))
}

#[test]
fn engine_fd_is_readable_only_when_there_is_progress() {
    let _g = common::serial();
    common::run_configs(
        &common::configs(&[Strategy::Chain, Strategy::Inline]),
        |cfg| {
            let (b, s) = (cfg.backend, cfg.strategy);
            let mut e = cfg.engine();
            let (mut w, src) = common::tcp_pair();
            let (dst, mut r) = common::tcp_pair();
            e.submit(Transfer::new(src, dst).strategy(s)).unwrap();
            let mut done = Vec::new();
            // `submit` makes no syscall, so it cannot wake the fd: flush it.
            e.flush().unwrap();
            e.poll(&mut done).unwrap();
            e.poll(&mut done).unwrap();
            assert!(done.is_empty());
            // An idle source: nothing to do, so a caller's loop may sleep.
            assert!(!readable(&e, 0), "{b:?} {s:?}: readable with nothing to do");
            // Bytes move (CQEs signal the fd), then the source is idle again: after the
            // poll that took the progress, the fd must go quiet.
            w.write_all(b"pi").unwrap();
            let mut got = [0u8; 2];
            let mut n = 0;
            r.set_nonblocking(true).unwrap();
            let guard = Instant::now() + Duration::from_secs(20);
            while n < 2 {
                assert!(Instant::now() < guard, "{b:?} {s:?}: hang guard");
                assert!(
                    readable(&e, 10_000),
                    "{b:?} {s:?}: fd did not wake for data"
                );
                e.poll(&mut done).unwrap();
                if let Ok(k) = r.read(&mut got[n..]) {
                    n += k;
                }
            }
            r.set_nonblocking(false).unwrap();
            e.poll(&mut done).unwrap();
            assert!(
                !readable(&e, 0),
                "{b:?} {s:?}: readable after progress was taken"
            );
            w.write_all(b"ng").unwrap();
            drop(w);
            let guard = Instant::now() + Duration::from_secs(20);
            while done.is_empty() {
                assert!(Instant::now() < guard, "{b:?} {s:?}: hang guard");
                assert!(
                    readable(&e, 10_000),
                    "{b:?} {s:?}: fd did not wake for data"
                );
                e.poll(&mut done).unwrap();
            }
            assert!(done[0].is_ok());
            assert_eq!(done[0].delivered, 4);
            done.clear();
            let mut v = got.to_vec();
            r.read_to_end(&mut v).unwrap();
            assert_eq!(v, b"ping");
        },
    );
}
