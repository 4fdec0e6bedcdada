//! Property test: random mixes of transfer kinds, sizes (0 to 64 MiB), writer chunking,
//! ring sizes (2 to 4096), pipe sizes, strategies and cancellations, on both backends.
//! Invariants, for every completion:
//! - the destination received exactly `delivered` bytes, and they are the source's
//!   first `delivered` bytes;
//! - `Ok` means everything asked for was delivered; a source shorter than an exact length
//!   gives `UnexpectedEof` with `delivered` = the source's size; a cancel gives `Cancelled`;
//! - after the engine is dropped, no fd or thread is left behind.
//!
//! Cases default to a CI-sized count; `RINGSPLICE_PROP_CASES=N` runs more and
//! `RINGSPLICE_PROP_SEED=S` replays one seed (printed on failure).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ringsplice::{BackendPreference, Error, Length, Strategy, Transfer};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Src {
    Tcp,
    Unix,
    Pipe,
    File,
}
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dst {
    Tcp,
    Pipe,
    File,
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// What one transfer's destination side collected.
enum Sink {
    Thread(std::thread::JoinHandle<Vec<u8>>),
    File(std::path::PathBuf),
}

struct Case {
    len: Length,
    data: Vec<u8>,
    sink: Sink,
    writer: Option<std::thread::JoinHandle<()>>,
    cancel_at_poll: Option<u32>,
    id: ringsplice::TransferId,
}

fn stream_pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

fn spawn_writer(
    mut w: impl Write + Send + 'static,
    data: Vec<u8>,
    seed: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = Rng(seed | 1);
        let mut off = 0;
        while off < data.len() {
            let n = match r.below(3) {
                0 => 1 + r.below(512) as usize,
                1 => 1 + r.below(64 << 10) as usize,
                _ => 1 + r.below(4 << 20) as usize,
            }
            .min(data.len() - off);
            if w.write_all(&data[off..off + n]).is_err() {
                return; // the transfer was cancelled and the source closed
            }
            off += n;
            if r.below(8) == 0 {
                std::thread::sleep(Duration::from_micros(r.below(2000)));
            }
        }
    })
}

fn spawn_reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

