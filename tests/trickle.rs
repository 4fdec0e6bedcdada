//! Slow, irregular peers: a writer trickles random-size chunks (1 byte to 100 KiB, with tiny
//! sleeps) into a socket source, and a reader drains the destination in random-size reads,
//! so nearly every splice is short on both sides. Every byte must arrive, in order, on both
//! backends and all strategies, until end of file and with an exact length whose source
//! stays open after the last byte (the transfer must not wait for an end of file).

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use common::{Config, Kind, Peer, Rng};
use ringsplice::Length;

/// Bytes moved per run.
const TOTAL: usize = (2 << 20) + 77;
/// The largest chunk the writer writes at once.
const MAX_CHUNK: u64 = 100 << 10;

/// A chunk size between 1 byte and [`MAX_CHUNK`], log-uniform so tiny chunks are common.
fn chunk_size(rng: &mut Rng) -> usize {
    let bits = rng.range(0, 17);
    rng.range(1, (1u64 << bits).min(MAX_CHUNK)) as usize
}

/// Writes `data` in random chunks with tiny sleeps; with `hold_open`, keeps the socket open
/// until told to close it.
fn trickle_writer(
    mut peer: Peer,
    data: Vec<u8>,
    seed: u64,
    hold_open: Option<mpsc::Receiver<()>>,
) -> std::thread::JoinHandle<std::io::Result<()>> {
    common::spawn_named("rs-test-trickle-writer", move || {
        let mut rng = Rng::new(seed);
        let mut at = 0;
        while at < data.len() {
            let n = chunk_size(&mut rng).min(data.len() - at);
            peer.write_all(&data[at..at + n])?;
            at += n;
            if rng.below(2) == 0 {
                std::thread::sleep(Duration::from_micros(rng.below(300)));
            }
        }
        if let Some(rx) = hold_open {
            // The transfer must complete with the source still open; the test says when
            // to close (a dropped sender also ends the wait).
            let _ = rx.recv_timeout(common::HANG_GUARD);
        }
        drop(peer);
        Ok(())
    })
}

/// Reads to end of file in random-size reads with tiny sleeps.
fn trickle_reader(mut peer: Peer, seed: u64) -> std::thread::JoinHandle<std::io::Result<Vec<u8>>> {
    peer.set_read_timeout(common::HANG_GUARD);
    common::spawn_named("rs-test-trickle-reader", move || {
        let mut rng = Rng::new(seed);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let want = rng.range(1, buf.len() as u64) as usize;
            let n = peer.read(&mut buf[..want])?;
            if n == 0 {
                return Ok(got);
            }
            got.extend_from_slice(&buf[..n]);
            if rng.below(4) == 0 {
                std::thread::sleep(Duration::from_micros(rng.below(200)));
            }
        }
    })
}

fn trickle(cfg: Config, src_kind: Kind, dst_kind: Kind, exact: bool) {
    let what = format!("[{cfg}] trickle {src_kind:?}->{dst_kind:?} exact={exact}");
    let mut rng = Rng::for_test(&what);
    let payload = rng.bytes(TOTAL);
    let want_sum = common::checksum(&payload);
    let mut e = cfg.engine();

    let (src, wpeer) = common::stream_pair(src_kind, true);
    let (dst, rpeer) = common::stream_pair(dst_kind, false);
    let (close_tx, close_rx) = mpsc::channel();
    let writer = trickle_writer(
        wpeer,
        payload.clone(),
        rng.next_u64(),
        exact.then_some(close_rx),
    );
    let reader = trickle_reader(rpeer, rng.next_u64());

    let len = if exact {
        Length::Exact(TOTAL as u64)
    } else {
        Length::UntilEof
    };
    let tag = rng.next_u64();
    let id = e
        .submit(cfg.transfer(src, dst).length(len).tag(tag))
        .unwrap_or_else(|r| panic!("{what}: submit refused: {r}"));
    let done = common::wait_one(&mut e, &what);
    common::assert_ok_completion(&done, id, tag, TOTAL as u64, &what);
    assert_eq!(e.stats().bytes, TOTAL as u64, "{what}: stats().bytes");
    // Only now may the exact-length writer close its end.
    drop(close_tx);
    drop(done);
    common::join(writer, &format!("{what}: writer")).expect("trickle writer");
    let got = common::join(reader, &format!("{what}: reader")).expect("trickle reader");
    assert_eq!(common::checksum(&got), want_sum, "{what}: checksum");
    common::assert_same_bytes(&got, &payload, &what);
}

#[test]
fn trickled_tcp_source_until_eof() {
    let _g = common::serial();
    common::for_each_config(|cfg| trickle(cfg, Kind::Tcp, Kind::Tcp, false));
}

#[test]
fn trickled_tcp_source_exact_length_source_left_open() {
    let _g = common::serial();
    common::for_each_config(|cfg| trickle(cfg, Kind::Tcp, Kind::Tcp, true));
}

#[test]
fn trickled_unix_source_until_eof() {
    let _g = common::serial();
    common::for_each_config(|cfg| trickle(cfg, Kind::Unix, Kind::Unix, false));
}

#[test]
fn trickled_unix_source_exact_length_source_left_open() {
    let _g = common::serial();
    common::for_each_config(|cfg| trickle(cfg, Kind::Unix, Kind::Tcp, true));
}

#[test]
fn trickled_tcp_source_into_a_pipe() {
    let _g = common::serial();
    common::for_each_config(|cfg| trickle(cfg, Kind::Tcp, Kind::Pipe, false));
}
