//! Fan-out: one source to many destinations of every kind, exact per-destination counts,
//! both policies, cancel, and a pipe budget smaller than the fan-out. Every test runs on
//! both backends (fan-outs run inline on both, so the strategy does not matter: one config
//! per backend) inside a leak check, under hang guards.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::time::Duration;

use common::*;
use ringsplice::{Branch, Completion, Engine, Error, FanOut, Length, Policy, Strategy};

/// One configuration per backend.
fn backends() -> Vec<Config> {
    configs(&[Strategy::Auto])
}

fn one(e: &mut Engine, what: &str) -> Completion {
    wait_one(e, what)
}

/// Sends `payload` from a source of `src_kind` to destinations of `kinds`, all required,
/// and checks every byte and count.
fn fan_and_check(cfg: Config, src_kind: Kind, kinds: &[Kind], payload: &[u8], what: &str) {
    let mut e = cfg.engine();
    let (src, feed) = source_of(src_kind, what, payload);
    let mut f = FanOut::new(src)
        .length(Length::Exact(payload.len() as u64))
        .tag(9);
    let mut sinks = Vec::new();
    for (i, &k) in kinds.iter().enumerate() {
        let (dst, sink) = destination_of(k, &format!("{what}-{i}"), &[]);
        f = f.destination(dst, Policy::Required);
        sinks.push(sink);
    }
    e.submit_fan_out(f).expect("submit");
    let c = one(&mut e, what);
    assert!(c.is_ok(), "[{cfg}] {what}: {:?}", c.result);
    assert_eq!(c.delivered, payload.len() as u64, "[{cfg}] {what}: taken");
    assert_eq!(c.branches.len(), kinds.len());
    drop(c.source);
    let want = checksum(payload);
    for (i, (b, sink)) in c.branches.into_iter().zip(sinks).enumerate() {
        assert!(b.result.is_ok(), "[{cfg}] {what} #{i}: {:?}", b.result);
        assert_eq!(
            (b.delivered, b.missed),
            (payload.len() as u64, 0),
            "[{cfg}] #{i}"
        );
        drop(b.destination); // end of file for its reader
        let got = sink.contents(&format!("{what} #{i}"));
        assert_eq!(
            got.len(),
            payload.len(),
            "[{cfg}] {what} #{i} ({:?})",
            kinds[i]
        );
        assert_eq!(checksum(&got), want, "[{cfg}] {what} #{i} ({:?})", kinds[i]);
    }
    feed.finish(what);
    assert_eq!(e.stats().pipes_discarded, 0, "[{cfg}] {what}");
}

/// A dropped best-effort branch's account is exact: what it delivered and missed add up to
/// the payload, and its peer reads exactly the first `delivered` bytes.
fn check_dropped(b: Branch, peer: TcpStream, payload: &[u8], what: &str) {
    assert_eq!(b.delivered + b.missed, payload.len() as u64, "{what}");
    drop(b.destination); // end of file for its peer
    let mut got = Vec::new();
    let mut p = peer;
    p.set_read_timeout(Some(HANG_GUARD)).unwrap();
    p.read_to_end(&mut got)
        .expect("read the dropped destination");
    assert_eq!(got.len() as u64, b.delivered, "{what}: dropped count");
    assert_same_bytes(&got, &payload[..got.len()], what);
}

const MIXED: [Kind; 8] = [
    Kind::Tcp,
    Kind::Unix,
    Kind::Pipe,
    Kind::File,
    Kind::Tcp,
    Kind::Pipe,
    Kind::Unix,
    Kind::File,
];

#[test]
fn one_to_eight_mixed_kinds_64_mib() {
    let _s = serial();
    run_configs(&backends(), |cfg| {
        let payload = Rng::for_test("fan64").bytes(64 << 20);
        fan_and_check(cfg, Kind::Tcp, &MIXED, &payload, "64MiB");
    });
}

