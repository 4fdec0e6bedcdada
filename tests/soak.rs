//! Soak: random transfers, one after another, over 1,000 live connections for minutes;
//! every completion is exact, and fd count, thread count and RSS stay flat.
//!
//! Ignored by default. `.ci/run` runs a short bounded form:
//! `RINGSPLICE_SOAK_SECS=10 cargo test --release --test soak -- --ignored`.
//! The default length, without the variable, is 300 s per backend.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringsplice::{BackendPreference, Endpoint, Length, Strategy, Transfer};

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

struct Conn {
    client: TcpStream,
    sink: TcpStream,
    src: Arc<OwnedFd>,
    dst: Arc<OwnedFd>,
    round: u64,
    size: usize,
    written: usize,
    read: usize,
    in_flight: bool,
}

fn byte(conn: usize, round: u64, i: usize) -> u8 {
    (conn as u64 ^ round.wrapping_mul(31) ^ (i as u64 >> 3)) as u8
}

fn soak(backend: BackendPreference, secs: u64) {
    let fds_before = fds();
    let Some(mut e) = common::engine_or_skip(backend, |b| b.pipe_size(256 << 10)) else {
        return;
    };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let n = 1000;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let client = TcpStream::connect(addr).unwrap();
        let (src, _) = l.accept().unwrap();
        let dst = TcpStream::connect(addr).unwrap();
        let (sink, _) = l.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        sink.set_nonblocking(true).unwrap();
        conns.push(Conn {
            client,
            sink,
            src: Arc::new(src.into()),
            dst: Arc::new(dst.into()),
            round: 0,
            size: 0,
            written: 0,
            read: 0,
            in_flight: false,
        });
    }
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ secs;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let start = Instant::now();
    let warm = start + Duration::from_secs(secs.min(10) / 2 + 1);
    let end = start + Duration::from_secs(secs);
    let mut baseline: Option<(usize, usize, u64)> = None;
    let mut peak = (0, 0, 0);
    let mut done = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    let (mut transfers, mut bytes) = (0u64, 0u64);
    let guard = end + Duration::from_secs(60);
    loop {
        let running = Instant::now() < end;
        if !running && conns.iter().all(|c| !c.in_flight && c.read == c.size) {
            break;
        }
        assert!(
            Instant::now() < guard,
            "{backend:?}: rounds did not drain after the soak"
        );
        for (i, c) in conns.iter_mut().enumerate() {
            if running && !c.in_flight && c.read == c.size {
                c.round += 1;
                c.size = match next() % 10 {
                    0 => (next() % (1 << 20)) as usize,
                    1 => 0,
                    _ => (next() % (64 << 10)) as usize,
                };
                c.written = 0;
                c.read = 0;
                let strategy =
                    [Strategy::Auto, Strategy::Chain, Strategy::Inline][(next() % 3) as usize];
                e.submit(
                    Transfer::new(
                        Endpoint::shared(c.src.clone()),
                        Endpoint::shared(c.dst.clone()),
                    )
                    .length(Length::Exact(c.size as u64))
                    .strategy(strategy)
                    .tag(i as u64),
                )
                .unwrap();
                c.in_flight = true;
            }
            if c.written < c.size {
                let k = (c.size - c.written).min(buf.len());
                for (j, b) in buf[..k].iter_mut().enumerate() {
                    *b = byte(i, c.round, c.written + j);
                }
                match c.client.write(&buf[..k]) {
                    Ok(w) => c.written += w,
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                    Err(err) => panic!("client write: {err}"),
                }
            }
            if c.read < c.size {
                match c.sink.read(&mut buf) {
                    Ok(0) => panic!("sink saw EOF"),
                    Ok(r) => {
                        for (j, &b) in buf[..r].iter().enumerate() {
                            assert_eq!(
                                b,
                                byte(i, c.round, c.read + j),
                                "conn {i} round {}",
                                c.round
                            );
                        }
                        c.read += r;
                        assert!(c.read <= c.size, "more bytes than the round sent");
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                    Err(err) => panic!("sink read: {err}"),
                }
            }
        }
        e.wait(&mut done, Some(Duration::from_millis(1))).unwrap();
        for comp in done.drain(..) {
            let c = &mut conns[comp.tag as usize];
            assert!(comp.is_ok(), "{backend:?}: {:?}", comp.result);
            assert_eq!(comp.delivered, c.size as u64);
            c.in_flight = false;
            transfers += 1;
            bytes += comp.delivered;
        }
        let now = Instant::now();
        if now >= warm {
            let sample = (fds(), threads(), rss_kib());
            match baseline {
                None => baseline = Some(sample),
                Some(_) => {
                    peak = (
                        peak.0.max(sample.0),
                        peak.1.max(sample.1),
                        peak.2.max(sample.2),
                    );
                }
            }
        }
    }
    let (bf, bt, br) = baseline.expect("the soak ran past its warm-up");
    // Quiescent: only the 4,000 sockets, the engine's own fds and at most a full pool of
    // idle pipes (64 by default, two fds each) may be open.
    let quiet = fds();
    assert!(
        quiet <= fds_before + 4 * n + 4 + 2 * 64,
        "{backend:?}: fds left open after every transfer finished: {fds_before} -> {quiet}"
    );
    eprintln!(
        "{backend:?}: {transfers} transfers, {} MiB in {secs} s; fds {bf} -> peak {}, threads {bt} -> peak {}, RSS {br} KiB -> peak {} KiB",
        bytes >> 20,
        peak.0,
        peak.1,
        peak.2
    );
    // Bounded: pipes come and go within the pipe budget (256 MiB of 256 KiB pipes, two fds
    // each); io-wq threads within their bound (4 + 4).
    assert!(
        peak.0 <= bf + 2 * 1024 + 16,
        "fd count grew: {bf} -> {}",
        peak.0
    );
    assert!(peak.1 <= bt + 8, "thread count grew: {bt} -> {}", peak.1);
    assert!(
        peak.2 <= br + 64 * 1024,
        "RSS grew by over 64 MiB: {br} -> {} KiB",
        peak.2
    );
    assert!(
        transfers > n as u64,
        "the soak moved too little to mean anything"
    );
}

#[test]
#[ignore = "long; .ci/run runs it briefly with RINGSPLICE_SOAK_SECS"]
fn soak_thousand_connections() {
    let secs = std::env::var("RINGSPLICE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for b in [BackendPreference::IoUring, BackendPreference::Fallback] {
        soak(b, secs);
    }
}
