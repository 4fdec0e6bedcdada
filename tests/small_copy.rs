//! The copy route chosen per transfer: `Strategy::Auto` copies a known length of at most
//! `Builder::copy_threshold` bytes (here 16 KiB; the default is 0, never) from a socket to a
//! socket with `read`/`write` (no pipe), `Strategy::Copy` copies anything, and everything
//! else still splices.
//! `Stats::copies` counts the transfers started on the copy route by choice.

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use common::{Config, Kind, Rng};
use ringsplice::{Completion, Endpoint, Length, Stats, Strategy, Transfer};

/// The threshold these tests set unless they say otherwise.
const THRESHOLD: u64 = 16 << 10;

/// `n` transfers of `len` bytes each from `kind` sources into TCP sockets, under `cfg`
/// built with `threshold`; checks every byte and returns the engine's stats.
fn run(cfg: Config, kind: Kind, n: usize, len: usize, threshold: Option<u64>) -> Stats {
    let b = cfg.builder().copy_threshold(threshold.unwrap_or(THRESHOLD));
    let mut e = cfg.engine_from(b);
    let mut rng = Rng::new(0x5eed ^ len as u64);
    let mut checks = Vec::new();
    for i in 0..n {
        let data = rng.bytes(len);
        let (src, feed) = common::source_of(kind, &format!("small-{i}"), &data);
        let (dst, sink) = common::destination_of(Kind::Tcp, "unused", b"");
        let t = cfg
            .transfer(src, dst)
            .length(Length::Exact(len as u64))
            .tag(i as u64);
        e.submit(t).unwrap();
        checks.push((feed, sink, data));
    }
    let done = common::wait_n(&mut e, n, "small transfers");
    for c in &done {
        assert!(c.is_ok(), "[{cfg}] {kind:?} {len} B: {:?}", c.result);
        assert_eq!(c.delivered, len as u64, "[{cfg}] {kind:?}");
        assert_eq!(c.undelivered, 0);
    }
    let stats = e.stats();
    drop(done); // closes the destinations: the readers see end of file
    let what = format!("[{cfg}] {kind:?} {len} B");
    for (feed, sink, want) in checks {
        feed.finish(&what);
        assert!(sink.contents(&what) == want, "{what}: payload differs");
    }
    stats
}

#[test]
fn auto_copies_small_socket_transfers_without_a_pipe() {
    let _g = common::serial();
    common::run_configs(&common::configs(&[Strategy::Auto]), |cfg| {
        for kind in [Kind::Tcp, Kind::Unix] {
            for len in [1, 4096, 16 << 10] {
                let s = run(cfg, kind, 8, len, None);
                assert_eq!(s.copies, 8, "[{cfg}] {kind:?} {len} B: {s:?}");
                assert_eq!(s.pipes_created, 0, "[{cfg}] {kind:?} {len} B: {s:?}");
            }
        }
    });
}

#[test]
fn auto_splices_above_the_threshold_and_from_files_and_pipes() {
    let _g = common::serial();
    common::run_configs(&common::configs(&[Strategy::Auto]), |cfg| {
        // One byte over the threshold: spliced.
        let s = run(cfg, Kind::Tcp, 4, (16 << 10) + 1, None);
        assert_eq!(s.copies, 0, "[{cfg}] {s:?}");
        assert!(s.pipes_created > 0, "[{cfg}] {s:?}");
        // A threshold of 0 never copies.
        let s = run(cfg, Kind::Tcp, 4, 100, Some(0));
        assert_eq!(s.copies, 0, "[{cfg}] {s:?}");
        // A file source may block on the disk: never copied on the caller's thread.
        let s = run(cfg, Kind::File, 4, 4096, None);
        assert_eq!(s.copies, 0, "[{cfg}] {s:?}");
        // A pipe source is one direct splice, cheaper than read + write.
        let s = run(cfg, Kind::Pipe, 4, 4096, None);
        assert_eq!(s.copies, 0, "[{cfg}] {s:?}");
        assert_eq!(s.pipes_created, 0, "[{cfg}] {s:?}");
        // A raised threshold copies larger transfers.
        let s = run(cfg, Kind::Tcp, 4, 256 << 10, Some(1 << 20));
        assert_eq!(s.copies, 4, "[{cfg}] {s:?}");
    });
}