#[test]
fn one_to_many_random_sizes_and_kinds() {
    let _s = serial();
    run_configs(&backends(), |cfg| {
        let mut rng = Rng::for_test("fanrand");
        for round in 0..6 {
            let n = rng.range(2, 9) as usize;
            let kinds: Vec<Kind> = (0..n).map(|_| KINDS[rng.below(4) as usize]).collect();
            let src = KINDS[rng.below(4) as usize];
            let len = rng.range(0, 6 << 20) as usize;
            let payload = rng.bytes(len);
            fan_and_check(cfg, src, &kinds, &payload, &format!("round{round}"));
        }
    });
}

#[test]
fn until_eof_reaches_every_destination() {
    let _s = serial();
    run_configs(&backends(), |cfg| {
        let mut e = cfg.engine();
        let payload = Rng::for_test("eof").bytes(3 << 20);
        let (src, feed) = source_of(Kind::Unix, "eof", &payload);
        let (d1, s1) = destination_of(Kind::Tcp, "eof1", &[]);
        let (d2, s2) = destination_of(Kind::Pipe, "eof2", &[]);
        let f = FanOut::new(src)
            .destination(d1, Policy::Required)
            .destination(d2, Policy::Required);
        e.submit_fan_out(f).expect("submit");
        let c = one(&mut e, "eof");
        assert!(c.is_ok(), "[{cfg}] {:?}", c.result);
        assert_eq!(c.delivered, payload.len() as u64);
        for (b, s) in c.branches.into_iter().zip([s1, s2]) {
            assert_eq!(b.delivered, payload.len() as u64);
            drop(b.destination);
            assert_eq!(checksum(&s.contents("eof")), checksum(&payload));
        }
        feed.finish("eof");
    });
}

#[test]
fn a_best_effort_destination_that_stops_reading_is_dropped_and_counted() {
    let _s = serial();
    run_configs(&backends(), |cfg| {
        let mut e = cfg.engine_from(cfg.builder().pipe_size(64 << 10));
        let payload = Rng::for_test("stall").bytes(16 << 20);
        let (src, feed) = source_of(Kind::Tcp, "stall", &payload);
        let (d1, s1) = destination_of(Kind::Tcp, "stall1", &[]);
        let (d2, s2) = destination_of(Kind::File, "stall2", &[]);
        let (stalled, stalled_peer) = tcp_pair_small_buffers();
        let f = FanOut::new(src)
            .length(Length::Exact(payload.len() as u64))
            .destination(d1, Policy::Required)
            .destination(stalled, Policy::BestEffort { max_lag: 256 << 10 })
            .destination(d2, Policy::Required);
        e.submit_fan_out(f).expect("submit");
        let c = one(&mut e, "stall");
        assert!(c.is_ok(), "[{cfg}] {:?}", c.result);
        let mut b = c.branches.into_iter();
        let (b1, bs, b2) = (b.next().unwrap(), b.next().unwrap(), b.next().unwrap());
        assert!(
            matches!(bs.result, Err(Error::Lagged { max_lag, .. }) if max_lag == 256 << 10),
            "[{cfg}] {:?}",
            bs.result
        );
        check_dropped(bs, stalled_peer, &payload, &format!("[{cfg}] stalled"));
        for (b, s) in [(b1, s1), (b2, s2)] {
            assert!(b.result.is_ok());
            assert_eq!(b.delivered, payload.len() as u64);
            drop(b.destination);
            assert_eq!(checksum(&s.contents("stall")), checksum(&payload));
        }
        feed.finish("stall");
    });
}

