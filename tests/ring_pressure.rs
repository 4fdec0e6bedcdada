//! A ring far smaller than the load: two submission entries (four completion entries)
//! for hundreds of concurrent transfers. Nothing is dropped: the engine flushes a full
//! submission queue, keeps what does not fit, and reaps completions the kernel kept aside
//! on CQ overflow.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ringsplice::{BackendPreference, Strategy, Transfer};

#[test]
fn tiny_ring_many_transfers_lose_nothing() {
    for (entries, strategy) in [
        (2, Strategy::Chain),
        (2, Strategy::Inline),
        (4, Strategy::Auto),
    ] {
        let Some(mut e) = common::engine_or_skip(BackendPreference::IoUring, |b| {
            b.ring_entries(entries).pipe_size(64 << 10)
        }) else {
            return;
        };
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        const N: usize = 300;
        const SIZE: usize = 20_000;
        let mut readers = Vec::new();
        let mut writers = Vec::new();
        for i in 0..N {
            let w = TcpStream::connect(addr).unwrap();
            let (src, _) = l.accept().unwrap();
            let dst = TcpStream::connect(addr).unwrap();
            let (r, _) = l.accept().unwrap();
            e.submit(Transfer::new(src, dst).strategy(strategy).tag(i as u64))
                .unwrap();
            readers.push(r);
            writers.push(w);
        }
        // Every source is idle: each transfer now waits on a poll in the ring.
        let mut done = Vec::new();
        e.poll(&mut done).unwrap();
        assert!(done.is_empty());
        // Then all data arrives at once: hundreds of completions for a 4-entry CQ.
        for (i, mut w) in writers.into_iter().enumerate() {
            w.write_all(&vec![i as u8; SIZE]).unwrap();
        }
        let guard = Instant::now() + Duration::from_secs(60);
        while done.len() < N {
            assert!(
                Instant::now() < guard,
                "hang guard: {} of {N} done ({strategy:?})",
                done.len()
            );
            e.wait(&mut done, Some(Duration::from_secs(1))).unwrap();
        }
        for c in &done {
            assert!(c.is_ok(), "{strategy:?} tag {}: {:?}", c.tag, c.result);
            assert_eq!(c.delivered, SIZE as u64);
        }
        let stats = e.stats();
        drop(done); // closes the destinations: readers see EOF
        for (i, mut r) in readers.into_iter().enumerate() {
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            assert_eq!(v.len(), SIZE);
            assert!(v.iter().all(|&b| b == i as u8));
        }
        eprintln!("{entries} entries {strategy:?}: {stats:?}");
        if entries == 2 {
            // 300 completions into a 4-entry CQ: the overflow path really ran.
            assert!(
                stats.cq_overflows > 0,
                "{strategy:?}: the CQ never overflowed"
            );
        }
    }
}
