//! Engine lifecycle, on both backends and all strategies:
//! - dropping the engine with transfers in flight (idle sockets, busy socket streams, file
//!   sources mid-chain on io-wq, transfers never flushed, a completion never collected,
//!   shared endpoints) returns promptly, closes every endpoint it owned (the peers see end
//!   of file), gives back every shared reference, and leaves no fd, pipe or io-wq thread;
//! - the engine's fd (`AsRawFd`) becomes readable when there is progress to collect, so a
//!   caller's own poll loop can drive it without ever blocking in `wait`, stays quiet while
//!   everything is idle, and is readable when a completion produced by `flush` waits;
//! - `wait` with a timeout returns when idle, and at once when nothing is in flight.

mod common;

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Config, Kind, Peer, Rng, TempFile};
use ringsplice::{Endpoint, Engine, Length};

/// Reads until end of file or an error, counting progress; returns the bytes read. With
/// `slow_until`, reads 4 KiB a millisecond until the flag is set (so a transfer into it
/// stays in flight), then at full speed.
fn counting_reader(
    mut peer: Peer,
    progress: Arc<AtomicU64>,
    slow_until: Option<Arc<AtomicBool>>,
) -> std::thread::JoinHandle<u64> {
    peer.set_read_timeout(common::HANG_GUARD);
    common::spawn_named("rs-test-busy-reader", move || {
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0;
        loop {
            let slow = slow_until
                .as_ref()
                .is_some_and(|f| !f.load(Ordering::SeqCst));
            let len = if slow { 4096 } else { buf.len() };
            match peer.read(&mut buf[..len]) {
                Ok(0) => return total,
                Ok(n) => {
                    total += n as u64;
                    progress.store(total, Ordering::SeqCst);
                    if slow {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                // A reset when the engine closes its end with bytes unread is an end too.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return total,
                Err(e) => panic!("busy reader: {e}"),
            }
        }
    })
}

/// Writes until the engine's end goes away (EPIPE / ECONNRESET).
fn endless_writer(mut peer: Peer, seed: u64) -> std::thread::JoinHandle<u64> {
    common::spawn_named("rs-test-busy-writer", move || {
        let chunk = Rng::new(seed).bytes(64 << 10);
        let mut total = 0;
        let deadline = Instant::now() + common::HANG_GUARD;
        loop {
            assert!(Instant::now() < deadline, "busy writer: hang guard");
            match peer.write(&chunk) {
                Ok(n) => total += n as u64,
                Err(e) if common::peer_gone(&e) => return total,
                Err(e) => panic!("busy writer: {e}"),
            }
        }
    })
}

/// Reads a peer of an fd the engine should have closed: end of file (or a reset) at once.
fn assert_closed_by_engine(peer: &mut Peer, what: &str) {
    peer.set_read_timeout(common::HANG_GUARD);
    let mut buf = [0u8; 16];
    match peer.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("{what}: {n} unexpected bytes"),
        Err(e) => panic!("{what}: the engine's end is still open ({e})"),
    }
}

fn drop_with_everything_in_flight(cfg: Config) {
    let what = format!("[{cfg}] drop with transfers in flight");
    let mut rng = Rng::for_test(&what);
    let mut e = cfg.engine();
    let mut idle_peers = Vec::new();

    // 100 idle socket transfers.
    for i in 0..100usize {
        let k = if i.is_multiple_of(2) {
            Kind::Tcp
        } else {
            Kind::Unix
        };
        let (src, w) = common::stream_pair(k, true);
        let (dst, r) = common::stream_pair(k, false);
        e.submit(cfg.transfer(src, dst)).expect("submit idle");
        idle_peers.push(w);
        idle_peers.push(r);
    }
    // Idle transfers on shared endpoints: the references must all come back.
    let mut shared = Vec::new();
    for _ in 0..4 {
        let (src, w) = common::stream_pair(Kind::Unix, true);
        let (dst, r) = common::stream_pair(Kind::Unix, false);
        let (src, dst): (Arc<OwnedFd>, Arc<OwnedFd>) = (Arc::new(src), Arc::new(dst));
        e.submit(cfg.transfer(Endpoint::shared(src.clone()), Endpoint::shared(dst.clone())))
            .expect("submit shared");
        shared.push((src, dst, w, r));
    }
    // Busy socket streams: endless writers, readers that read everything.
    let mut busy = Vec::new();
    for i in 0..4usize {
        let k = if i.is_multiple_of(2) {
            Kind::Tcp
        } else {
            Kind::Unix
        };
        let (src, w) = common::stream_pair(k, true);
        let (dst, r) = common::stream_pair(k, false);
        let progress = Arc::new(AtomicU64::new(0));
        let writer = endless_writer(w, rng.next_u64());
        let reader = counting_reader(r, progress.clone(), None);
        e.submit(cfg.transfer(src, dst)).expect("submit busy");
        busy.push((progress, writer, reader));
    }
    // File sources (io-wq chains on io_uring) into slow readers.
    let file = TempFile::with_contents("drop-src", &rng.bytes(16 << 20));
    let dropped = Arc::new(AtomicBool::new(false));
    for _ in 0..2 {
        let (dst, r) = common::stream_pair(Kind::Tcp, false);
        let progress = Arc::new(AtomicU64::new(0));
        let reader = counting_reader(r, progress.clone(), Some(dropped.clone()));
        e.submit(cfg.transfer(file.open_read(), dst))
            .expect("submit file");
        busy.push((progress, common::spawn_named("rs-test-noop", || 0), reader));
    }
    // Run until every busy transfer has moved bytes.
    let early = common::pump_until(&mut e, &format!("{what}: busy transfers moving"), || {
        busy.iter().all(|(p, _, _)| p.load(Ordering::SeqCst) > 0)
    });
    assert!(
        early.is_empty(),
        "{what}: transfers finished early: {early:#?}"
    );
    // A transfer that completes inside `flush` and is never collected, and transfers
    // submitted and never flushed.
    let (src, mut w0) = common::stream_pair(Kind::Unix, true);
    let (dst, mut r0) = common::stream_pair(Kind::Unix, false);
    w0.write_all(b"never collected").expect("write");
    e.submit(cfg.transfer(src, dst).length(Length::Exact(0)))
        .expect("submit zero");
    e.flush().expect("flush");
    for _ in 0..3 {
        let (src, w) = common::stream_pair(Kind::Tcp, true);
        let (dst, r) = common::stream_pair(Kind::Tcp, false);
        e.submit(cfg.transfer(src, dst)).expect("submit unflushed");
        idle_peers.push(w);
        idle_peers.push(r);
    }
    let in_flight = e.in_flight();
    assert!(in_flight >= 114, "{what}: only {in_flight} in flight");
    // File sources run as io-wq splice chains on io_uring under Chain (Auto sends cached
    // files inline): their workers are alive now, and must be gone after the drop.
    let chains = cfg.backend == ringsplice::BackendPreference::IoUring
        && cfg.strategy == ringsplice::Strategy::Chain;
    if chains {
        assert!(
            common::iowq::mine() > 0,
            "{what}: no io-wq worker while file chains run: {:?}",
            common::task_snapshot()
        );
    }

    // Drop it on a helper thread, with a hang guard.
    let dropper = common::spawn_named("rs-test-dropper", move || drop(e));
    common::join_within(
        dropper,
        common::DROP_GUARD,
        &format!("{what}: Engine::drop"),
    );
    dropped.store(true, Ordering::SeqCst);
    common::iowq::assert_released_after_drop(&what);

    // Every endpoint it owned is closed: each peer sees end of file (or a reset).
    for (i, p) in idle_peers.iter_mut().enumerate() {
        assert_closed_by_engine(p, &format!("{what}: idle peer #{i}"));
    }
    assert_closed_by_engine(
        &mut r0,
        &format!("{what}: uncollected completion's destination"),
    );
    assert_closed_by_engine(&mut w0, &format!("{what}: uncollected completion's source"));
    for (i, (src, dst, mut w, mut r)) in shared.into_iter().enumerate() {
        assert_eq!(
            Arc::strong_count(&src),
            1,
            "{what}: shared source #{i} still referenced"
        );
        assert_eq!(
            Arc::strong_count(&dst),
            1,
            "{what}: shared destination #{i} still referenced"
        );
        // Still open (the test holds them): the peers see nothing yet.
        common::set_nonblocking(&w, true);
        common::set_nonblocking(&r, true);
        let mut buf = [0u8; 8];
        assert!(
            matches!(r.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{what}: a shared destination was closed by the engine"
        );
        assert!(
            matches!(w.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{what}: a shared source was closed by the engine"
        );
    }
    for (i, (_, writer, reader)) in busy.into_iter().enumerate() {
        common::join(writer, &format!("{what}: busy writer #{i}"));
        common::join(reader, &format!("{what}: busy reader #{i}"));
    }
    drop(file);
}

#[test]
fn dropping_the_engine_with_transfers_in_flight() {
    let _g = common::serial();
    common::for_each_config(drop_with_everything_in_flight);
}

/// A caller's own loop: `poll(2)` on the engine's fd, `Engine::poll` only when it is
/// readable, never `Engine::wait`. Idle, the fd stays quiet; when data arrives it wakes the
/// loop until the completion is collected.
#[test]
fn engine_fd_drives_a_callers_poll_loop() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] engine fd");
        let mut rng = Rng::for_test(&what);
        let mut e = cfg.engine();
        let fd = e.as_raw_fd();
        assert_eq!(
            e.as_fd().as_raw_fd(),
            fd,
            "{what}: as_fd and as_raw_fd disagree"
        );
        let (src, mut w) = common::stream_pair(Kind::Tcp, true);
        let (dst, r) = common::stream_pair(Kind::Tcp, false);
        let reader = common::spawn_reader(r);
        let id = e.submit(cfg.transfer(src, dst).tag(21)).expect("submit");
        e.flush().expect("flush");

        // Idle: after a few turns the fd must go quiet (it may be readable for a pass or
        // two while the engine settles, but not forever: that would be a busy loop).
        let mut out = Vec::new();
        let mut quiet = false;
        for _ in 0..10 {
            e.poll(&mut out).expect("poll");
            if !common::poll_readable(fd, Duration::from_millis(50)) {
                quiet = true;
                break;
            }
        }
        assert!(
            out.is_empty(),
            "{what}: an idle transfer completed: {out:#?}"
        );
        assert!(
            quiet,
            "{what}: the engine fd stays readable while every transfer is idle"
        );

        // Data and end of file: the fd must wake the loop until the completion is in.
        let payload = rng.bytes(300_000);
        w.write_all(&payload).expect("write");
        drop(w);
        let mut wakeups = 0;
        while out.is_empty() {
            assert!(
                common::poll_readable(fd, common::HANG_GUARD),
                "{what}: the engine fd did not become readable within {:?} although the \
                 transfer had work to do ({wakeups} wake-ups so far; stats {:?})",
                common::HANG_GUARD,
                e.stats()
            );
            wakeups += 1;
            assert!(wakeups < 100_000, "{what}: endless wake-ups");
            e.poll(&mut out).expect("poll");
        }
        assert_eq!(out.len(), 1, "{what}: completions");
        let c = out.pop().expect("completion");
        common::assert_ok_completion(&c, id, 21, payload.len() as u64, &what);
        drop(c);
        let got = common::join(reader, &what).expect("read");
        common::assert_same_bytes(&got, &payload, &what);
    });
}