/// A best-effort leg that is already waiting for its socket to drain when it falls
/// `max_lag` behind: the source trickles in (the test feeds a pipe and runs the engine in
/// turn, so one run takes at most the pipe's 64 KiB, far below `max_lag`), the fan-out parks
/// many times with that wait armed before the lag is reached, then finishes. The wait is
/// taken back before the completion hands the socket back (regression: 4686b8e; before it,
/// finishing asserted that nothing of the fan-out was still with the driver).
#[test]
fn a_best_effort_leg_dropped_with_its_wait_armed_is_taken_back_before_completing() {
    use std::io::Write;
    let _s = serial();
    run_configs(&backends(), |cfg| {
        let mut e = cfg.engine_from(cfg.builder().pipe_size(64 << 10));
        let payload = Rng::for_test("armed").bytes(4 << 20);
        let (src, mut feed) = std::io::pipe().expect("pipe");
        set_nonblocking(&feed, true);
        let (d1, s1) = destination_of(Kind::Tcp, "armed1", &[]);
        let (stalled, stalled_peer) = tcp_pair_small_buffers();
        let max_lag = 1 << 20;
        let f = FanOut::new(OwnedFd::from(src))
            .length(Length::Exact(payload.len() as u64))
            .destination(d1, Policy::Required)
            .destination(stalled, Policy::BestEffort { max_lag });
        e.submit_fan_out(f).expect("submit");
        let mut done = Vec::new();
        let mut rest = &payload[..];
        let deadline = std::time::Instant::now() + HANG_GUARD;
        while !rest.is_empty() {
            assert!(std::time::Instant::now() < deadline, "[{cfg}] hang guard");
            match feed.write(&rest[..rest.len().min(16 << 10)]) {
                Ok(n) => rest = &rest[n..],
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => panic!("[{cfg}] feed the source: {err}"),
            }
            e.wait(&mut done, Some(Duration::from_millis(1)))
                .expect("wait");
        }
        drop(feed);
        let c = done.pop().unwrap_or_else(|| one(&mut e, "armed"));
        assert!(
            done.is_empty() && e.in_flight() == 0,
            "[{cfg}] one completion"
        );
        assert!(c.is_ok(), "[{cfg}] {:?}", c.result);
        assert_eq!(c.delivered, payload.len() as u64, "[{cfg}] taken");
        let mut b = c.branches.into_iter();
        let (b1, bs) = (b.next().unwrap(), b.next().unwrap());
        assert!(
            matches!(bs.result, Err(Error::Lagged { max_lag: m, .. }) if m == max_lag),
            "[{cfg}] {:?}",
            bs.result
        );
        check_dropped(bs, stalled_peer, &payload, &format!("[{cfg}] armed"));
        assert!(b1.result.is_ok(), "[{cfg}] {:?}", b1.result);
        assert_eq!(b1.delivered, payload.len() as u64);
        drop(b1.destination);
        assert_eq!(checksum(&s1.contents("armed")), checksum(&payload));
    });
}

/// A best-effort destination that stops reading near the end of the stream, within its
/// `max_lag` (so never dropped for lag): the required destination gets its end of file as
/// soon as it has every byte, not when the mirror is done. With no linger the fan-out then
/// waits for the mirror (until cancelled); with one, the mirror is dropped when it ends,
/// with `TimedOut` and exact counts, and the fan-out succeeds.
#[test]
fn a_stalled_best_effort_destination_never_holds_back_the_required_end_of_file() {
    let _s = serial();
    run_configs(&backends(), |cfg| {
        for linger in [None, Some(Duration::from_millis(300))] {
            let what = format!("linger {linger:?}");
            let mut e = cfg.engine_from(cfg.builder().pipe_size(64 << 10));
            let payload = Rng::for_test("linger").bytes(1 << 20);
            let (src, feed) = source_of(Kind::Unix, "linger", &payload);
            let (d1, s1) = destination_of(Kind::Tcp, "linger1", &[]);
            let (stalled, stalled_peer) = tcp_pair_small_buffers();
            let max_lag = 64 << 20;
            let f = FanOut::new(src)
                .destination(d1, Policy::Required)
                .destination(stalled, Policy::BestEffort { max_lag })
                .shutdown_destinations(true)
                .linger(linger);
            let id = e.submit_fan_out(f).expect("submit");
            let Sink::Stream(reader) = s1 else {
                unreachable!()
            };
            let mut done = Vec::new();
            let deadline = std::time::Instant::now() + HANG_GUARD;
            // The required peer reads to its end of file while the mirror holds bytes.
            while !reader.is_finished() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "[{cfg}] {what}: hang guard: the required destination got no end of file"
                );
                e.wait(&mut done, Some(Duration::from_millis(10))).unwrap();
            }
            let got = join(reader, &what).expect("read the required destination");
            assert_eq!(checksum(&got), checksum(&payload), "[{cfg}] {what}");
            let c = match linger {
                None => {
                    assert!(
                        done.is_empty(),
                        "[{cfg}] {what}: the mirror still holds it: {:?}",
                        done.first().map(|c| (
                            &c.result,
                            c.branches
                                .iter()
                                .map(|b| (&b.result, b.delivered, b.missed))
                                .collect::<Vec<_>>()
                        ))
                    );
                    assert!(e.cancel(id));
                    let c = one(&mut e, &what);
                    assert!(matches!(c.result, Err(Error::Cancelled)), "{:?}", c.result);
                    let b0 = &c.branches[0];
                    assert!(b0.result.is_ok(), "[{cfg}] {what}: {:?}", b0.result);
                    assert!(matches!(c.branches[1].result, Err(Error::Cancelled)));
                    c
                }
                Some(_) => {
                    let c = done.pop().unwrap_or_else(|| one(&mut e, &what));
                    assert!(c.is_ok(), "[{cfg}] {what}: {:?}", c.result);
                    assert!(c.branches[0].result.is_ok());
                    assert!(
                        matches!(c.branches[1].result, Err(Error::TimedOut)),
                        "[{cfg}] {what}: {:?}",
                        c.branches[1].result
                    );
                    c
                }
            };
            assert_eq!(c.delivered, payload.len() as u64, "[{cfg}] {what}: taken");
            assert_eq!(c.branches[0].delivered, payload.len() as u64);
            let mut b = c.branches.into_iter();
            let bs = b.nth(1).unwrap();
            assert!(bs.missed > 0, "[{cfg}] {what}: the mirror was behind");
            check_dropped(bs, stalled_peer, &payload, &format!("[{cfg}] {what}"));
            drop(c.source);
            feed.finish(&what);
        }
    });
}

