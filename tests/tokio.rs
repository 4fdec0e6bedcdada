//! `ringsplice::tokio` on a multi-threaded tokio runtime, on both backends: integrity of
//! `copy_bidirectional` at 500 connections, cancellation by dropping futures (no fd,
//! pipe or thread left behind), `tokio::time::timeout` as a deadline, runtime shutdown with
//! transfers in flight, and thousands of transfers submitted from many tasks at once.
//!
//! The tests run one at a time (`common::serial`), so each can compare `/proc/self/fd` and
//! `/proc/self/task` before and after (`common::LeakCheck`, which waits a few seconds for
//! threads that are exiting, io-wq workers among them). Every test has a hang guard
//! (a watchdog thread that fails the process loudly), and no assertion depends on timing.

#![cfg(feature = "tokio")]

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringsplice::tokio::Splicer;
use ringsplice::{BackendPreference, Engine, Error, Length, Transfer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

// ---------------------------------------------------------------------------------------
// Support: serial runs, hang guards, leak checks, splicers per backend, random data.
// ---------------------------------------------------------------------------------------

mod common;
use common::{LeakCheck, Rng};

/// The binary-wide test lock ([`common::serial`]), after building one tokio runtime: its
/// signal driver opens a process-wide socketpair the first time, and keeps it, which no
/// leak check should count.
fn serial() -> common::Serial {
    let g = common::serial();
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| drop(runtime()));
    g
}

/// Ends the whole test process, loudly, if the test is still running after `secs`.
struct HangGuard(Option<std::sync::mpsc::Sender<()>>);

fn hang_guard(name: &'static str, secs: u64) -> HangGuard {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("hang-guard".into())
        .spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(Duration::from_secs(secs))
            {
                let _ = writeln!(
                    std::io::stderr(),
                    "HANG GUARD: {name} still running after {secs} s; aborting the test process"
                );
                std::process::exit(101);
            }
        })
        .expect("hang guard thread");
    HangGuard(Some(tx))
}

impl Drop for HangGuard {
    fn drop(&mut self) {
        // Dropping the sender wakes the guard thread, which then exits.
        self.0.take();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A splicer of two shards on `pref`; `None` (said loudly on stderr) where io_uring is
/// unsupported, which should not happen on the machines this project runs on.
fn splicer(pref: BackendPreference, test: &str) -> Option<Splicer> {
    match Splicer::builder(Engine::builder().backend(pref))
        .shards(2)
        .build()
    {
        Ok(s) => {
            assert_eq!(s.shards(), 2);
            Some(s)
        }
        Err(Error::Unsupported(why)) if pref == BackendPreference::IoUring => {
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!! {test}: io_uring UNSUPPORTED here ({why}): the io_uring half of \
                 this test DID NOT RUN !!!!!\n"
            );
            None
        }
        Err(e) => panic!("{test}: building a splicer on {pref:?}: {e}"),
    }
}

/// Runs one scenario: serially, with a hang guard, on a fresh multi-threaded runtime that
/// is shut down before the leak check.
fn scenario<F, Fut>(name: &'static str, pref: BackendPreference, body: F)
where
    F: FnOnce(Splicer) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _serial = serial();
    let _guard = hang_guard(name, 300);
    let leaks = LeakCheck::new(name);
    {
        let Some(s) = splicer(pref, name) else {
            return;
        };
        let rt = runtime();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(240), body(s))
                .await
                .unwrap_or_else(|_| panic!("{name}: no result in 240 s"))
        });
        drop(rt);
    }
    leaks.check();
}

/// Up to `max` random bytes.
fn some_bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    let n = rng.range(0, max) as usize;
    rng.bytes(n)
}

async fn write_chunked<W: AsyncWriteExt + Unpin>(w: &mut W, data: &[u8], rng: &mut Rng) {
    let mut at = 0;
    while at < data.len() {
        let n = (rng.range(1, 64 << 10) as usize).min(data.len() - at);
        w.write_all(&data[at..at + n]).await.expect("peer write");
        at += n;
        if rng.below(4) == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// One end of a proxied connection: sends `data` in random chunks then half-closes, and
/// reads until end of file. With `wait_first`, it reads to end of file before sending
/// (so the other side's half-close reaches it first).
async fn peer<S>(s: S, data: Vec<u8>, wait_first: bool, seed: u64) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(s);
    let mut rng = Rng::new(seed);
    let mut got = Vec::new();
    if wait_first {
        r.read_to_end(&mut got).await.expect("peer read");
        write_chunked(&mut w, &data, &mut rng).await;
        w.shutdown().await.expect("peer shutdown");
    } else {
        let send = async {
            write_chunked(&mut w, &data, &mut rng).await;
            w.shutdown().await.expect("peer shutdown");
        };
        let (read, ()) = tokio::join!(r.read_to_end(&mut got), send);
        read.expect("peer read");
    }
    got
}

async fn tcp_pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    (c, s)
}