/// How long a caller's loop waits for the engine's fd when the engine has everything it
/// needs at once (a completion is already waiting or about to be): a hang guard.
const READY_GUARD: Duration = Duration::from_secs(5);

/// A transfer that can finish inside `flush` leaves a completion waiting: the engine's fd
/// must say so, or a caller's loop, which calls `poll` only when the fd is readable, never
/// collects it.
fn completion_waiting_makes_the_fd_readable(zero_length: bool) {
    common::for_each_config(|cfg| {
        let mut e = cfg.engine();
        let fd = e.as_raw_fd();
        let what = if zero_length {
            format!("[{cfg}] Exact(0) socket->socket")
        } else {
            format!("[{cfg}] small file->file")
        };
        let mut peers = Vec::new();
        let mut files = None;
        let t = if zero_length {
            let (src, w) = common::stream_pair(Kind::Unix, true);
            let (dst, r) = common::stream_pair(Kind::Unix, false);
            peers.extend([w, r]);
            cfg.transfer(src, dst).length(Length::Exact(0))
        } else {
            let s = TempFile::with_contents("ready-src", b"tiny file, always ready");
            let d = TempFile::with_contents("ready-dst", b"");
            let t = cfg.transfer(s.open_read(), d.open_write());
            files = Some((s, d));
            t
        };
        let id = e.submit(t.tag(22)).expect("submit");
        e.flush().expect("flush");
        // The caller's loop: `poll` only when the fd is readable.
        let mut out = Vec::new();
        let mut wakeups = 0;
        while out.is_empty() {
            if !common::poll_readable(fd, READY_GUARD) {
                let before = e.in_flight();
                let mut probe = Vec::new();
                e.poll(&mut probe).expect("poll");
                panic!(
                    "{what}: the engine fd was not readable for {READY_GUARD:?} after \
                     {wakeups} wake-ups; a probing poll then returned {} completion(s) (so \
                     {}); in_flight before the probe: {before}",
                    probe.len(),
                    if probe.is_empty() {
                        "the transfer was stuck"
                    } else {
                        "a completion sat uncollected while the fd said nothing"
                    },
                );
            }
            wakeups += 1;
            assert!(wakeups < 10_000, "{what}: endless wake-ups");
            e.poll(&mut out).expect("poll");
        }
        assert_eq!(out.len(), 1, "{what}: completions {out:?}");
        let c = out.pop().expect("completion");
        assert_eq!((c.id, c.tag), (id, 22), "{what}");
        assert!(c.is_ok(), "{what}: {:?}", c.result);
        drop(c);
        if let Some((_s, d)) = files {
            assert_eq!(d.contents(), b"tiny file, always ready", "{what}");
        }
        drop(peers);
    });
}