#[test]
fn best_effort_destinations_reset_or_closed_change_nothing_for_the_others() {
    let _s = serial();
    run_configs(&backends(), |cfg| {
        let mut e = cfg.engine();
        let payload = Rng::for_test("reset").bytes(8 << 20);
        let (src, feed) = source_of(Kind::Tcp, "reset", &payload);
        let (d1, s1) = destination_of(Kind::Tcp, "reset1", &[]);
        // Resets after reading 1 MiB.
        let (mut resetter, d_reset) = tcp_pair();
        let reader = spawn_named("rs-test-reset", move || {
            let mut buf = vec![0u8; 1 << 20];
            resetter.set_read_timeout(Some(HANG_GUARD)).unwrap();
            resetter.read_exact(&mut buf).expect("read 1 MiB");
            set_linger_zero(&resetter);
            drop(resetter);
        });
        // Closed before the start.
        let (closed_peer, d_closed) = tcp_pair();
        set_linger_zero(&closed_peer);
        drop(closed_peer);
        let lag = Policy::BestEffort { max_lag: 64 << 20 };
        let f = FanOut::new(src)
            .destination(d_reset, lag)
            .destination(d1, Policy::Required)
            .destination(d_closed, lag);
        e.submit_fan_out(f).expect("submit");
        let c = one(&mut e, "reset");
        join_within(reader, HANG_GUARD, "resetting reader");
        assert!(c.is_ok(), "[{cfg}] {:?}", c.result);
        let mut b = c.branches.into_iter();
        let (br, b1, bc) = (b.next().unwrap(), b.next().unwrap(), b.next().unwrap());
        for (name, x) in [("reset", &br), ("closed", &bc)] {
            assert!(x.result.is_err(), "[{cfg}] {name}: {:?}", x.result);
            assert_eq!(
                x.delivered + x.missed,
                payload.len() as u64,
                "[{cfg}] {name}"
            );
        }
        assert!(
            br.delivered >= 1 << 20,
            "[{cfg}] the reset one read 1 MiB first"
        );
        assert!(b1.result.is_ok());
        assert_eq!(b1.delivered, payload.len() as u64);
        drop(b1.destination);
        assert_eq!(checksum(&s1.contents("reset")), checksum(&payload));
        feed.finish("reset");
    });
}

