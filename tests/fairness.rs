//! Fairness: one huge transfer that is always ready (a sparse file into `/dev/null`: it
//! never waits for either side) must not starve the others. Each pass gives every ready transfer a bounded
//! share (`Builder::fairness_bytes`), so a small transfer submitted beside a 512 MiB one
//! completes first, on both backends.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ringsplice::{BackendPreference, Strategy, Transfer};

#[test]
fn a_huge_ready_transfer_does_not_starve_a_small_one() {
    const BIG: u64 = 512 << 20;
    // A sparse file: reading it costs no disk, so the big transfer is always ready.
    let tmp = common::TempFile::with_contents("fair", b"");
    let path = tmp.path.clone();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(BIG)
        .unwrap();
    for b in [BackendPreference::IoUring, BackendPreference::Fallback] {
        let Some(mut e) = common::engine_or_skip(b, |b| b.fairness_bytes(1 << 20)) else {
            continue;
        };
        let file = std::fs::File::open(&path).unwrap();
        let bdst = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        // Inline: the engine's own thread does the big transfer's work, the case where
        // starvation could happen.
        e.submit(Transfer::new(file, bdst).strategy(Strategy::Inline).tag(1))
            .unwrap();
        let (mut w, src) = common::tcp_pair();
        let (dst, mut r) = common::tcp_pair();
        w.write_all(&[3u8; 10_000]).unwrap();
        drop(w);
        e.submit(Transfer::new(src, dst).tag(2)).unwrap();
        let mut order = Vec::new();
        let guard = Instant::now() + Duration::from_secs(120);
        while order.len() < 2 {
            assert!(Instant::now() < guard, "{b:?}: hang guard");
            let mut done = Vec::new();
            e.wait(&mut done, Some(Duration::from_secs(1))).unwrap();
            for c in done {
                assert!(c.is_ok(), "{b:?} tag {}: {:?}", c.tag, c.result);
                order.push((c.tag, c.delivered));
            }
        }
        assert_eq!(order, vec![(2, 10_000), (1, BIG)], "{b:?}");
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        assert_eq!(v.len(), 10_000);
    }
}
