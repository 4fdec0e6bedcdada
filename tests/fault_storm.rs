//! Fault storms: many transfers at once on one engine, with faults injected at seeded random
//! moments and exact byte accounting. Every test runs on both backends × the Chain, Inline
//! and Auto strategies (`common::for_each_config`), takes `common::serial()`, and runs each
//! configuration inside its own `LeakCheck` (no fd, pipe or thread left behind):
//!
//! - `resets_at_random_points_in_either_direction`: 100 concurrent socket→socket transfers
//!   (TCP, a fifth of each side Unix); 30 of them, chosen at random, lose a peer at a random
//!   byte offset: 15 on the source side, 15 on the destination side (TCP: `SO_LINGER` 0 then
//!   close, a reset; Unix has no reset: a close). The other 70 finish intact;
//! - `half_close_is_passed_through`: a proxy's two transfers on one pair of sockets (shared
//!   endpoints): the client's half-close ends one direction at end of file, exactly, while
//!   the other direction keeps flowing until the server's own end of file;
//! - `stalled_reader_then_resumes`: a destination reader that stops until the destination
//!   socket is full and bytes are stranded in the engine's pipe; the engine stays parked (no
//!   busy-spin) over many `poll`/`wait` turns, then delivers every byte once reading resumes;
//! - `cancellation_storm`: 1,000 transfers with data flowing, a random half cancelled (at
//!   random turns, or once a random number of their bytes has arrived); exactly one
//!   completion each, and a cancel that returned `true` means `Err(Cancelled)`;
//! - `engine_dropped_mid_storm`: 1,000 transfers, the engine dropped while hundreds are
//!   mid-flight: every peer sees end of file or a reset, nothing hangs, io-wq workers exit;
//! - `idle_transfers_do_not_starve_ready_ones_of_pipes` (found by the storms): with the pipe
//!   budget used up, an idle transfer must not keep a ready one from running.
//!
//! The storms' peers are driven by a few helper threads with non-blocking I/O (one writer and
//! one reader thread for 100 transfers, two of each for 1,000: `common::storm`, the harness
//! these tests share with any other storm). Each payload is a window of
//! one random pool at a random start, so bytes of one transfer arriving on another are
//! caught; readers check every byte as it arrives.
//!
//! Seeds come from the test and configuration names (`Rng::for_test`) and are printed in
//! every failure message. Every wait has a hang guard (`common::HANG_GUARD`); no assertion
//! depends on timing: where a race is possible (a cancel against a transfer's end, a reset
//! against the engine's last write), the test accepts exactly the outcomes each side of the
//! race allows, and nothing else.

mod common;

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::storm::{
    IO_CHUNK, Outcome, Outcomes, Plan, Progress, ReaderEnd, ReaderReport, WriterEnd, WriterReport,
    join_reports, plans, spawn_storm_io, submit_storm,
};
use common::sys::{SIOCINQ, SIOCOUTQ};
use common::{
    Config, DROP_GUARD, Kind, Peer, Rng, errno, seed_of, shuffle, shutdown_shared_write,
    sock_ioctl, wait_for, writable_now,
};
use ringsplice::{Endpoint, Engine, Error};

// ---------------------------------------------------------------------------------------
// 1. Resets at random points, in either direction.

/// Transfers in the reset storm.
const RESET_STORM: usize = 100;
/// Of which this many lose their source peer, and as many their destination peer.
const RESETS_PER_SIDE: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The source peer resets after writing this many bytes.
    Source(usize),
    /// The destination peer resets after reading this many bytes.
    Destination(usize),
}