/// Both ends of a Unix socketpair, ours as tokio's, the engine's as std's.
fn unix_pair() -> (UnixStream, std::os::unix::net::UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    (ours, theirs.into_std().unwrap())
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $(#[test] fn $name() { super::$name(ringsplice::BackendPreference::IoUring) })*
        }
        mod fallback {
            $(#[test] fn $name() { super::$name(ringsplice::BackendPreference::Fallback) })*
        }
    };
}

both_backends!(
    copy_bidirectional_500_tcp,
    copy_bidirectional_unix,
    failed_direction_cancels_other,
    dropped_future_cancels,
    timeout_is_a_deadline,
    runtime_shutdown_in_flight,
    explicit_shutdown_answers,
    thousands_of_tasks,
    send_file_both_file_types,
);

// ---------------------------------------------------------------------------------------
// copy_bidirectional
// ---------------------------------------------------------------------------------------

/// Which side half-closes first: 0 the client, 1 the server, 2 both at once.
fn order_of(i: usize) -> (bool, bool) {
    match i % 3 {
        0 => (false, true),
        1 => (true, false),
        _ => (false, false),
    }
}

/// Relays every connection `(client, a, b, server)` with the splicer — half borrowing
/// `a` and `b` (the drop-in form), half giving them away — while client and server send
/// up to `max` random bytes each (half-close orders by [`order_of`]), then checks what
/// each peer received and that the byte counts say exactly that.
async fn relay_all<S>(splicer: &Splicer, conns: Vec<(S, S, S, S)>, max: u64, seed: u64)
where
    S: ringsplice::tokio::StreamSocket
        + tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + Unpin
        + Send
        + 'static,
{
    let n = conns.len() as u64;
    let mut rng = Rng::new(seed);
    let mut tasks = Vec::new();
    for (i, (client, mut a, mut b, server)) in conns.into_iter().enumerate() {
        let up = some_bytes(&mut rng, max);
        let down = some_bytes(&mut rng, max);
        let (client_waits, server_waits) = order_of(i);
        let s = splicer.clone();
        let proxy = tokio::spawn(async move {
            if i % 2 == 0 {
                let r = s.copy_bidirectional(&mut a, &mut b).await;
                drop((a, b));
                r
            } else {
                s.copy_bidirectional_owned(a, b).await
            }
        });
        let c = tokio::spawn(peer(client, up.clone(), client_waits, rng.next_u64()));
        let sv = tokio::spawn(peer(server, down.clone(), server_waits, rng.next_u64()));
        tasks.push((i, up, down, proxy, c, sv));
    }
    for (i, up, down, proxy, c, sv) in tasks {
        let (client_got, server_got) = (c.await.unwrap(), sv.await.unwrap());
        let counts = proxy
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("conn {i}: {e}"));
        let (sl, ul, cl, dl) = (server_got.len(), up.len(), client_got.len(), down.len());
        assert!(server_got == up, "conn {i}: server got {sl} of {ul} bytes");
        assert!(
            client_got == down,
            "conn {i}: client got {cl} of {dl} bytes"
        );
        assert_eq!(counts, (sl as u64, cl as u64), "conn {i}");
    }
    assert_eq!(splicer.in_flight(), 0);
    let done: u64 = splicer.stats().await.iter().map(|s| s.completed).sum();
    assert_eq!(done, 2 * n);
}

fn copy_bidirectional_500_tcp(pref: BackendPreference) {
    scenario("copy_bidirectional_500_tcp", pref, |splicer| async move {
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut conns = Vec::new();
        for _ in 0..500 {
            // client ↔ a (accepted), b (connected) ↔ server.
            let (client, a) = tcp_pair(&front).await;
            let (b, server) = tcp_pair(&back).await;
            conns.push((client, a, b, server));
        }
        relay_all(&splicer, conns, 128 << 10, 0x5eed_0001).await;
    });
}