/// A zero-length transfer completes inside `flush`.
#[test]
fn engine_fd_is_readable_while_a_zero_length_completion_waits() {
    let _g = common::serial();
    completion_waiting_makes_the_fd_readable(true);
}

/// A small file into a file (always ready on both sides) can complete inside `flush`.
#[test]
fn engine_fd_is_readable_while_a_file_to_file_completion_waits() {
    let _g = common::serial();
    completion_waiting_makes_the_fd_readable(false);
}

/// Runs `f` on the engine on a helper thread (the engine is `Send`), so a call that should
/// return but blocks becomes a failure after [`common::HANG_GUARD`] instead of a hang.
fn on_helper<T: Send + 'static>(
    e: Engine,
    what: &str,
    f: impl FnOnce(&mut Engine) -> T + Send + 'static,
) -> (Engine, T) {
    let h = common::spawn_named("rs-test-engine-call", move || {
        let mut e = e;
        let r = f(&mut e);
        (e, r)
    });
    common::join(h, what)
}

/// `wait` with a timeout returns when nothing happens, and returns at once with nothing in
/// flight.
#[test]
fn wait_returns_on_timeout_and_when_idle() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] wait");
        let e = cfg.engine();
        let (e, n) = on_helper(e, &format!("{what}: wait(None), nothing in flight"), |e| {
            e.wait(&mut Vec::new(), None).expect("wait")
        });
        assert_eq!(n, 0, "{what}: completions with nothing in flight");

        let (src, _w) = common::stream_pair(Kind::Tcp, true);
        let (dst, _r) = common::stream_pair(Kind::Tcp, false);
        let mut e = e;
        let id = e.submit(cfg.transfer(src, dst)).expect("submit");
        let (mut e, out) = on_helper(e, &format!("{what}: wait(30 ms), idle"), |e| {
            let mut out = Vec::new();
            for _ in 0..3 {
                e.wait(&mut out, Some(Duration::from_millis(30)))
                    .expect("wait");
            }
            out
        });
        assert!(
            out.is_empty(),
            "{what}: an idle transfer completed: {out:?}"
        );
        assert!(e.cancel(id), "{what}: cancel");
        let c = common::wait_one(&mut e, &what);
        assert_eq!(c.id, id);
    });
}