fn run_case(seed: u64, backend: BackendPreference, tmp: &std::path::Path) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let ring = rng.pick(&[2u32, 4, 8, 64, 256, 4096]);
    let pipe = rng.pick(&[4096usize, 64 << 10, 1 << 20]);
    let Some(mut engine) = common::engine_or_skip(backend, |b| {
        b.ring_entries(ring)
            .pipe_size(pipe)
            .chunk_size(rng.pick(&[4096usize, 1 << 16, 1 << 20]))
            .chain_depth(1 + rng.below(4) as usize)
            .fairness_bytes(rng.pick(&[1usize << 16, 4 << 20]))
    }) else {
        return;
    };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let n = 1 + rng.below(24) as usize;
    let mut cases = Vec::new();
    for i in 0..n {
        let big = rng.below(40) == 0;
        let size = if big {
            (16 << 20) + rng.below(48 << 20) as usize
        } else {
            match rng.below(4) {
                0 => rng.below(2) as usize,
                1 => rng.below(5000) as usize,
                _ => rng.below(1 << 20) as usize,
            }
        };
        let data = payload(seed ^ (i as u64) << 32, size);
        let len = match rng.below(3) {
            0 => Length::UntilEof,
            1 => Length::Exact(size as u64),
            // Ask for less than there is, or for more (the source ends early).
            _ => Length::Exact(rng.below(size as u64 + 2000)),
        };
        let src_kind = rng.pick(&[Src::Tcp, Src::Unix, Src::Pipe, Src::File]);
        let dst_kind = rng.pick(&[Dst::Tcp, Dst::Pipe, Dst::File]);
        let strategy = rng.pick(&[Strategy::Auto, Strategy::Chain, Strategy::Inline]);
        let (src, writer): (OwnedFd, _) = match src_kind {
            Src::Tcp => {
                let (w, s) = stream_pair(&l);
                (
                    s.into(),
                    Some(spawn_writer(w, data.clone(), seed + i as u64)),
                )
            }
            Src::Unix => {
                let (w, s) = UnixStream::pair().unwrap();
                (
                    s.into(),
                    Some(spawn_writer(w, data.clone(), seed + i as u64)),
                )
            }
            Src::Pipe => {
                let (r, w) = std::io::pipe().unwrap();
                (
                    r.into(),
                    Some(spawn_writer(w, data.clone(), seed + i as u64)),
                )
            }
            Src::File => {
                let p = tmp.join(format!("src-{seed}-{i}"));
                std::fs::write(&p, &data).unwrap();
                let f = std::fs::File::open(&p).unwrap();
                std::fs::remove_file(&p).unwrap();
                (f.into(), None)
            }
        };
        let (dst, sink): (OwnedFd, _) = match dst_kind {
            Dst::Tcp => {
                let (d, r) = stream_pair(&l);
                (d.into(), Sink::Thread(spawn_reader(r)))
            }
            Dst::Pipe => {
                let (r, w) = std::io::pipe().unwrap();
                (w.into(), Sink::Thread(spawn_reader(r)))
            }
            Dst::File => {
                let p = tmp.join(format!("dst-{seed}-{i}"));
                let f = std::fs::File::create(&p).unwrap();
                (f.into(), Sink::File(p))
            }
        };
        let cancel_at_poll = (rng.below(6) == 0).then(|| rng.below(4) as u32);
        let id = engine
            .submit(
                Transfer::new(src, dst)
                    .length(len)
                    .strategy(strategy)
                    .tag(i as u64),
            )
            .unwrap();
        cases.push(Case {
            len,
            data,
            sink,
            writer,
            cancel_at_poll,
            id,
        });
    }
    let mut done = Vec::new();
    let mut polls = 0u32;
    let guard = Instant::now() + Duration::from_secs(120);
    let mut cancelled = vec![false; n];
    while done.len() < n {
        assert!(
            Instant::now() < guard,
            "seed {seed} {backend:?}: hang guard ({} of {n} done)",
            done.len()
        );
        engine
            .wait(&mut done, Some(Duration::from_millis(50)))
            .unwrap();
        polls += 1;
        for (i, c) in cases.iter().enumerate() {
            if c.cancel_at_poll.is_some_and(|p| p < polls) && !cancelled[i] {
                // `false`: it completed already; either way its completion arrives once.
                cancelled[i] = engine.cancel(c.id);
            }
        }
    }
    // Outcomes seen: [ok, source short, cancelled].
    let mut tally = [0u32; 3];
    let mut by_tag: Vec<_> = done.into_iter().collect();
    by_tag.sort_by_key(|c| c.tag);
    for (c, case) in by_tag.into_iter().zip(cases) {
        let tag = c.tag;
        let (delivered, undelivered, result) = (c.delivered, c.undelivered, c.result);
        drop(c.source);
        drop(c.destination); // EOF for the reader
        let got = match case.sink {
            Sink::Thread(h) => h.join().unwrap(),
            Sink::File(p) => {
                let v = std::fs::read(&p).unwrap();
                std::fs::remove_file(&p).unwrap();
                v
            }
        };
        if let Some(w) = case.writer {
            w.join().unwrap();
        }
        let ctx = format!("seed {seed} {backend:?} ring {ring} pipe {pipe} tag {tag}: {result:?}");
        assert_eq!(got.len() as u64, delivered, "{ctx}");
        assert!(got[..] == case.data[..got.len()], "{ctx}: bytes differ");
        let size = case.data.len() as u64;
        if matches!(result, Err(Error::Cancelled)) {
            assert!(cancelled[tag as usize], "{ctx}: cancelled without a cancel");
            tally[2] += 1;
            continue;
        }
        tally[matches!(result, Err(Error::UnexpectedEof { .. })) as usize] += 1;
        match (case.len, &result) {
            (Length::UntilEof, Ok(())) => assert_eq!(delivered, size, "{ctx}"),
            (Length::Exact(want), Ok(())) => {
                assert!(want <= size, "{ctx}");
                assert_eq!(delivered, want, "{ctx}");
            }
            (
                Length::Exact(want),
                Err(Error::UnexpectedEof {
                    expected,
                    delivered: d,
                }),
            ) => {
                assert!(want > size, "{ctx}");
                assert_eq!((*expected, *d), (want, size), "{ctx}");
            }
            _ => panic!("{ctx}: unexpected outcome"),
        }
        assert_eq!(undelivered, 0, "{ctx}");
    }
    eprintln!(
        "  {backend:?} ring {ring} pipe {pipe}: {n} transfers, [ok, short, cancelled] = {tally:?}"
    );
}

#[test]
fn random_mixes_hold_the_invariants() {
    let cases: u64 = std::env::var("RINGSPLICE_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seeds: Vec<u64> = match std::env::var("RINGSPLICE_PROP_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            (0..cases).map(|i| base.wrapping_add(i * 7919)).collect()
        }
    };
    let tmp = std::env::temp_dir().join(format!("ringsplice-prop-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (fds, threads) = (fd_count(), thread_count());
    // On a thread of its own (named after the test, for a skip to say which): io-wq workers
    // belong to the thread that submitted, and on kernels without io-wq exit-on-idle the
    // last idle ones stay until it exits.
    common::on_own_thread(&common::test_name(), || {
        for seed in seeds {
            eprintln!("seed {seed}");
            for b in [BackendPreference::IoUring, BackendPreference::Fallback] {
                run_case(seed, b, &tmp);
            }
        }
    })
    .unwrap_or_else(|p| std::panic::resume_unwind(p));
    std::fs::remove_dir_all(&tmp).unwrap();
    assert_eq!(fd_count(), fds, "fd leak");
    let deadline = Instant::now() + Duration::from_secs(10);
    while thread_count() > threads && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(thread_count() <= threads, "thread leak");
}