/// The default threshold is 0: `Auto` splices even one byte.
#[test]
fn auto_copies_nothing_by_default() {
    let _g = common::serial();
    common::run_configs(&common::configs(&[Strategy::Auto]), |cfg| {
        let mut e = cfg.engine();
        let (src, mut feed) = common::tcp_pair();
        let (dst, mut sink) = common::tcp_pair();
        std::io::Write::write_all(&mut feed, b"x").unwrap();
        e.submit(cfg.transfer(src, dst).length(Length::Exact(1)))
            .unwrap();
        let c = common::wait_one(&mut e, "one byte");
        assert!(c.is_ok(), "[{cfg}] {:?}", c.result);
        let mut b = [0u8; 1];
        sink.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        assert_eq!(e.stats().copies, 0, "[{cfg}] {:?}", e.stats());
    });
}

#[test]
fn strategy_copy_moves_any_pair_until_eof() {
    let _g = common::serial();
    common::run_configs(&common::configs(&[Strategy::Copy]), |cfg| {
        for kind in [Kind::Tcp, Kind::Pipe, Kind::File] {
            let s = run(cfg, kind, 3, 300 << 10, None);
            assert_eq!(s.copies, 3, "[{cfg}] {kind:?} {s:?}");
            assert_eq!(s.pipes_created, 0, "[{cfg}] {kind:?} {s:?}");
        }
        // Until end of file, larger than the copy buffer.
        let mut e = cfg.engine();
        let (src, peer) = common::stream_pair(Kind::Tcp, true);
        let (dst, mut sink) = common::tcp_pair();
        let data = Rng::new(7).bytes(3 << 20);
        let w = common::spawn_writer(peer, data.clone());
        e.submit(cfg.transfer(src, dst)).unwrap();
        let r = common::spawn_named("rs-test-sink", move || {
            let mut v = Vec::new();
            sink.read_to_end(&mut v).map(|_| v)
        });
        let c: Completion = common::wait_one(&mut e, "copy until eof");
        assert!(c.is_ok(), "[{cfg}] {:?}", c.result);
        assert_eq!(c.delivered, data.len() as u64);
        drop(c);
        common::join(w, "writer").unwrap();
        assert!(
            common::join(r, "sink").unwrap() == data,
            "[{cfg}] payload differs"
        );
    });
}

/// An endpoint handed back by a completion carries what the engine learnt about its fd;
/// submitted again it must still move the right bytes (and a shared fd used by two
/// transfers at once, as in a proxy, too).
#[test]
fn endpoints_resubmitted_from_completions_keep_working() {
    let _g = common::serial();
    common::run_configs(
        &common::configs(&[Strategy::Auto, Strategy::Inline]),
        |cfg| {
            let mut e = cfg.engine();
            let (src, mut feed) = common::tcp_pair();
            let (dst, mut sink) = common::tcp_pair();
            let dst = Arc::new(OwnedFd::from(dst));
            let mut src: Endpoint = src.into();
            let mut rng = Rng::new(11);
            for round in 0..5 {
                let len = [100, 64 << 10, 4096, 1 << 20, 1][round];
                let data = rng.bytes(len);
                let t = Transfer::new(src, Endpoint::shared(Arc::clone(&dst)))
                    .length(Length::Exact(len as u64))
                    .strategy(cfg.strategy);
                e.submit(t).unwrap();
                let w = common::spawn_named("rs-test-feed", {
                    let data = data.clone();
                    let mut feed = feed.try_clone().unwrap();
                    move || std::io::Write::write_all(&mut feed, &data)
                });
                let c = common::wait_one(&mut e, "resubmitted transfer");
                assert!(c.is_ok(), "[{cfg}] round {round}: {:?}", c.result);
                assert_eq!(c.delivered, len as u64);
                common::join(w, "feed").unwrap();
                let mut got = vec![0; len];
                sink.read_exact(&mut got).unwrap();
                assert!(got == data, "[{cfg}] round {round}: payload differs");
                src = c.source;
            }
            drop(src);
            let _ = &mut feed;
        },
    );
}