fn copy_bidirectional_unix(pref: BackendPreference) {
    scenario("copy_bidirectional_unix", pref, |splicer| async move {
        let conns = (0..60)
            .map(|_| {
                let (client, a) = UnixStream::pair().unwrap();
                let (b, server) = UnixStream::pair().unwrap();
                (client, a, b, server)
            })
            .collect();
        relay_all(&splicer, conns, 256 << 10, 0x5eed_0002).await;
    });
}

/// One direction fails (its destination refuses writes) while the other is stalled: the
/// stalled one is cancelled, the error returned, and both sockets are let go.
fn failed_direction_cancels_other(pref: BackendPreference) {
    scenario(
        "failed_direction_cancels_other",
        pref,
        |splicer| async move {
            for owned in [false, true] {
                let (mut x, mut a) = UnixStream::pair().unwrap();
                let (b, y) = std::os::unix::net::UnixStream::pair().unwrap();
                // y never sends, and refuses what b sends: writes to b fail with EPIPE.
                y.shutdown(std::net::Shutdown::Read).unwrap();
                b.set_nonblocking(true).unwrap();
                let mut b = UnixStream::from_std(b).unwrap();
                let writer = tokio::spawn(async move {
                    let _ = x.write_all(&[9; 100_000]).await;
                    x
                });
                let r = if owned {
                    splicer.copy_bidirectional_owned(a, b).await
                } else {
                    splicer.copy_bidirectional(&mut a, &mut b).await
                };
                let e = r.expect_err("a direction into a refusing peer must fail");
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
                drop(writer.await.unwrap());
                drop(y);
                assert_eq!(splicer.in_flight(), 0);
            }
        },
    );
}

/// The free function, on the process-wide default splicer (Auto backend). No leak check:
/// that splicer, its threads and its pooled pipes stay for the life of the process.
#[test]
fn free_copy_bidirectional() {
    let _serial = serial();
    let _guard = hang_guard("free_copy_bidirectional", 120);
    runtime().block_on(async {
        let (client, mut a) = UnixStream::pair().unwrap();
        let (mut b, server) = UnixStream::pair().unwrap();
        let proxy =
            tokio::spawn(
                async move { ringsplice::tokio::copy_bidirectional(&mut a, &mut b).await },
            );
        let c = tokio::spawn(peer(client, vec![1; 70_000], false, 3));
        let sv = tokio::spawn(peer(server, vec![2; 5], true, 4));
        assert_eq!(c.await.unwrap(), vec![2; 5]);
        assert_eq!(sv.await.unwrap(), vec![1; 70_000]);
        assert_eq!(proxy.await.unwrap().unwrap(), (70_000, 5));
    });
}

// ---------------------------------------------------------------------------------------
// Cancellation, deadlines, shutdown
// ---------------------------------------------------------------------------------------

/// A transfer that never finishes on its own (its source never sends or closes), and our
/// ends of its two sockets: each reads end of file once the engine has closed its end.
fn stalled() -> (Transfer, UnixStream, UnixStream) {
    let (src_ours, src) = unix_pair();
    let (dst_ours, dst) = unix_pair();
    (Transfer::new(src, dst), src_ours, dst_ours)
}

async fn reads_eof(mut s: UnixStream, what: &str) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await {
            Ok(Ok(0)) => return,
            Ok(Ok(_)) => continue, // bytes delivered before the cancel
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(_) => panic!("{what}: the engine's end was not closed within 60 s"),
        }
    }
}