/// `wait(None)` blocks until a completion arrives, then returns it: run on a helper thread
/// (the engine is `Send`) with a hang guard, while the test feeds the source.
#[test]
fn wait_without_timeout_wakes_for_a_completion() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] wait(None)");
        let mut e = cfg.engine();
        let (src, mut w) = common::stream_pair(Kind::Tcp, true);
        let (dst, r) = common::stream_pair(Kind::Unix, false);
        let reader = common::spawn_reader(r);
        let id = e.submit(cfg.transfer(src, dst).tag(23)).expect("submit");
        e.flush().expect("flush");
        let waiter = common::spawn_named("rs-test-waiter", move || {
            let mut out = Vec::new();
            while out.is_empty() {
                e.wait(&mut out, None).expect("wait");
            }
            (e, out)
        });
        std::thread::sleep(Duration::from_millis(20));
        w.write_all(b"wake up").expect("write");
        drop(w);
        let (e, mut out) = common::join(waiter, &format!("{what}: the blocked wait"));
        assert_eq!(out.len(), 1, "{what}: {out:?}");
        let c = out.pop().expect("completion");
        common::assert_ok_completion(&c, id, 23, 7, &what);
        drop(c);
        drop(e);
        assert_eq!(
            common::join(reader, &what).expect("read"),
            b"wake up",
            "{what}"
        );
    });
}