fn reset_storm(cfg: Config) {
    let salt = format!("fault_storm resets {cfg}");
    let what = format!("[{cfg}] reset storm (seed {:#x})", seed_of(&salt));
    let mut rng = Rng::for_test(&salt);
    let (min, max) = (64 << 10, 1 << 20);
    let pool = Arc::new(rng.bytes((1 << 20) + max));
    let plans = plans(&mut rng, RESET_STORM, pool.len(), min, max);
    let mut order: Vec<usize> = (0..RESET_STORM).collect();
    shuffle(&mut order, &mut rng);
    let mut faults = vec![Fault::None; RESET_STORM];
    for (n, &i) in order.iter().take(2 * RESETS_PER_SIDE).enumerate() {
        let at = rng.below(plans[i].len as u64) as usize;
        faults[i] = if n < RESETS_PER_SIDE {
            Fault::Source(at)
        } else {
            Fault::Destination(at)
        };
    }

    let mut e = cfg.engine();
    let mut outcomes = Outcomes::new(RESET_STORM);
    // Destinations hold little (the engine's socket a ~32 KiB send buffer, a TCP reader a
    // fixed ~256 KiB receive buffer, still above the loopback MSS), so a reader that resets
    // usually finds the engine with bytes still to send.
    let (_, mut writers, mut readers) = submit_storm(
        cfg,
        &mut e,
        &plans,
        &mut outcomes,
        &what,
        |kind, dst, reader| {
            common::set_sndbuf(dst, 16 << 10);
            if kind == Kind::Tcp {
                common::set_rcvbuf(reader, 128 << 10);
            }
        },
    );
    for (i, f) in faults.iter().enumerate() {
        match *f {
            Fault::Source(at) => writers[i].reset_at = Some(at),
            Fault::Destination(at) => readers[i].reset_at = Some(at),
            Fault::None => {}
        }
    }
    let release = Arc::new(AtomicBool::new(true));
    let progress = Progress::new(RESET_STORM);
    let (w, r) = spawn_storm_io(writers, readers, 1, &pool, &release, &progress);
    outcomes.collect_rest(&mut e, &what);
    let wrote = join_reports(w, RESET_STORM, &format!("{what}: writer"));
    let read = join_reports(r, RESET_STORM, &format!("{what}: reader"));

    let mut failures = Vec::new();
    for i in 0..RESET_STORM {
        let p = plans[i];
        let o = outcomes.by_idx[i].as_ref().expect("collected");
        let w = wrote[i].expect("writer report");
        let r = read[i].clone().expect("reader report");
        let label = format!(
            "#{i} {:?}->{:?} {} bytes {:?}",
            p.src, p.dst, p.len, faults[i]
        );
        if let Err(msg) = check_reset_outcome(p, faults[i], o, w, &r) {
            failures.push(format!(
                "{label}: {msg}\n    completion {:?} delivered {} undelivered {}; writer {w:?}; \
                 reader {r:?}",
                o.result, o.delivered, o.undelivered
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {RESET_STORM} transfers broke an invariant:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    let count = |f: &dyn Fn(Fault, &Outcome) -> bool| {
        (0..RESET_STORM)
            .filter(|&i| f(faults[i], outcomes.by_idx[i].as_ref().expect("collected")))
            .count()
    };
    eprintln!(
        "{what}: source resets: {} failed, {} ended Ok (Unix close); destination resets: {} \
         failed, {} Ok (all bytes already accepted)",
        count(&|f, o| matches!(f, Fault::Source(_)) && o.result.is_err()),
        count(&|f, o| matches!(f, Fault::Source(_)) && o.result.is_ok()),
        count(&|f, o| matches!(f, Fault::Destination(_)) && o.result.is_err()),
        count(&|f, o| matches!(f, Fault::Destination(_)) && o.result.is_ok()),
    );
}

/// The invariants of one transfer of the reset storm.
fn check_reset_outcome(
    p: Plan,
    fault: Fault,
    o: &Outcome,
    w: WriterReport,
    r: &ReaderReport,
) -> Result<(), String> {
    let len = p.len as u64;
    if let Some(bad) = &r.bad {
        return Err(format!("the reader's bytes: {bad}"));
    }
    let got = r.got as u64;
    match fault {
        Fault::None => {
            if o.result.is_err() {
                return Err("an untouched transfer failed".into());
            }
            if (o.delivered, o.undelivered, got) != (len, 0, len) {
                return Err("an untouched transfer did not deliver exactly its bytes".into());
            }
            if r.end != ReaderEnd::Eof || w.end != WriterEnd::Closed || w.written != p.len {
                return Err("an untouched transfer's peers did not end cleanly".into());
            }
        }
        Fault::Source(at) => {
            if w.end != WriterEnd::Reset || w.written != at {
                return Err(format!("the writer did not reset at byte {at}"));
            }
            // The destination is healthy: the reader gets exactly what was delivered, and
            // nothing is left stranded in the engine's pipe.
            if r.end != ReaderEnd::Eof || got != o.delivered {
                return Err(format!(
                    "the reader got {got} bytes (end {:?}), delivered says {}",
                    r.end, o.delivered
                ));
            }
            if o.undelivered != 0 {
                return Err("bytes undelivered into a healthy destination".into());
            }
            if p.src == Kind::Tcp {
                // A RST with no FIN before it: the engine's read fails with ECONNRESET once
                // the bytes queued before it are read. Bytes the writer's socket still held
                // are dropped by the reset, so the engine may have had fewer than `at`.
                if errno(&o.result) != Some(common::sys::ECONNRESET) {
                    return Err("want Err(ECONNRESET) after the source peer's reset".into());
                }
                if o.delivered > at as u64 {
                    return Err(format!("delivered more than the {at} bytes written"));
                }
            } else {
                // A Unix stream has no reset: closing the writer is an end of file, and every
                // byte written was already in the engine's socket.
                if o.result.is_err() || o.delivered != at as u64 {
                    return Err(format!(
                        "want Ok with exactly the {at} bytes written before the close"
                    ));
                }
            }
        }
        Fault::Destination(at) => {
            if r.end != ReaderEnd::Reset || r.got != at {
                return Err(format!("the reader did not reset at byte {at}"));
            }
            // The writer either wrote everything and closed, or found the engine's end gone
            // (it closes the source when the transfer fails).
            if !(w.end == WriterEnd::Closed && w.written == p.len || w.end == WriterEnd::PeerGone) {
                return Err("the writer ended oddly".into());
            }
            match &o.result {
                // Legitimate when every byte was accepted by the destination socket before
                // the reset reached it: then the whole payload counts as delivered.
                Ok(()) => {
                    if (o.delivered, o.undelivered) != (len, 0) {
                        return Err("Ok without the whole payload delivered".into());
                    }
                }
                Err(_) => {
                    let e = errno(&o.result);
                    if e != Some(common::sys::EPIPE) && e != Some(common::sys::ECONNRESET) {
                        return Err("want Err(EPIPE or ECONNRESET) after the reader's reset".into());
                    }
                    // Bytes the reader read were delivered; bytes the destination socket
                    // accepted after that count too, so delivered may be more, never less.
                    if o.delivered < at as u64 || o.delivered > len {
                        return Err(format!(
                            "delivered {} outside [{at} read by the peer, {len} sent]",
                            o.delivered
                        ));
                    }
                    if o.delivered + o.undelivered > w.written as u64 {
                        return Err(format!(
                            "delivered + undelivered exceeds the {} bytes written",
                            w.written
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn resets_at_random_points_in_either_direction() {
    let _g = common::serial();
    common::for_each_config(reset_storm);
}

// ---------------------------------------------------------------------------------------
// 2. Half-close passed through a proxy.

fn half_close(cfg: Config, kind: Kind) {
    let salt = format!("fault_storm half-close {cfg} {kind:?}");
    let what = format!(
        "[{cfg}] {kind:?} half-close through a proxy (seed {:#x})",
        seed_of(&salt)
    );
    let mut rng = Rng::for_test(&salt);
    let upload = rng.bytes(300 << 10);
    let early = rng.bytes(200 << 10);
    let late = rng.bytes(300 << 10);

    // client <-> pa (the proxy's client-facing socket); server <-> pb (server-facing).
    let (pa, client) = common::stream_pair(kind, true);
    let (pb, server) = common::stream_pair(kind, false);
    let (pa, pb) = (Arc::new(pa), Arc::new(pb));
    let mut e = cfg.engine();
    let a_to_b = e
        .submit(
            cfg.transfer(Endpoint::shared(pa.clone()), Endpoint::shared(pb.clone()))
                .tag(1),
        )
        .expect("submit A->B");
    let b_to_a = e
        .submit(
            cfg.transfer(Endpoint::shared(pb.clone()), Endpoint::shared(pa.clone()))
                .tag(2),
        )
        .expect("submit B->A");
    e.flush().expect("flush");

    // The client uploads then half-closes, and reads the server's bytes to end of file.
    let mut c_out = client.try_clone();
    let up = upload.clone();
    let client_writer = common::spawn_named("rs-test-client-writer", move || {
        c_out.write_all(&up)?;
        c_out.shutdown_write()
    });
    let mut c_in = client;
    c_in.set_read_timeout(common::HANG_GUARD);
    let client_reader = common::spawn_named("rs-test-client-reader", move || {
        let mut v = Vec::new();
        c_in.read_to_end(&mut v).map(|_| v)
    });
    // The server reads the upload to end of file; it sends `early` at once and `late` only
    // after it has seen that end of file, then half-closes.
    let server_eof = Arc::new(AtomicBool::new(false));
    let (eof_tx, eof_rx) = mpsc::channel::<()>();
    let mut s_in = server.try_clone();
    s_in.set_read_timeout(common::HANG_GUARD);
    let seen = server_eof.clone();
    let server_reader = common::spawn_named("rs-test-server-reader", move || {
        let mut v = Vec::new();
        let r = s_in.read_to_end(&mut v).map(|_| v);
        seen.store(true, Ordering::SeqCst);
        let _ = eof_tx.send(());
        r
    });
    let mut s_out = server;
    let (e1, l1) = (early.clone(), late.clone());
    let server_writer = common::spawn_named("rs-test-server-writer", move || {
        s_out.write_all(&e1)?;
        eof_rx
            .recv_timeout(common::HANG_GUARD)
            .map_err(|_| io::Error::other("server never saw the upload's end of file"))?;
        s_out.write_all(&l1)?;
        s_out.shutdown_write()
    });

    // A->B ends at the client's end of file, with exactly the upload.
    let mut others = Vec::new();
    let c = wait_for(&mut e, a_to_b, &mut others, &format!("{what}: A->B"));
    assert!(
        others.is_empty(),
        "{what}: B->A finished early: {others:#?}"
    );
    common::assert_ok_completion(&c, a_to_b, 1, upload.len() as u64, &format!("{what}: A->B"));
    assert_eq!(e.in_flight(), 1, "{what}: B->A must still be in flight");
    assert!(
        !server_eof.load(Ordering::SeqCst),
        "{what}: the server saw end of file before the proxy passed the half-close on"
    );
    drop(c);
    // The proxy passes the half-close on; the server sees end of file and sends `late`,
    // which must still flow B->A although A's read side has ended.
    shutdown_shared_write(&pb, kind);
    let c = wait_for(&mut e, b_to_a, &mut others, &format!("{what}: B->A"));
    common::assert_ok_completion(
        &c,
        b_to_a,
        2,
        (early.len() + late.len()) as u64,
        &format!("{what}: B->A"),
    );
    drop(c);
    assert_eq!(e.in_flight(), 0, "{what}: in flight after both completions");
    shutdown_shared_write(&pa, kind);

    common::join(client_writer, &format!("{what}: client writer"))
        .unwrap_or_else(|err| panic!("{what}: client upload: {err}"));
    common::join(server_writer, &format!("{what}: server writer"))
        .unwrap_or_else(|err| panic!("{what}: server send: {err}"));
    let got_server = common::join(server_reader, &format!("{what}: server reader"))
        .unwrap_or_else(|err| panic!("{what}: server read: {err}"));
    let got_client = common::join(client_reader, &format!("{what}: client reader"))
        .unwrap_or_else(|err| panic!("{what}: client read: {err}"));
    common::assert_same_bytes(&got_server, &upload, &format!("{what}: server got"));
    let mut want = early;
    want.extend_from_slice(&late);
    common::assert_same_bytes(&got_client, &want, &format!("{what}: client got"));
    assert_eq!(Arc::strong_count(&pa), 1, "{what}: A still referenced");
    assert_eq!(Arc::strong_count(&pb), 1, "{what}: B still referenced");
}

#[test]
fn half_close_is_passed_through() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        for kind in [Kind::Tcp, Kind::Unix] {
            half_close(cfg, kind);
        }
    });
}

// ---------------------------------------------------------------------------------------
// 3. A stalled reader, then resumed.

/// Turns (alternately `poll` and `wait` of 5 ms) the engine spends stalled.
const STALLED_TURNS: usize = 40;
/// Most `inline_calls + sqes` the engine may spend over all the stalled turns: a parked
/// engine spends none; a few are allowed for a last wake-up racing the start of the stall.
/// An engine that spins spends at least one per turn.
const MAX_STALLED_WORK: u64 = 8;
/// Consecutive turns with nothing moving before the stall counts as reached.
const QUIET_TURNS: usize = 5;

/// Where every byte written to the source is, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Where {
    written: usize,
    /// The writer's socket: sent but unacknowledged, or unsent (TCP).
    writer_out: usize,
    /// The engine's source socket, unread.
    src_in: usize,
    /// The engine's destination socket, unacknowledged or unsent (TCP).
    dst_out: usize,
    /// The reader's socket, unread.
    reader_in: usize,
}

impl Where {
    fn take(
        kind: Kind,
        written: usize,
        writer: RawFd,
        src: RawFd,
        dst: RawFd,
        reader: RawFd,
    ) -> Where {
        // A Unix stream queues a write straight into the peer's receive queue (its send
        // queue counts the same bytes), so only the receive queues count.
        let tcp = kind == Kind::Tcp;
        Where {
            written,
            writer_out: if tcp { sock_ioctl(writer, SIOCOUTQ) } else { 0 },
            src_in: sock_ioctl(src, SIOCINQ),
            dst_out: if tcp { sock_ioctl(dst, SIOCOUTQ) } else { 0 },
            reader_in: sock_ioctl(reader, SIOCINQ),
        }
    }

    /// Bytes taken from the source and not yet in the destination socket: in the engine's
    /// pipe. (A byte counted twice, acknowledged late, only lowers this.)
    fn staged(&self) -> i64 {
        self.written as i64 - (self.writer_out + self.src_in + self.dst_out + self.reader_in) as i64
    }
}

/// Writes as much of `payload` as the non-blocking writer takes now.
fn write_some(writer: &mut Peer, payload: &[u8], written: &mut usize, what: &str) {
    while *written < payload.len() {
        let end = payload.len().min(*written + IO_CHUNK);
        match writer.write(&payload[*written..end]) {
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("{what}: writing the source: {e}"),
        }
    }
}

fn stalled_reader(cfg: Config, kind: Kind) {
    let salt = format!("fault_storm stall {cfg} {kind:?}");
    let what = format!(
        "[{cfg}] {kind:?} stalled reader (seed {:#x})",
        seed_of(&salt)
    );
    let mut rng = Rng::for_test(&salt);
    let payload = rng.bytes(2 << 20);
    let (src, mut writer) = common::stream_pair(kind, true);
    let (dst, reader) = common::stream_pair(kind, false);
    // Small buffers make the stall come quickly: the source holds little, the destination
    // socket has the smallest send buffer (TCP still queues one splice's worth past it). The
    // reader's receive buffer stays at its default: a TCP window below the loopback MSS
    // makes reading it afterwards crawl through zero-window probes.
    common::set_sndbuf(&writer, 64 << 10);
    common::set_rcvbuf(&src, 128 << 10);
    common::set_sndbuf(&dst, 4096);
    common::set_nonblocking(&writer, true);
    let fds = (
        writer.as_raw_fd(),
        src.as_raw_fd(),
        dst.as_raw_fd(),
        reader.as_raw_fd(),
    );
    let look = |written: usize| Where::take(kind, written, fds.0, fds.1, fds.2, fds.3);

    let mut e = cfg.engine();
    let id = e.submit(cfg.transfer(src, dst).tag(3)).expect("submit");
    let mut out = Vec::new();
    let mut written = 0;

    // Write and turn until nothing moves: the destination socket is full and unwritable,
    // bytes sit in the engine's pipe (so it cannot read the source), and the source's
    // buffers are full. Only the reader can change that, and it does not read.
    //
    // "Nothing moves" is seen by watching, so under heavy slowdown (QEMU's emulation with
    // two guests on two cores) the kernel can still free room in the destination after the
    // quiet turns (loopback ACKs and window updates arriving late), and the engine then
    // rightly moves those bytes. Such a round is not a stall: watch again, a bounded number
    // of times, until a round of stalled turns sees the engine deliver nothing and take
    // nothing from the source.
    let deadline = Instant::now() + common::HANG_GUARD;
    let mut rounds = 0;
    let (stuck, end, work) = loop {
        let mut last: Option<Where> = None;
        let mut quiet = 0;
        let stuck = loop {
            assert!(
                Instant::now() < deadline,
                "{what}: hang guard: no stall after {:?}; last {last:?}",
                common::HANG_GUARD
            );
            write_some(&mut writer, &payload, &mut written, &what);
            assert!(
                written < payload.len(),
                "{what}: all {} bytes were written without a stall: the buffers hold more than \
                 this test assumes ({:?})",
                payload.len(),
                look(written)
            );
            e.poll(&mut out).expect("poll");
            e.wait(&mut out, Some(Duration::from_millis(2)))
                .expect("wait");
            assert!(out.is_empty(), "{what}: finished early: {out:#?}");
            let now = look(written);
            if last == Some(now) && now.staged() > 0 && now.reader_in > 0 && !writable_now(fds.2) {
                quiet += 1;
            } else {
                quiet = 0;
            }
            last = Some(now);
            if quiet >= QUIET_TURNS {
                break now;
            }
        };

        // Stalled: turns of `poll` and `wait`, counted, with nothing to do.
        let before = e.stats();
        let delivered_before = e.delivered(id);
        for turn in 0..STALLED_TURNS {
            if turn % 2 == 0 {
                e.poll(&mut out).expect("poll");
            } else {
                e.wait(&mut out, Some(Duration::from_millis(5)))
                    .expect("wait");
            }
            assert!(out.is_empty(), "{what}: finished while stalled: {out:#?}");
        }
        let after = e.stats();
        let work = (after.inline_calls - before.inline_calls) + (after.sqes - before.sqes);
        let end = look(written);
        eprintln!(
            "{what}: stalled with {stuck:?} (staged {}); {work} calls + SQEs while stalled",
            stuck.staged()
        );
        // The engine delivered nothing more, and took nothing off the source's receive
        // queue (which may still grow with bytes crossing loopback from the writer).
        if e.delivered(id) == delivered_before && end.src_in >= stuck.src_in {
            break (stuck, end, (work, before, after));
        }
        rounds += 1;
        assert!(
            rounds < 20,
            "{what}: never stayed stalled: the engine moved bytes in each of {rounds} rounds \
             of stalled turns; last {stuck:?} -> {end:?}"
        );
    };
    // In a real stall the engine must not spin: a poll re-armed at most, nothing more.
    let (work, before, after) = work;
    assert!(
        work <= MAX_STALLED_WORK,
        "{what}: the engine spun while stalled: {} inline calls + {} SQEs over {STALLED_TURNS} \
         turns (at most {MAX_STALLED_WORK} allowed); before {before:?}, after {after:?}; \
         stalled at {stuck:?}",
        after.inline_calls - before.inline_calls,
        after.sqes - before.sqes
    );
    assert!(
        common::queued(&reader, 1) == 1 && end.staged() > 0,
        "{what}: no bytes stuck in the destination and the pipe: {end:?}"
    );

    // Resume: the reader reads to end of file; the rest is written and the source closed.
    let reader = common::spawn_reader(reader);
    while written < payload.len() {
        assert!(
            Instant::now() < deadline + common::HANG_GUARD,
            "{what}: hang guard: {written} of {} bytes written after resuming",
            payload.len()
        );
        write_some(&mut writer, &payload, &mut written, &what);
        e.poll(&mut out).expect("poll");
        e.wait(&mut out, Some(Duration::from_millis(2)))
            .expect("wait");
        assert!(
            out.is_empty(),
            "{what}: finished before the end of file: {out:#?}"
        );
    }
    drop(writer);
    let c = common::wait_one(&mut e, &what);
    common::assert_ok_completion(&c, id, 3, payload.len() as u64, &what);
    drop(c);
    let got = common::join(reader, &format!("{what}: reader")).expect("read the destination");
    common::assert_same_bytes(&got, &payload, &what);
}

#[test]
fn stalled_reader_then_resumes() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        for kind in [Kind::Tcp, Kind::Unix] {
            stalled_reader(cfg, kind);
        }
    });
}

// ---------------------------------------------------------------------------------------
// 4. Cancellation storm.

/// Transfers in the cancellation and drop storms: 4,000 sockets, well under the fd limit.
const STORM: usize = 1000;
/// Writer threads and reader threads for a storm of `STORM`.
const STORM_THREADS: usize = 2;
/// Bytes a storm writer writes to one peer per pass: paced, so that all 1,000 transfers are
/// mid-payload for many turns.
const STORM_PACE: usize = 2 << 10;
/// Turns over which the turn-triggered cancels are spread.
const CANCEL_TURNS: usize = 120;

/// The storms' engine. Its pipes are 64 KiB, so the default pipe budget (256 MiB) holds a
/// pipe for every one of the 1,000 transfers: what the storms test is cancellation and
/// dropping, not the budget. (With 1 MiB pipes, 256 idle Chain transfers take the whole
/// budget and starve the others: `idle_transfers_do_not_starve_ready_ones_of_pipes`.)
fn storm_engine(cfg: Config) -> Engine {
    cfg.engine_from(cfg.builder().pipe_size(64 << 10))
}

/// When a cancellation target is cancelled.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// At this turn of the storm.
    Turn(usize),
    /// As soon as this many of its bytes have been written to its source (mid-payload: the
    /// source has not ended), or its completion has been collected.
    Bytes(usize),
}

fn cancel_storm(cfg: Config) {
    let salt = format!("fault_storm cancels {cfg}");
    let what = format!("[{cfg}] cancellation storm (seed {:#x})", seed_of(&salt));
    let mut rng = Rng::for_test(&salt);
    let (min, max) = (8 << 10, 128 << 10);
    let pool = Arc::new(rng.bytes((1 << 20) + max));
    let plans = plans(&mut rng, STORM, pool.len(), min, max);
    // Half of the sources hold their end of file back until every cancel has been made:
    // those transfers cannot have finished when they are cancelled.
    let hold: Vec<bool> = (0..STORM).map(|_| rng.below(2) == 0).collect();
    // A random half is cancelled: half of those at a random turn, half once a random number
    // of their bytes has been written.
    let mut order: Vec<usize> = (0..STORM).collect();
    shuffle(&mut order, &mut rng);
    let mut pending: Vec<(usize, Trigger)> = order
        .iter()
        .take(STORM / 2)
        .map(|&i| {
            let t = if rng.below(2) == 0 {
                Trigger::Turn(rng.below(CANCEL_TURNS as u64) as usize)
            } else {
                Trigger::Bytes(rng.range(1, plans[i].len as u64 - 1) as usize)
            };
            (i, t)
        })
        .collect();

    let mut e = storm_engine(cfg);
    let mut outcomes = Outcomes::new(STORM);
    let (ids, mut writers, readers) =
        submit_storm(cfg, &mut e, &plans, &mut outcomes, &what, |_, _, _| {});
    for (w, &h) in writers.iter_mut().zip(&hold) {
        w.hold = h;
        w.chunk = STORM_PACE;
    }
    let release = Arc::new(AtomicBool::new(false));
    let progress = Progress::new(STORM);
    let (w, r) = spawn_storm_io(writers, readers, STORM_THREADS, &pool, &release, &progress);

    // `Some((first, second))`: what cancel returned (a second cancel right after the first
    // for every eighth target).
    let mut cancelled: Vec<Option<(bool, Option<bool>)>> = vec![None; STORM];
    let mut out = Vec::new();
    let deadline = Instant::now() + common::HANG_GUARD;
    let mut turn = 0;
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{what}: hang guard: {} cancels not made after {:?} (turn {turn}); stats {:?}",
            pending.len(),
            common::HANG_GUARD,
            e.stats()
        );
        e.poll(&mut out)
            .unwrap_or_else(|err| panic!("{what}: poll: {err}"));
        outcomes.record(&mut out, &what);
        let mut n = 0;
        pending.retain(|&(i, trigger)| {
            let collected = outcomes.by_idx[i].is_some();
            let due = match trigger {
                Trigger::Turn(t) => turn >= t,
                Trigger::Bytes(b) => collected || progress.written(i) >= b,
            };
            if !due {
                return true;
            }
            let first = e.cancel(ids[i]);
            let second = (n % 8 == 0).then(|| e.cancel(ids[i]));
            n += 1;
            cancelled[i] = Some((first, second));
            assert!(
                !(collected && first),
                "{what}: #{i}: cancel() returned true after its completion was collected"
            );
            assert!(
                first || !hold[i],
                "{what}: #{i}: cancel() returned false at turn {turn} although its source has \
                 not ended yet (it cannot have finished)"
            );
            assert!(
                first || second != Some(true),
                "{what}: #{i}: cancel() returned false, then true"
            );
            false
        });
        e.wait(&mut out, Some(Duration::from_millis(1)))
            .unwrap_or_else(|err| panic!("{what}: wait: {err}"));
        outcomes.record(&mut out, &what);
        turn += 1;
    }
    release.store(true, Ordering::SeqCst);
    outcomes.collect_rest(&mut e, &what);
    let wrote = join_reports(w, STORM, &format!("{what}: writer"));
    let read = join_reports(r, STORM, &format!("{what}: reader"));

    let mut failures = Vec::new();
    let (mut hit, mut missed, mut partial) = (0, 0, 0);
    for i in 0..STORM {
        let p = plans[i];
        let o = outcomes.by_idx[i].as_ref().expect("collected");
        let w = wrote[i].expect("writer report");
        let r = read[i].clone().expect("reader report");
        match cancelled[i] {
            Some((true, _)) => {
                hit += 1;
                if o.delivered > 0 && o.delivered < p.len as u64 {
                    partial += 1;
                }
            }
            Some((false, _)) => missed += 1,
            None => {}
        }
        if let Err(msg) = check_cancel_outcome(p, cancelled[i], o, w, &r) {
            failures.push(format!(
                "#{i} {:?}->{:?} {} bytes, hold {}, cancel {:?}: {msg}\n    completion {:?} \
                 delivered {} undelivered {}; writer {w:?}; reader {r:?}",
                p.src, p.dst, p.len, hold[i], cancelled[i], o.result, o.delivered, o.undelivered
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {STORM} transfers broke an invariant ({hit} cancels hit, {missed} came \
         too late):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    eprintln!(
        "{what}: {hit} cancels hit ({partial} of them partly delivered), {missed} found the transfer done"
    );
}

/// The invariants of one transfer of the cancellation storm.
fn check_cancel_outcome(
    p: Plan,
    cancelled: Option<(bool, Option<bool>)>,
    o: &Outcome,
    w: WriterReport,
    r: &ReaderReport,
) -> Result<(), String> {
    let len = p.len as u64;
    if let Some(bad) = &r.bad {
        return Err(format!("the reader's bytes: {bad}"));
    }
    // The engine closes the destination when the completion is collected; its reader then
    // sees end of file, having received exactly the bytes delivered.
    if r.end != ReaderEnd::Eof || r.got as u64 != o.delivered {
        return Err(format!(
            "the reader got {} bytes (end {:?}), delivered says {}",
            r.got, r.end, o.delivered
        ));
    }
    match cancelled {
        // `cancel` returned true: the transfer was in flight and its machine marked
        // cancelled; no fault was injected, so nothing but `Cancelled` can end it.
        Some((true, _)) => {
            if !matches!(o.result, Err(Error::Cancelled)) {
                return Err("cancel() returned true but the result is not Err(Cancelled)".into());
            }
            if o.delivered + o.undelivered > w.written as u64 {
                return Err(format!(
                    "delivered + undelivered exceeds the {} bytes written",
                    w.written
                ));
            }
            if w.end == WriterEnd::Reset || w.end == WriterEnd::Closed && w.written != p.len {
                return Err("the writer ended oddly".into());
            }
        }
        // `cancel` returned false, or was never called: the transfer had finished on its
        // own, so it delivered everything.
        Some((false, _)) | None => {
            if o.result.is_err() || (o.delivered, o.undelivered) != (len, 0) {
                return Err("want Ok with the whole payload delivered".into());
            }
            if (w.end, w.written) != (WriterEnd::Closed, p.len) {
                return Err("the writer did not write everything and close".into());
            }
        }
    }
    Ok(())
}

#[test]
fn cancellation_storm() {
    let _g = common::serial();
    common::for_each_config(cancel_storm);
}

// ---------------------------------------------------------------------------------------
// 5. The engine dropped mid-storm.

fn dropped_mid_storm(cfg: Config) {
    let salt = format!("fault_storm drop {cfg}");
    let what = format!(
        "[{cfg}] engine dropped mid-storm (seed {:#x})",
        seed_of(&salt)
    );
    let mut rng = Rng::for_test(&salt);
    let (min, max) = (8 << 10, 128 << 10);
    let pool = Arc::new(rng.bytes((1 << 20) + max));
    let plans = plans(&mut rng, STORM, pool.len(), min, max);
    // Four in five sources never end on their own: those transfers are in flight at the
    // drop, whatever the timing.
    let hold: Vec<bool> = (0..STORM).map(|_| rng.below(5) != 0).collect();

    let mut e = storm_engine(cfg);
    let mut outcomes = Outcomes::new(STORM);
    let (_, mut writers, readers) =
        submit_storm(cfg, &mut e, &plans, &mut outcomes, &what, |_, _, _| {});
    for (w, &h) in writers.iter_mut().zip(&hold) {
        w.hold = h;
        w.chunk = STORM_PACE;
    }
    let release = Arc::new(AtomicBool::new(false));
    let progress = Progress::new(STORM);
    let (w, r) = spawn_storm_io(writers, readers, STORM_THREADS, &pool, &release, &progress);

    // Run until half of all the bytes have been written and bytes have reached half of the
    // readers: data is flowing, and the paced writers are mid-payload on most transfers.
    let total: usize = plans.iter().map(|p| p.len).sum();
    let mut out = Vec::new();
    let deadline = Instant::now() + common::HANG_GUARD;
    while progress.written_total() < total / 2 || progress.started() < STORM / 2 {
        assert!(
            Instant::now() < deadline,
            "{what}: hang guard: {} of {total} bytes written, bytes reached {} of {STORM} \
             readers after {:?}; in flight {}; stats {:?}",
            progress.written_total(),
            progress.started(),
            common::HANG_GUARD,
            e.in_flight(),
            e.stats()
        );
        e.poll(&mut out)
            .unwrap_or_else(|err| panic!("{what}: poll: {err}"));
        e.wait(&mut out, Some(Duration::from_millis(1)))
            .unwrap_or_else(|err| panic!("{what}: wait: {err}"));
        outcomes.record(&mut out, &what);
    }
    let in_flight = e.in_flight();
    let held = hold.iter().filter(|&&h| h).count();
    assert!(
        in_flight >= held,
        "{what}: only {in_flight} in flight, though {held} sources have not ended"
    );
    let workers = common::iowq::mine();
    let dropper = common::spawn_named("rs-test-dropper", move || drop(e));
    common::join_within(dropper, DROP_GUARD, &format!("{what}: Engine::drop"));
    common::iowq::assert_released_after_drop(&what);
    // Every peer must now see its end: the helper threads finish only then.
    let wrote = join_reports(w, STORM, &format!("{what}: writer"));
    let read = join_reports(r, STORM, &format!("{what}: reader"));

    let mut failures = Vec::new();
    for i in 0..STORM {
        let p = plans[i];
        let w = wrote[i].expect("writer report");
        let r = read[i].clone().expect("reader report");
        let o = outcomes.by_idx[i].as_ref();
        if let Err(msg) = check_drop_outcome(p, hold[i], o, w, &r) {
            failures.push(format!(
                "#{i} {:?}->{:?} {} bytes, hold {}: {msg}\n    completion {o:?}; writer {w:?}; \
                 reader {r:?}",
                p.src, p.dst, p.len, hold[i]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {STORM} transfers broke an invariant ({in_flight} in flight at the \
         drop):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    let mid = (0..STORM)
        .filter(|&i| {
            let got = read[i].as_ref().map_or(0, |r| r.got);
            outcomes.by_idx[i].is_none() && got > 0 && got < plans[i].len
        })
        .count();
    eprintln!(
        "{what}: dropped with {in_flight} in flight ({mid} of them partly delivered), {} completed \
         before, {workers} io-wq workers before",
        outcomes.collected
    );
}

/// The invariants of one transfer of the drop storm.
fn check_drop_outcome(
    p: Plan,
    hold: bool,
    o: Option<&Outcome>,
    w: WriterReport,
    r: &ReaderReport,
) -> Result<(), String> {
    if let Some(bad) = &r.bad {
        return Err(format!("the reader's bytes: {bad}"));
    }
    if r.end == ReaderEnd::Reset {
        return Err("the reader reset on its own".into());
    }
    match o {
        Some(o) => {
            if hold {
                return Err("completed although its source never ended".into());
            }
            if o.result.is_err() || (o.delivered, o.undelivered, r.got) != (p.len as u64, 0, p.len)
            {
                return Err("want Ok with the whole payload delivered".into());
            }
        }
        None => {
            // Dropped in flight: the reader saw end of file (or a reset) after a prefix.
            if r.got > p.len {
                return Err("more bytes than were sent".into());
            }
            if hold && w.end != WriterEnd::PeerGone {
                return Err("a held source's writer did not see the engine's end go away".into());
            }
        }
    }
    match w.end {
        WriterEnd::Reset => Err("the writer reset on its own".into()),
        WriterEnd::Closed if w.written != p.len => Err("closed before writing everything".into()),
        _ => Ok(()),
    }
}

#[test]
fn engine_dropped_mid_storm() {
    let _g = common::serial();
    common::for_each_config(dropped_mid_storm);
}

// ---------------------------------------------------------------------------------------
// 6. Idle transfers and the pipe budget (found by the storms).

/// Turns (`poll` then a `wait` of at most 5 ms) a ready transfer may take to complete. A live
/// engine needs a handful; this only bounds the test.
const READY_TURNS: usize = 400;

/// With a pipe budget of one pipe, an idle socket transfer (no data, no end of file) must
/// not keep a ready one (data and end of file queued) from running: a pipe that holds no
/// bytes is not the idle transfer's to keep. The inline paths lease a pipe only while it
/// holds bytes. The storms above show the same thing at scale with the default 1 MiB pipes:
/// once 256 transfers sit idle in Chain rounds, the others wait indefinitely.
#[test]
fn idle_transfers_do_not_starve_ready_ones_of_pipes() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] an idle transfer and a ready one, one pipe");
        let mut e = cfg.engine_from(cfg.builder().pipe_size(64 << 10).pipe_budget(64 << 10));
        // A: idle. Its writer stays open and writes nothing until the end.
        let (a_src, mut a_writer) = common::stream_pair(Kind::Tcp, true);
        let (a_dst, a_reader) = common::stream_pair(Kind::Tcp, false);
        let a = e
            .submit(cfg.transfer(a_src, a_dst).tag(1))
            .expect("submit A");
        let mut out = Vec::new();
        for _ in 0..5 {
            e.poll(&mut out).expect("poll");
            e.wait(&mut out, Some(Duration::from_millis(2)))
                .expect("wait");
        }
        assert!(out.is_empty(), "{what}: A finished: {out:#?}");
        let idle_stats = e.stats();
        // B: everything it needs is queued before it is submitted.
        let data = Rng::for_test(&what).bytes(10_000);
        let (b_src, mut b_writer) = common::stream_pair(Kind::Tcp, true);
        b_writer.write_all(&data).expect("write B");
        drop(b_writer);
        let (b_dst, b_reader) = common::stream_pair(Kind::Tcp, false);
        let b_reader = common::spawn_reader(b_reader);
        let b = e
            .submit(cfg.transfer(b_src, b_dst).tag(2))
            .expect("submit B");
        let mut turns = 0;
        while out.is_empty() && turns < READY_TURNS {
            e.poll(&mut out).expect("poll");
            e.wait(&mut out, Some(Duration::from_millis(5)))
                .expect("wait");
            turns += 1;
        }
        let starved = out.is_empty();
        let stuck_stats = e.stats();
        // Let A end either way, so that everything is collected and closed before judging.
        a_writer.write_all(b"late").expect("write A");
        drop(a_writer);
        let a_reader = common::spawn_reader(a_reader);
        let rest = 2 - out.len();
        out.extend(common::wait_n(&mut e, rest, &what));
        out.sort_by_key(|c| c.tag);
        let (cb, ca) = (out.pop().expect("B"), out.pop().expect("A"));
        common::assert_ok_completion(&ca, a, 1, 4, &format!("{what}: A"));
        common::assert_ok_completion(&cb, b, 2, data.len() as u64, &format!("{what}: B"));
        drop((ca, cb));
        assert_eq!(
            common::join(a_reader, &what).expect("read A"),
            b"late",
            "{what}: A's bytes"
        );
        let got = common::join(b_reader, &what).expect("read B");
        common::assert_same_bytes(&got, &data, &format!("{what}: B's bytes"));
        assert!(
            !starved,
            "{what}: B, with its data and end of file queued, did not complete in \
             {READY_TURNS} turns while A sat idle; it completed only after A's source \
             ended. A holds the only pipe while waiting for its source (stats while A idled: \
             {idle_stats:?}; after the {READY_TURNS} turns: {stuck_stats:?})"
        );
    });
}