fn dropped_future_cancels(pref: BackendPreference) {
    scenario("dropped_future_cancels", pref, |splicer| async move {
        // Others that must finish, submitted around the ones dropped.
        let mut others = Vec::new();
        for i in 0..20u8 {
            let (mut feed, src) = unix_pair();
            let (sink, dst) = unix_pair();
            let s = splicer.clone();
            others.push(tokio::spawn(async move {
                let t = Transfer::new(src, dst).length(Length::Exact(100_000));
                let fut = s.transfer(t);
                let (c, ()) = tokio::join!(fut, async {
                    feed.write_all(&vec![i; 100_000]).await.unwrap();
                });
                (c.unwrap(), sink)
            }));
        }
        // 1. Stalled before any byte: aborted task.
        let (t, src_ours, dst_ours) = stalled();
        let s = splicer.clone();
        let task = tokio::spawn(async move { s.transfer(t).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        reads_eof(src_ours, "stalled source").await;
        reads_eof(dst_ours, "stalled destination").await;

        // 2. Mid-flight: bytes move until the destination's buffer is full, then the
        //    future is dropped with bytes taken but undelivered.
        let (mut feed, src) = unix_pair();
        let (dst_ours, dst) = unix_pair();
        let fut = splicer.transfer(Transfer::new(src, dst));
        let feeding = async {
            // Until the engine has stopped taking (its destination is full).
            let chunk = vec![7u8; 64 << 10];
            let mut sent = 0usize;
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(300), feed.write(&chunk)).await
            {
                sent += n;
            }
            sent
        };
        tokio::select! {
            r = fut => panic!("a transfer whose destination is never read finished: {r:?}"),
            sent = feeding => assert!(sent > 0),
        }
        // `fut` is dropped: the transfer is cancelled; the engine closes both its ends.
        reads_eof(dst_ours, "mid-flight destination").await;
        let mut buf = [0u8; 1];
        // Our feeding end sees the engine's end closed: end of file (or a reset).
        let r = tokio::time::timeout(Duration::from_secs(60), feed.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");

        for o in others {
            let (c, mut sink) = o.await.unwrap();
            assert!(c.is_ok(), "{:?}", c.result);
            assert_eq!(c.delivered, 100_000);
            let mut got = vec![0u8; 100_000];
            sink.read_exact(&mut got).await.unwrap();
        }
        // The cancelled ones are answered inside; give the shards a moment to reap them.
        let deadline = Instant::now() + Duration::from_secs(30);
        while splicer.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(splicer.in_flight(), 0);
    });
}

fn timeout_is_a_deadline(pref: BackendPreference) {
    scenario("timeout_is_a_deadline", pref, |splicer| async move {
        let (t, src_ours, dst_ours) = stalled();
        let r = tokio::time::timeout(Duration::from_millis(200), splicer.transfer(t)).await;
        assert!(r.is_err(), "a stalled transfer completed: {r:?}");
        reads_eof(src_ours, "timed-out source").await;
        reads_eof(dst_ours, "timed-out destination").await;
        // And a copy_bidirectional between two silent connections.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_x, mut a) = tcp_pair(&l).await;
        let (mut b, _y) = tcp_pair(&l).await;
        let r = tokio::time::timeout(
            Duration::from_millis(200),
            splicer.copy_bidirectional(&mut a, &mut b),
        )
        .await;
        assert!(r.is_err(), "{r:?}");
    });
}

fn runtime_shutdown_in_flight(pref: BackendPreference) {
    let _serial = serial();
    let _guard = hang_guard("runtime_shutdown_in_flight", 300);
    let leaks = LeakCheck::new("runtime_shutdown_in_flight");
    {
        let Some(splicer) = splicer(pref, "runtime_shutdown_in_flight") else {
            return;
        };
        let rt = runtime();
        let mut ours: Vec<std::os::fd::OwnedFd> = Vec::new();
        rt.block_on(async {
            for _ in 0..50 {
                let (t, a, b) = stalled();
                ours.push(a.into_std().unwrap().into());
                ours.push(b.into_std().unwrap().into());
                let s = splicer.clone();
                tokio::spawn(async move { s.transfer(t).await });
            }
            // A bidirectional copy in flight too, moving bytes.
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (mut x, mut a) = tcp_pair(&l).await;
            let (mut b, y) = tcp_pair(&l).await;
            let s = splicer.clone();
            tokio::spawn(async move { s.copy_bidirectional(&mut a, &mut b).await });
            x.write_all(&[1; 10_000]).await.unwrap();
            ours.push(x.into_std().unwrap().into());
            ours.push(y.into_std().unwrap().into());
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let t0 = Instant::now();
        // The tasks are dropped with the runtime: their transfers are cancelled.
        rt.shutdown_timeout(Duration::from_secs(10));
        drop(splicer); // the last clone: shards cancel, drain, drop their engines, exit
        let took = t0.elapsed();
        let _ = writeln!(
            std::io::stderr(),
            "runtime + splicer shutdown took {took:?}"
        );
        drop(ours);
    }
    leaks.check();
}

fn explicit_shutdown_answers(pref: BackendPreference) {
    scenario("explicit_shutdown_answers", pref, |splicer| async move {
        let (t, _a, _b) = stalled();
        let s = splicer.clone();
        let waiting = tokio::spawn(async move { s.transfer(t).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = splicer.clone();
        tokio::task::spawn_blocking(move || s.shutdown())
            .await
            .unwrap();
        // The future waiting was answered: a cancelled completion (or, had the kernel
        // not given it back, a shut-down error).
        match waiting.await.unwrap() {
            Ok(c) => assert!(matches!(c.result, Err(Error::Cancelled)), "{:?}", c.result),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotConnected),
        }
        let (t, _c, _d) = stalled();
        let e = splicer.transfer(t).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotConnected);
        assert!(splicer.stats().await.is_empty());
    });
}

// ---------------------------------------------------------------------------------------
// Many tasks, many workers
// ---------------------------------------------------------------------------------------

fn thousands_of_tasks(pref: BackendPreference) {
    // 3 fds per transfer while it runs (source pipe, destination pipe's two ends):
    // 12,000 at most, within the 20,000 limit.
    const N: u64 = 4000;
    scenario("thousands_of_tasks", pref, |splicer| async move {
        let answered = Arc::new(AtomicU64::new(0));
        let workers = Arc::new(Mutex::new(HashSet::new()));
        let mut tasks = Vec::with_capacity(N as usize);
        for i in 0..N {
            let s = splicer.clone();
            let answered = Arc::clone(&answered);
            let workers = Arc::clone(&workers);
            tasks.push(tokio::spawn(async move {
                let len = 1 + (i * 7919) % 4096;
                let (src, mut w1) = std::io::pipe().unwrap();
                w1.write_all(&vec![i as u8; len as usize]).unwrap();
                drop(w1); // end of file after the bytes
                let (mut r2, dst) = std::io::pipe().unwrap();
                workers.lock().unwrap().insert(std::thread::current().id());
                let c = s.transfer(Transfer::new(src, dst).tag(i)).await.unwrap();
                answered.fetch_add(1, Ordering::Relaxed);
                assert!(c.is_ok(), "transfer {i}: {:?}", c.result);
                assert_eq!((c.tag, c.delivered), (i, len));
                drop(c); // closes the destination's write end: r2 then ends
                let mut got = Vec::new();
                std::io::Read::read_to_end(&mut r2, &mut got).unwrap();
                assert_eq!(got, vec![i as u8; len as usize], "transfer {i}");
                i
            }));
        }
        let mut seen = HashSet::new();
        for t in tasks {
            assert!(seen.insert(t.await.unwrap()));
        }
        assert_eq!(answered.load(Ordering::Relaxed), N);
        assert_eq!(seen.len() as u64, N);
        assert_eq!(splicer.in_flight(), 0);
        let stats = splicer.stats().await;
        let completed: u64 = stats.iter().map(|s| s.completed).sum();
        let submitted: u64 = stats.iter().map(|s| s.submitted).sum();
        assert_eq!((submitted, completed), (N, N), "{stats:?}");
        let _ = writeln!(
            std::io::stderr(),
            "{N} transfers from {} worker threads, per shard {:?}",
            workers.lock().unwrap().len(),
            stats.iter().map(|s| s.completed).collect::<Vec<_>>()
        );
    });
}

// ---------------------------------------------------------------------------------------
// send_file
// ---------------------------------------------------------------------------------------

fn send_file_both_file_types(pref: BackendPreference) {
    scenario("send_file_both_file_types", pref, |splicer| async move {
        let path = std::env::temp_dir().join(format!(
            "ringsplice-tokio-send-file-{}-{pref:?}",
            std::process::id()
        ));
        let data = Rng::new(42).bytes(3 << 20);
        std::fs::write(&path, &data).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();

        let std_file = std::fs::File::open(&path).unwrap();
        let (mut tx, mut rx) = tcp_pair(&l).await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).await.unwrap();
            got
        });
        let n = splicer
            .send_file(&std_file, 1000, Length::Exact(1 << 20), &mut tx)
            .await
            .unwrap();
        assert_eq!(n, 1 << 20);
        // The same file again, whole, from a tokio File, on the same socket.
        let tokio_file = tokio::fs::File::open(&path).await.unwrap();
        let n = splicer
            .send_file(&tokio_file, 0, Length::UntilEof, &mut tx)
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        tx.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert!(got[..1 << 20] == data[1000..1000 + (1 << 20)]);
        assert!(got[1 << 20..] == data[..]);
        // Past the end: UnexpectedEof, as an io::Error.
        let (mut tx2, _rx2) = tcp_pair(&l).await;
        let e = splicer
            .send_file(
                &std_file,
                data.len() as u64 - 10,
                Length::Exact(100),
                &mut tx2,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        drop((std_file, tokio_file));
        std::fs::remove_file(&path).unwrap();
    });
}