/// Raw endpoints (`Endpoint::from_raw_fd`) stay the caller's: the engine never closes
/// them, neither when the transfer completes nor when the engine is dropped with the
/// transfer in flight.
#[test]
fn raw_endpoints_are_never_closed_by_the_engine() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] raw endpoints");
        let mut e = cfg.engine();
        // One that completes.
        let (src, mut w) = common::stream_pair(Kind::Unix, true);
        let (dst, r) = common::stream_pair(Kind::Unix, false);
        let reader = common::spawn_reader(r);
        w.write_all(b"raw").expect("write");
        drop(w);
        // SAFETY: `src` and `dst` stay open until after the completion has been returned
        // and the engine dropped.
        let t = unsafe {
            cfg.transfer(
                Endpoint::from_raw_fd(src.as_raw_fd()),
                Endpoint::from_raw_fd(dst.as_raw_fd()),
            )
        };
        let id = e.submit(t.tag(24)).expect("submit");
        let c = common::wait_one(&mut e, &what);
        common::assert_ok_completion(&c, id, 24, 3, &what);
        assert!(
            c.source.into_owned_fd().is_none(),
            "{what}: raw came back owned"
        );
        assert!(
            c.destination.into_owned_fd().is_none(),
            "{what}: raw came back owned"
        );
        assert!(common::fd_is_open(src.as_raw_fd()), "{what}: source closed");
        assert!(
            common::fd_is_open(dst.as_raw_fd()),
            "{what}: destination closed"
        );
        drop(dst);
        assert_eq!(common::join(reader, &what).expect("read"), b"raw", "{what}");
        drop(src);

        // One in flight when the engine is dropped.
        let (src, _w) = common::stream_pair(Kind::Tcp, true);
        let (dst, mut r) = common::stream_pair(Kind::Tcp, false);
        // SAFETY: as above.
        let t = unsafe {
            cfg.transfer(
                Endpoint::from_raw_fd(src.as_raw_fd()),
                Endpoint::from_raw_fd(dst.as_raw_fd()),
            )
        };
        e.submit(t).expect("submit");
        e.flush().expect("flush");
        let dropper = common::spawn_named("rs-test-dropper", move || drop(e));
        common::join_within(
            dropper,
            common::DROP_GUARD,
            &format!("{what}: Engine::drop"),
        );
        assert!(
            common::fd_is_open(src.as_raw_fd()),
            "{what}: source closed by drop"
        );
        assert!(
            common::fd_is_open(dst.as_raw_fd()),
            "{what}: destination closed by drop"
        );
        common::set_nonblocking(&r, true);
        let mut buf = [0u8; 4];
        assert!(
            matches!(r.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{what}: the destination's peer saw it closed"
        );
    });
}
