//! Scale on one engine: 1,000 concurrent socket→socket transfers (2,000 socket pairs, TCP
//! and Unix mixed: 4,000 fds), every byte checked; and 1,000 idle connections with
//! transfers pending, which must keep the whole process under 20 threads (no thread, io-wq
//! worker or otherwise, per waiting transfer) before they are made to finish and checked.
//! Both backends, all strategies.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use common::{Config, Kind, Peer, Rng};
use ringsplice::{Completion, Engine, TransferId};

/// Transfers in flight at once.
const N: usize = 1000;
/// The process-wide thread bound while 1,000 transfers wait.
const MAX_THREADS: usize = 20;

/// One transfer's test-side state.
struct Conn {
    writer: Option<Peer>,
    reader: Peer,
    payload: Vec<u8>,
    tag: u64,
    what: String,
}

/// `n` socket→socket transfers (TCP and Unix, mixed on both sides), submitted; nothing
/// written yet.
fn submit_many(
    cfg: Config,
    e: &mut Engine,
    rng: &mut Rng,
    n: usize,
    max_len: u64,
) -> HashMap<TransferId, Conn> {
    let kind = |i: usize| {
        if i.is_multiple_of(2) {
            Kind::Tcp
        } else {
            Kind::Unix
        }
    };
    let mut tcp = common::tcp_pairs(n).into_iter();
    let mut pair = |k: Kind, engine_reads: bool| -> (OwnedFd, Peer) {
        match k {
            Kind::Tcp => {
                let (a, b) = tcp.next().expect("enough TCP pairs");
                (b.into(), Peer::Tcp(a))
            }
            _ => common::stream_pair(k, engine_reads),
        }
    };
    let mut conns = HashMap::new();
    for i in 0..n {
        // Sources alternate TCP/Unix; destinations alternate in pairs, so all four
        // combinations occur.
        let (sk, dk) = (kind(i), kind(i / 2));
        let (src, writer) = pair(sk, true);
        let (dst, reader) = pair(dk, false);
        let len = rng.range(0, max_len) as usize;
        let payload = rng.bytes(len);
        let tag = rng.next_u64();
        let what = format!("[{cfg}] transfer #{i} {sk:?}->{dk:?} {len} bytes");
        let id = e
            .submit(cfg.transfer(src, dst).tag(tag))
            .unwrap_or_else(|r| panic!("{what}: submit refused: {r}"));
        conns.insert(
            id,
            Conn {
                writer: Some(writer),
                reader,
                payload,
                tag,
                what,
            },
        );
    }
    conns
}

/// Checks every completion against what its reader gets.
fn verify(cfg: Config, done: Vec<Completion>, mut conns: HashMap<TransferId, Conn>) {
    assert_eq!(done.len(), conns.len(), "[{cfg}] completions");
    for c in done {
        let conn = conns
            .remove(&c.id)
            .unwrap_or_else(|| panic!("[{cfg}] completion for an unknown id: {c:?}"));
        let what = &conn.what;
        common::assert_ok_completion(&c, c.id, conn.tag, conn.payload.len() as u64, what);
        // Closing the engine's end of the destination ends the reader's stream.
        drop(c);
        let mut reader = conn.reader;
        reader.set_read_timeout(common::HANG_GUARD);
        let mut got = Vec::new();
        reader
            .read_to_end(&mut got)
            .unwrap_or_else(|err| panic!("{what}: reading the destination: {err}"));
        assert_eq!(
            common::checksum(&got),
            common::checksum(&conn.payload),
            "{what}: checksum"
        );
        common::assert_same_bytes(&got, &conn.payload, what);
    }
}

#[test]
fn a_thousand_concurrent_socket_transfers() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut rng = Rng::for_test(&format!("scale concurrent {cfg}"));
        let mut e = cfg.engine();
        let mut conns = submit_many(cfg, &mut e, &mut rng, N, 48 << 10);
        e.flush().expect("flush");
        // Every source gets its bytes and its end of file from a helper thread while all
        // 1,000 transfers are in flight and the engine runs.
        let work: Vec<(Peer, Vec<u8>)> = conns
            .values_mut()
            .map(|c| (c.writer.take().expect("writer"), c.payload.clone()))
            .collect();
        let writer = common::spawn_named("rs-test-scale-writer", move || {
            for (mut peer, data) in work {
                peer.write_all(&data)?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut done =
            common::pump_until(&mut e, &format!("[{cfg}] writing"), || writer.is_finished());
        common::join(writer, "scale writer").expect("write the sources");
        let left = N - done.len();
        done.extend(common::wait_n(
            &mut e,
            left,
            &format!("[{cfg}] {N} transfers"),
        ));
        verify(cfg, done, conns);
        assert_eq!(e.in_flight(), 0, "[{cfg}] transfers left in flight");
    });
}

#[test]
fn a_thousand_idle_connections_stay_under_twenty_threads() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut rng = Rng::for_test(&format!("scale idle {cfg}"));
        let mut e = cfg.engine();
        let mut conns = submit_many(cfg, &mut e, &mut rng, N, 4096);
        // Let the engine arm every transfer and sit idle for a while, sampling the thread
        // count; nothing may complete, since no source has a byte or an end of file.
        let mut most = common::thread_count();
        let mut early = Vec::new();
        for _ in 0..20 {
            e.poll(&mut early).expect("poll");
            e.wait(&mut early, Some(Duration::from_millis(10)))
                .expect("wait");
            most = most.max(common::thread_count());
        }
        assert!(
            early.is_empty(),
            "[{cfg}] idle transfers completed with no data and no end of file: {early:#?}"
        );
        assert_eq!(e.in_flight(), N, "[{cfg}] in flight while idle");
        assert!(
            most < MAX_THREADS,
            "[{cfg}] {most} threads with {N} idle transfers (want < {MAX_THREADS}): {:?}",
            common::task_snapshot()
        );
        // Now make them all finish: write each payload (4 KiB at most: never waits) and
        // close each writer.
        for c in conns.values_mut() {
            let mut w = c.writer.take().expect("writer");
            w.write_all(&c.payload)
                .unwrap_or_else(|err| panic!("{}: write: {err}", c.what));
        }
        let done = common::wait_n(&mut e, N, &format!("[{cfg}] {N} woken transfers"));
        let now = common::thread_count();
        verify(cfg, done, conns);
        assert!(now < MAX_THREADS, "[{cfg}] {now} threads while finishing");
        assert_eq!(e.in_flight(), 0, "[{cfg}] transfers left in flight");
    });
}