#[test]
fn a_required_destination_that_fails_fails_the_fan_out_with_exact_counts() {
    let _s = serial();
    run_configs(&backends(), |cfg| {
        let mut e = cfg.engine();
        let payload = Rng::for_test("fail").bytes(8 << 20);
        let (src, feed) = source_of(Kind::Pipe, "fail", &payload);
        let (d1, s1) = destination_of(Kind::Unix, "fail1", &[]);
        let (mut failing_peer, failing) = tcp_pair();
        let reader = spawn_named("rs-test-fail", move || {
            let mut buf = vec![0u8; 512 << 10];
            failing_peer.set_read_timeout(Some(HANG_GUARD)).unwrap();
            failing_peer.read_exact(&mut buf).expect("read");
            set_linger_zero(&failing_peer);
            buf.len()
        });
        let f = FanOut::new(src)
            .destination(d1, Policy::Required)
            .destination(failing, Policy::Required);
        e.submit_fan_out(f).expect("submit");
        let c = one(&mut e, "fail");
        join_within(reader, HANG_GUARD, "failing reader");
        assert!(
            matches!(c.result, Err(Error::DestinationFailed { index: 1 })),
            "[{cfg}] {:?}",
            c.result
        );
        let mut b = c.branches.into_iter();
        let (b1, bf) = (b.next().unwrap(), b.next().unwrap());
        assert!(
            bf.result
                .as_ref()
                .is_err_and(|e| e.raw_os_error().is_some())
        );
        assert!(matches!(
            b1.result,
            Err(Error::DestinationFailed { index: 1 })
        ));
        for x in [&b1, &bf] {
            assert_eq!(x.delivered + x.missed, c.delivered, "[{cfg}]");
        }
        assert_eq!(c.undelivered, b1.missed.max(bf.missed));
        drop(b1.destination);
        let got = s1.contents("fail");
        assert_eq!(got.len() as u64, b1.delivered, "[{cfg}] exact count");
        assert_same_bytes(&got, &payload[..got.len()], "fail1");
        drop(c.source); // the writer sees EPIPE
        let _ = feed;
    });
}

#[test]
fn cancel_mid_flight_with_bytes_in_several_pipes() {
    let _s = serial();
    run_configs(&backends(), |cfg| {
        let mut e = cfg.engine();
        // More than the four destinations' socket buffers and pipes can hold: nobody reads
        // them, so the fan-out stops moving with bytes in its trunk and legs' pipes.
        let (src, feed) = source_of(
            Kind::Tcp,
            "cancel",
            &Rng::for_test("cancel").bytes(96 << 20),
        );
        let mut peers = Vec::new();
        let mut f = FanOut::new(src);
        for _ in 0..4 {
            let (p, d) = tcp_pair();
            peers.push(p);
            f = f.destination(d, Policy::Required);
        }
        let id = e.submit_fan_out(f).expect("submit");
        let mut done = Vec::new();
        let deadline = std::time::Instant::now() + HANG_GUARD;
        let (mut last, mut still) = (0, 0);
        while still < 10 {
            assert!(std::time::Instant::now() < deadline, "[{cfg}] hang guard");
            e.wait(&mut done, Some(Duration::from_millis(50))).unwrap();
            let now = e.delivered(id).expect("in flight");
            (last, still) = if now == last {
                (now, still + 1)
            } else {
                (now, 0)
            };
        }
        assert!(
            done.is_empty() && last < 96 << 20,
            "[{cfg}] it cannot have finished"
        );
        assert!(e.cancel(id));
        let c = one(&mut e, "cancel");
        assert!(
            matches!(c.result, Err(Error::Cancelled)),
            "[{cfg}] {:?}",
            c.result
        );
        assert_eq!(c.delivered, last);
        for b in &c.branches {
            assert!(matches!(b.result, Err(Error::Cancelled)));
            assert_eq!(b.delivered + b.missed, c.delivered);
        }
        assert!(c.undelivered > 0, "[{cfg}] bytes were in the pipes");
        assert!(e.stats().pipes_discarded > 0, "[{cfg}] {:?}", e.stats());
        // Each peer reads exactly what its branch says it delivered.
        let counts: Vec<u64> = c.branches.iter().map(|b| b.delivered).collect();
        drop(c);
        for (mut p, n) in peers.into_iter().zip(counts) {
            let mut v = Vec::new();
            p.set_read_timeout(Some(HANG_GUARD)).unwrap();
            p.read_to_end(&mut v).expect("read a cancelled destination");
            assert_eq!(v.len() as u64, n, "[{cfg}] exact count");
        }
        if let Feed::Stream(w) = feed {
            let _ = join(w, "cancel writer"); // it fails once the source is closed
        }
    });
}

