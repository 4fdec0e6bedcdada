//! Engine-wide limits fail cleanly: pipe memory stays within its budget (transfers wait
//! for a pipe instead), and running out of fds while creating a pipe fails only the
//! transfer that needed it, with an error that says so, while the others finish.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use ringsplice::{BackendPreference, Engine, Error, Op, Strategy, Transfer};

fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

#[test]
fn pipe_memory_stays_within_budget() {
    const N: usize = 60;
    const SIZE: usize = 1 << 20;
    for b in [BackendPreference::IoUring, BackendPreference::Fallback] {
        for s in [Strategy::Chain, Strategy::Inline] {
            let budget = 4 * (64 << 10);
            let Some(mut e) =
                common::engine_or_skip(b, |b| b.pipe_size(64 << 10).pipe_budget(budget))
            else {
                continue;
            };
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut threads = Vec::new();
            for i in 0..N {
                let (mut w, src) = pair(&l);
                let (dst, mut r) = pair(&l);
                e.submit(Transfer::new(src, dst).strategy(s).tag(i as u64))
                    .unwrap();
                threads.push(std::thread::spawn(move || {
                    w.write_all(&vec![i as u8; SIZE]).unwrap();
                    drop(w);
                    let mut v = Vec::new();
                    r.read_to_end(&mut v).unwrap();
                    v.len() == SIZE && v.iter().all(|&x| x == i as u8)
                }));
            }
            let mut done = Vec::new();
            let guard = Instant::now() + Duration::from_secs(60);
            let mut peak = 0;
            while done.len() < N {
                assert!(Instant::now() < guard, "{b:?} {s:?}: hang guard");
                e.wait(&mut done, Some(Duration::from_millis(100))).unwrap();
                peak = peak.max(e.stats().pipe_bytes);
                assert!(
                    peak <= budget as u64,
                    "{b:?} {s:?}: {peak} > budget {budget}"
                );
            }
            for c in &done {
                assert!(c.is_ok(), "{b:?} {s:?}: {:?}", c.result);
                assert_eq!(c.delivered, SIZE as u64);
            }
            drop(done);
            for t in threads {
                assert!(t.join().unwrap(), "{b:?} {s:?}: a reader got wrong bytes");
            }
            eprintln!("{b:?} {s:?}: peak pipe bytes {peak} of {budget}");
        }
    }
}

#[test]
#[ignore = "run in a child process by emfile_fails_only_the_affected_transfer"]
fn child_emfile() {
    assert!(
        std::env::var("RINGSPLICE_TEST_EMFILE").is_ok(),
        "run by the parent"
    );
    let mut e = Engine::builder()
        .backend(BackendPreference::IoUring)
        .honor_env(false)
        .build()
        .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for i in 0..4 {
        let (w, src) = pair(&l);
        let (dst, r) = pair(&l);
        // Chain transfers on idle sockets each hold a pipe while their poll waits.
        e.submit(Transfer::new(src, dst).strategy(Strategy::Chain).tag(i))
            .unwrap();
        writers.push(w);
        readers.push(r);
    }
    // Room for exactly one more pipe (two fds).
    // read_dir holds one fd of its own while counting.
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64 - 1;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers for this process.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = open + 2;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    let mut done = Vec::new();
    e.poll(&mut done).unwrap();
    // Every transfer that found no fd for its pipe failed, saying why.
    assert!(!done.is_empty(), "no transfer hit EMFILE");
    for c in &done {
        match &c.result {
            Err(Error::Io {
                op: Op::Pipe,
                source,
                ..
            }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EMFILE))
            }
            other => panic!("expected EMFILE from pipe2, got {other:?}"),
        }
        assert_eq!(c.delivered, 0);
    }
    let failed: Vec<u64> = done.iter().map(|c| c.tag).collect();
    assert!(failed.len() < 4, "the one pipe that fits was not used");
    done.clear(); // gives their fds back
    // The others still work.
    for (i, w) in writers.iter_mut().enumerate() {
        if !failed.contains(&(i as u64)) {
            w.write_all(b"still served").unwrap();
        }
    }
    drop(writers);
    let guard = Instant::now() + Duration::from_secs(30);
    while done.len() < 4 - failed.len() {
        assert!(Instant::now() < guard, "hang guard");
        e.wait(&mut done, Some(Duration::from_secs(1))).unwrap();
    }
    for c in &done {
        assert!(c.is_ok(), "{:?}", c.result);
        assert_eq!(c.delivered, 12);
    }
    done.clear();
    for (i, mut r) in readers.into_iter().enumerate() {
        if !failed.contains(&(i as u64)) {
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            assert_eq!(v, b"still served");
        }
    }
    eprintln!(
        "EMFILE failed {} transfer(s); the rest finished",
        failed.len()
    );
}

#[test]
fn emfile_fails_only_the_affected_transfer() {
    // The chain strategy holds pipes while idle, on io_uring only.
    if !common::io_uring_or_skip() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_emfile", "--exact", "--ignored", "--nocapture"])
        .env("RINGSPLICE_TEST_EMFILE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
}
