//! Per-transfer timeouts: a deadline and an idle timeout cancel the transfer with
//! `Error::TimedOut` and report the exact bytes delivered, on both backends; the engine's
//! fd wakes a caller's own loop when a timeout passes.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ringsplice::{Error, Strategy, Transfer};

#[test]
fn idle_timeout_fires_on_a_silent_source() {
    let _g = common::serial();
    common::run_configs(&common::configs(&[Strategy::Auto]), |cfg| {
        let mut e = cfg.engine();
        let (_w, src) = common::tcp_pair();
        let (dst, mut r) = common::tcp_pair();
        let id = e
            .submit(Transfer::new(src, dst).idle_timeout(Duration::from_millis(100)))
            .unwrap();
        let mut done = Vec::new();
        let guard = Instant::now() + Duration::from_secs(20);
        while done.is_empty() {
            assert!(Instant::now() < guard, "{:?}: hang guard", e.backend());
            e.wait(&mut done, Some(Duration::from_secs(5))).unwrap();
        }
        let c = &done[0];
        assert_eq!(c.id, id);
        assert!(matches!(c.result, Err(Error::TimedOut)), "{:?}", c.result);
        assert_eq!(c.delivered, 0);
        drop(done);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    });
}

#[test]
fn idle_timeout_is_pushed_back_by_progress() {
    let _g = common::serial();
    common::run_configs(&common::configs(&[Strategy::Auto]), |cfg| {
        let mut e = cfg.engine();
        let (mut w, src) = common::tcp_pair();
        let (dst, mut r) = common::tcp_pair();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            v.len()
        });
        e.submit(Transfer::new(src, dst).idle_timeout(Duration::from_millis(1500)))
            .unwrap();
        let mut done = Vec::new();
        // Six writes 400 ms apart: 2.4 s in all, longer than the 1.5 s idle timeout, but
        // never a whole period without progress (a stall of over a second would be needed
        // to fail this).
        let mut written = 0;
        for _ in 0..6 {
            w.write_all(&[7u8; 1000]).unwrap();
            written += 1000;
            let until = Instant::now() + Duration::from_millis(400);
            while Instant::now() < until {
                e.wait(&mut done, Some(Duration::from_millis(20))).unwrap();
            }
        }
        drop(w);
        let guard = Instant::now() + Duration::from_secs(20);
        while done.is_empty() {
            assert!(Instant::now() < guard, "hang guard");
            e.wait(&mut done, Some(Duration::from_secs(1))).unwrap();
        }
        let c = done.pop().unwrap();
        assert!(c.is_ok(), "{:?} {:?}", e.backend(), c.result);
        assert_eq!(c.delivered, written);
        drop(c);
        assert_eq!(reader.join().unwrap() as u64, written);
    });
}

#[test]
fn deadline_reports_exact_bytes_delivered() {
    let _g = common::serial();
    common::run_configs(&common::configs(&[Strategy::Auto]), |cfg| {
        let mut e = cfg.engine();
        let (mut w, src) = common::tcp_pair();
        let (dst, mut r) = common::tcp_pair();
        w.write_all(&[1u8; 5000]).unwrap();
        e.submit(Transfer::new(src, dst).timeout(Duration::from_millis(200)))
            .unwrap();
        let mut done = Vec::new();
        let guard = Instant::now() + Duration::from_secs(20);
        while done.is_empty() {
            assert!(Instant::now() < guard, "hang guard");
            e.wait(&mut done, Some(Duration::from_secs(1))).unwrap();
        }
        let c = done.pop().unwrap();
        assert!(matches!(c.result, Err(Error::TimedOut)), "{:?}", c.result);
        assert_eq!(c.delivered, 5000);
        assert_eq!(c.undelivered, 0);
        drop(c);
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        assert_eq!(v.len(), 5000);
    });
}

#[test]
fn engine_fd_wakes_an_outside_loop_at_a_timeout() {
    let _g = common::serial();
    common::run_configs(&common::configs(&[Strategy::Auto]), |cfg| {
        let mut e = cfg.engine();
        let (_w, src) = common::tcp_pair();
        let (dst, _r) = common::tcp_pair();
        e.submit(Transfer::new(src, dst).timeout(Duration::from_millis(50)))
            .unwrap();
        let mut done = Vec::new();
        e.poll(&mut done).unwrap();
        assert!(done.is_empty());
        let guard = Instant::now() + Duration::from_secs(20);
        while done.is_empty() {
            assert!(Instant::now() < guard, "{:?}: fd never woke", e.backend());
            // What a caller's loop does: sleep in poll(2) on the engine's fd, then poll.
            let mut p = libc::pollfd {
                fd: e.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, 10_000) };
            assert_eq!(
                n,
                1,
                "{:?}: the engine fd did not wake for the timeout",
                e.backend()
            );
            e.poll(&mut done).unwrap();
        }
        assert!(matches!(done[0].result, Err(Error::TimedOut)));
    });
}