#[test]
fn a_pipe_budget_smaller_than_the_fan_out_waits_and_never_exceeds() {
    let _s = serial();
    run_configs(&backends(), |cfg| {
        // Three 64 KiB pipes for a trunk and eight destinations.
        let b = cfg
            .builder()
            .pipe_size(64 << 10)
            .pipe_budget(3 * (64 << 10));
        let mut e = cfg.engine_from(b);
        let payload = Rng::for_test("budget").bytes(4 << 20);
        let (src, feed) = source_of(Kind::Tcp, "budget", &payload);
        let mut f = FanOut::new(src).length(Length::Exact(payload.len() as u64));
        let mut sinks = Vec::new();
        for i in 0..8 {
            let k = [Kind::Tcp, Kind::File, Kind::Unix][i % 3];
            let (d, s) = destination_of(k, &format!("budget{i}"), &[]);
            f = f.destination(d, Policy::Required);
            sinks.push(s);
        }
        e.submit_fan_out(f).expect("submit");
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + HANG_GUARD;
        while out.is_empty() {
            assert!(std::time::Instant::now() < deadline, "[{cfg}] hang guard");
            e.wait(&mut out, Some(Duration::from_millis(100))).unwrap();
            assert!(
                e.stats().pipe_bytes <= 3 * (64 << 10),
                "[{cfg}] over budget"
            );
        }
        let c = out.pop().unwrap();
        assert!(c.is_ok(), "[{cfg}] {:?}", c.result);
        for (b, s) in c.branches.into_iter().zip(sinks) {
            assert_eq!(b.delivered, payload.len() as u64);
            drop(b.destination);
            assert_eq!(checksum(&s.contents("budget")), checksum(&payload));
        }
        feed.finish("budget");
    });
}

#[test]
fn a_budget_of_one_pipe_is_refused_rather_than_deadlocked() {
    let _s = serial();
    run_configs(&backends(), |cfg| {
        let b = cfg.builder().pipe_size(64 << 10).pipe_budget(64 << 10);
        let mut e = cfg.engine_from(b);
        let (src, feed) = source_of(Kind::Tcp, "one", &[1, 2, 3]);
        let (d1, _s1) = destination_of(Kind::Tcp, "one1", &[]);
        let (d2, _s2) = destination_of(Kind::Tcp, "one2", &[]);
        let f = FanOut::new(src)
            .destination(d1, Policy::Required)
            .destination(d2, Policy::Required);
        e.submit_fan_out(f).expect("submit");
        let c = one(&mut e, "one pipe");
        assert!(
            matches!(c.result, Err(Error::PipeBudget(_))),
            "[{cfg}] {:?}",
            c.result
        );
        drop(c);
        feed.finish("one");
    });
}

#[test]
fn bad_fan_outs_are_refused() {
    let _s = serial();
    run_configs(&backends(), |cfg| {
        let mut e = cfg.engine();
        let (_a, b) = tcp_pair();
        let r = e.submit_fan_out(FanOut::new(b)).unwrap_err();
        assert!(matches!(r.error, Error::InvalidInput(_)));
        let (_p, s) = tcp_pair();
        let (_q, d) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let (_x, d2) = tcp_pair();
        let f = FanOut::new(s)
            .destination(d, Policy::Required)
            .destination(OwnedFd::from(d2), Policy::Required);
        e.submit_fan_out(f).expect("submit");
        let c = one(&mut e, "records");
        assert!(
            matches!(c.result, Err(Error::InvalidInput(_))),
            "[{cfg}] {:?}",
            c.result
        );
        assert_eq!(e.in_flight(), 0);
    });
}
