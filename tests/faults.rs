//! Faults, with exact byte accounting, on both backends and all strategies:
//! - cancellation with bytes sitting in the engine's pipe (the destination's reader does not
//!   read, so the destination is full), of an idle transfer, of one never flushed, of a
//!   file source mid-chain, and of one waiting for a pipe under an exhausted pipe budget;
//! - a source peer that resets (RST) mid-transfer, and a destination peer that does;
//! - a destination closed early, in a child process whose `SIGPIPE` is at its default
//!   (terminate), so a SIGPIPE the engine lets through would kill it;
//! - a source shorter than the exact length asked for (every source kind), and a file read
//!   from an offset near or past its end.
//!
//! Where the destination cannot tell what it received, the source side does: the writer
//! writes a known amount and the test reads what is left in the source after the
//! completion, so `delivered + undelivered + left == written` must hold exactly.

mod common;

use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Config, Kind, Peer, Rng, TempFile};
use ringsplice::{Completion, Engine, Error, Length, TransferId};

// ---------------------------------------------------------------------------------------
// Helpers.

/// A source of known content whose end of file comes only when the test says so: a
/// stream whose writer writes `payload` and then keeps its end open until told to close
/// it, or a regular file holding `payload` (read from its position, which then says how
/// much was taken).
struct HeldSource {
    kind: Kind,
    feed: Feed,
    payload: Vec<u8>,
}

enum Feed {
    Writer {
        writer: JoinHandle<io::Result<usize>>,
        close: mpsc::Sender<()>,
    },
    File(TempFile),
}

/// A [`HeldSource`]; for streams, `tune` may set socket options on the engine's end and
/// the writer's end before anything is written.
fn held_source(
    kind: Kind,
    payload: Vec<u8>,
    tune: impl FnOnce(&OwnedFd, &Peer),
) -> (OwnedFd, HeldSource) {
    if kind == Kind::File {
        let tf = TempFile::with_contents("held", &payload);
        let fd = tf.open_read().into();
        let feed = Feed::File(tf);
        return (
            fd,
            HeldSource {
                kind,
                feed,
                payload,
            },
        );
    }
    let (fd, mut peer) = common::stream_pair(kind, true);
    tune(&fd, &peer);
    let (close, rx) = mpsc::channel::<()>();
    let data = payload.clone();
    let writer = common::spawn_named("rs-test-held-writer", move || {
        peer.write_all(&data)?;
        let _ = rx.recv_timeout(common::HANG_GUARD);
        drop(peer);
        Ok(data.len())
    });
    (
        fd,
        HeldSource {
            kind,
            feed: Feed::Writer { writer, close },
            payload,
        },
    )
}

impl HeldSource {
    /// Finds out exactly how much the engine took from the source (a stream: lets the
    /// writer finish and close, and reads what is left from the handed-back fd; a file:
    /// its position) and checks the accounting: `delivered + undelivered` is exactly what
    /// was taken, what is left is the rest of the payload, and what the reader got (if
    /// known) is the first `delivered` bytes.
    fn account(
        self,
        src_back: OwnedFd,
        delivered: u64,
        undelivered: u64,
        got: Option<&[u8]>,
        what: &str,
    ) {
        let rest = match self.feed {
            Feed::Writer { writer, close } => {
                drop(close);
                let rest = common::read_to_eof(self.kind, src_back);
                let written = common::join(writer, &format!("{what}: writer"))
                    .unwrap_or_else(|e| panic!("{what}: writing the source: {e}"));
                assert_eq!(written, self.payload.len(), "{what}: written");
                rest
            }
            Feed::File(tf) => {
                let mut f = std::fs::File::from(src_back);
                let pos = f.stream_position().expect("source file position");
                assert!(pos <= self.payload.len() as u64, "{what}: position {pos}");
                let mut rest = Vec::new();
                f.read_to_end(&mut rest).expect("read the rest of the file");
                drop(tf);
                rest
            }
        };
        let taken = self.payload.len() - rest.len().min(self.payload.len());
        assert_eq!(
            delivered + undelivered,
            taken as u64,
            "{what}: delivered {delivered} + undelivered {undelivered} != {taken} bytes taken \
             from the source ({} in it at first, {} left)",
            self.payload.len(),
            rest.len()
        );
        common::assert_same_bytes(
            &rest,
            &self.payload[taken..],
            &format!("{what}: what is left in the source"),
        );
        if let Some(got) = got {
            assert_eq!(
                got.len() as u64,
                delivered,
                "{what}: reader got != delivered"
            );
            common::assert_same_bytes(
                got,
                &self.payload[..got.len()],
                &format!("{what}: what the reader got"),
            );
        }
    }
}

/// Takes both endpoints back, checking they are the fds given.
fn endpoints_back(c: Completion, src: i32, dst: i32, what: &str) -> (OwnedFd, OwnedFd) {
    let s = c
        .source
        .into_owned_fd()
        .unwrap_or_else(|| panic!("{what}: source not handed back as an owned fd"));
    let d = c
        .destination
        .into_owned_fd()
        .unwrap_or_else(|| panic!("{what}: destination not handed back as an owned fd"));
    assert_eq!(
        (s.as_raw_fd(), d.as_raw_fd()),
        (src, dst),
        "{what}: fds handed back"
    );
    (s, d)
}

/// A few turns of the engine, asserting nothing completes.
fn idle_turns(e: &mut Engine, what: &str) {
    for _ in 0..5 {
        let mut out = Vec::new();
        e.poll(&mut out).expect("poll");
        e.wait(&mut out, Some(Duration::from_millis(2)))
            .expect("wait");
        assert!(out.is_empty(), "{what}: finished early: {out:#?}");
    }
}

fn cancel_and_collect(e: &mut Engine, id: TransferId, tag: u64, what: &str) -> Completion {
    assert!(
        e.cancel(id),
        "{what}: cancel() of a transfer in flight returned false"
    );
    let c = common::wait_one(e, what);
    assert_eq!((c.id, c.tag), (id, tag), "{what}: id and tag");
    assert!(
        matches!(c.result, Err(Error::Cancelled)),
        "{what}: result {:?}, want Err(Cancelled)",
        c.result
    );
    assert!(
        !e.cancel(id),
        "{what}: cancel() of a finished transfer returned true"
    );
    c
}

// ---------------------------------------------------------------------------------------
// Cancellation.

/// Bytes queued in the source before the transfer starts: its first read takes at least
/// this much, more than the destination below can hold (a 4 KiB send buffer: about 8 KiB
/// for a Unix socket, about 128 KiB for TCP with the receiver's default buffer), so bytes
/// are left in the engine's pipe once the destination is full.
const QUEUED: usize = 256 << 10;

fn cancel_with_bytes_in_the_pipe(cfg: Config, src_kind: Kind, dst_kind: Kind) {
    let what = format!("[{cfg}] cancel {src_kind:?}->{dst_kind:?} with a full destination");
    let mut rng = Rng::for_test(&what);
    let mut e = cfg.engine();
    let (src, held) = held_source(src_kind, rng.bytes(1 << 20), |fd, peer| {
        // Room for QUEUED bytes in the source socket.
        common::set_rcvbuf(fd, 1 << 20);
        common::set_sndbuf(peer, 1 << 20);
    });
    common::wait_until(
        &format!("{what}: {QUEUED} bytes queued in the source"),
        || common::queued(&src, QUEUED) >= QUEUED,
    );
    // A destination that holds little, whose reader reads nothing until the end. (Its
    // receive buffer stays at the default: a tiny TCP window makes reading it afterwards
    // crawl through zero-window probes.)
    let (dst, reader) = common::stream_pair(dst_kind, false);
    common::set_sndbuf(&dst, 4096);
    let (src_raw, dst_raw) = (src.as_raw_fd(), dst.as_raw_fd());

    let id = e
        .submit(cfg.transfer(src, dst).tag(5))
        .unwrap_or_else(|r| panic!("{what}: submit refused: {r}"));
    // Run until bytes reach the reader's socket: the first read from the source has
    // happened, and the destination cannot take all of it.
    let early = common::pump_until(&mut e, &format!("{what}: first bytes delivered"), || {
        common::queued(&reader, 1) >= 1
    });
    assert!(
        early.is_empty(),
        "{what}: finished before the cancel: {early:#?}"
    );
    idle_turns(&mut e, &what);

    let c = cancel_and_collect(&mut e, id, 5, &what);
    let (delivered, undelivered) = (c.delivered, c.undelivered);
    let (src_back, dst_back) = endpoints_back(c, src_raw, dst_raw, &what);
    // Closing the engine's end of the destination lets the reader read to the end.
    drop(dst_back);
    let got = common::join(common::spawn_reader(reader), &format!("{what}: reader"))
        .expect("read the destination");
    held.account(src_back, delivered, undelivered, Some(&got), &what);
    assert!(
        undelivered > 0,
        "{what}: no bytes stranded in the engine's pipe (delivered {delivered}), although the \
         first read took at least {QUEUED} bytes and the destination holds far less"
    );
}

#[test]
fn cancel_with_bytes_in_the_pipe_tcp_to_unix() {
    let _g = common::serial();
    common::for_each_config(|cfg| cancel_with_bytes_in_the_pipe(cfg, Kind::Tcp, Kind::Unix));
}

#[test]
fn cancel_with_bytes_in_the_pipe_unix_to_tcp() {
    let _g = common::serial();
    common::for_each_config(|cfg| cancel_with_bytes_in_the_pipe(cfg, Kind::Unix, Kind::Tcp));
}

#[test]
fn cancel_with_bytes_in_the_pipe_tcp_to_tcp() {
    let _g = common::serial();
    common::for_each_config(|cfg| cancel_with_bytes_in_the_pipe(cfg, Kind::Tcp, Kind::Tcp));
}

/// With a pipe budget of one pipe, transfer A holds the only pipe (bytes stranded in it by
/// a full destination) and transfer B, with data ready, waits for a pipe. Cancelling B
/// gives it back untouched; cancelling A accounts for every byte; the budget recovers and
/// a new transfer goes through.
#[test]
fn cancel_a_transfer_waiting_for_a_pipe() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] cancel while waiting for a pipe");
        let mut rng = Rng::for_test(&what);
        let mut e = cfg.engine_from(cfg.builder().pipe_size(64 << 10).pipe_budget(64 << 10));
        // A: fills the only pipe, then stalls on a destination that holds ~8 KiB.
        let (a_src, a_held) = held_source(Kind::Tcp, rng.bytes(512 << 10), |fd, _| {
            common::set_rcvbuf(fd, 1 << 20);
        });
        common::wait_until(&format!("{what}: A's bytes queued"), || {
            common::queued(&a_src, 128 << 10) >= 128 << 10
        });
        let (a_dst, a_reader) = common::tcp_pair_small_buffers();
        let a_reader = common::Peer::Tcp(a_reader);
        let (a_src_raw, a_dst_raw) = (a_src.as_raw_fd(), a_dst.as_raw_fd());
        let a = e
            .submit(cfg.transfer(a_src, a_dst).tag(1))
            .expect("submit A");
        let early = common::pump_until(&mut e, &format!("{what}: A delivering"), || {
            common::queued(&a_reader, 1) >= 1
        });
        assert!(early.is_empty(), "{what}: finished early: {early:#?}");
        // B: data ready, but no pipe to be had.
        let b_data = rng.bytes(10_000);
        let (b_src, mut b_writer) = common::stream_pair(Kind::Tcp, true);
        b_writer.write_all(&b_data).expect("write B");
        drop(b_writer);
        let (b_dst, b_reader) = common::stream_pair(Kind::Unix, false);
        let (b_src_raw, b_dst_raw) = (b_src.as_raw_fd(), b_dst.as_raw_fd());
        let b = e
            .submit(cfg.transfer(b_src, b_dst).tag(2))
            .expect("submit B");
        idle_turns(&mut e, &format!("{what}: B waiting"));
        assert_eq!(
            common::queued(&b_reader, 1),
            0,
            "{what}: B moved bytes without a pipe"
        );

        let c = cancel_and_collect(&mut e, b, 2, &format!("{what}: B"));
        assert_eq!((c.delivered, c.undelivered), (0, 0), "{what}: B's counts");
        let (b_src_back, b_dst_back) = endpoints_back(c, b_src_raw, b_dst_raw, &what);
        drop(b_dst_back);
        assert_eq!(
            common::read_to_eof(Kind::Tcp, b_src_back),
            b_data,
            "{what}: B's source lost bytes"
        );
        drop(b_reader);

        let c = cancel_and_collect(&mut e, a, 1, &format!("{what}: A"));
        let (delivered, undelivered) = (c.delivered, c.undelivered);
        let (a_src_back, a_dst_back) = endpoints_back(c, a_src_raw, a_dst_raw, &what);
        drop(a_dst_back);
        let got = common::join(common::spawn_reader(a_reader), &format!("{what}: A reader"))
            .expect("read A");
        a_held.account(a_src_back, delivered, undelivered, Some(&got), &what);
        assert!(undelivered > 0, "{what}: A had no bytes in its pipe");

        // The budget is whole again.
        let (src, mut w) = common::stream_pair(Kind::Unix, true);
        let (dst, r) = common::stream_pair(Kind::Unix, false);
        let reader = common::spawn_reader(r);
        let data = rng.bytes(200_000);
        let writer = common::spawn_named("rs-test-after-writer", move || {
            w.write_all(&data).map(|()| data)
        });
        let id = e.submit(cfg.transfer(src, dst).tag(3)).expect("submit C");
        let c = common::wait_one(&mut e, &format!("{what}: C"));
        common::assert_ok_completion(&c, id, 3, 200_000, &format!("{what}: C"));
        drop(c);
        let data = common::join(writer, &what).expect("write C");
        let got = common::join(reader, &what).expect("read C");
        common::assert_same_bytes(&got, &data, &format!("{what}: C"));
    });
}

/// A file source (chains of splices on io_uring) into a full destination: cancelled, the
/// file position says exactly how much was taken.
#[test]
fn cancel_file_source_into_a_full_destination() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] cancel file->Unix with a full destination");
        let mut rng = Rng::for_test(&what);
        let data = rng.bytes(4 << 20);
        let tf = TempFile::with_contents("src", &data);
        let src: OwnedFd = tf.open_read().into();
        let (dst, reader) = common::stream_pair(Kind::Unix, false);
        common::set_sndbuf(&dst, 4096);
        let (src_raw, dst_raw) = (src.as_raw_fd(), dst.as_raw_fd());
        let mut e = cfg.engine();
        let id = e
            .submit(cfg.transfer(src, dst).tag(6))
            .unwrap_or_else(|r| panic!("{what}: submit refused: {r}"));
        let early = common::pump_until(&mut e, &format!("{what}: first bytes delivered"), || {
            common::queued(&reader, 1) >= 1
        });
        assert!(
            early.is_empty(),
            "{what}: finished before the cancel: {early:#?}"
        );
        idle_turns(&mut e, &what);
        let c = cancel_and_collect(&mut e, id, 6, &what);
        let (delivered, undelivered) = (c.delivered, c.undelivered);
        let (src_back, dst_back) = endpoints_back(c, src_raw, dst_raw, &what);
        drop(dst_back);
        let got = common::join(common::spawn_reader(reader), &format!("{what}: reader"))
            .expect("read the destination");
        assert_eq!(
            got.len() as u64,
            delivered,
            "{what}: reader got != delivered"
        );
        common::assert_same_bytes(&got, &data[..got.len()], &what);
        let taken = {
            use std::io::Seek;
            std::fs::File::from(src_back)
                .stream_position()
                .expect("file position")
        };
        assert_eq!(
            delivered + undelivered,
            taken,
            "{what}: delivered {delivered} + undelivered {undelivered} != {taken} bytes read \
             from the file (its position)"
        );
        assert!(
            taken < data.len() as u64,
            "{what}: the whole file was taken"
        );
    });
}

/// An idle transfer (no data yet): cancelled with nothing delivered, the source untouched
/// and usable.
#[test]
fn cancel_idle_transfer() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] cancel an idle transfer");
        let mut e = cfg.engine();
        let (src, mut writer) = common::stream_pair(Kind::Tcp, true);
        let (dst, reader) = common::stream_pair(Kind::Tcp, false);
        let (src_raw, dst_raw) = (src.as_raw_fd(), dst.as_raw_fd());
        let id = e.submit(cfg.transfer(src, dst).tag(7)).expect("submit");
        idle_turns(&mut e, &what);
        let c = cancel_and_collect(&mut e, id, 7, &what);
        assert_eq!((c.delivered, c.undelivered), (0, 0), "{what}: counts");
        let (src_back, dst_back) = endpoints_back(c, src_raw, dst_raw, &what);
        drop(dst_back);
        let got = common::join(common::spawn_reader(reader), &what).expect("read");
        assert!(got.is_empty(), "{what}: the reader got {} bytes", got.len());
        writer.write_all(b"still mine").expect("write");
        drop(writer);
        assert_eq!(
            common::read_to_eof(Kind::Tcp, src_back),
            b"still mine",
            "{what}"
        );
    });
}

/// Cancelled before any flush: nothing is read, though the source has data ready.
#[test]
fn cancel_before_the_first_flush() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] cancel before flush");
        let mut e = cfg.engine();
        for kind in common::STREAM_KINDS {
            let (src, mut writer) = common::stream_pair(kind, true);
            writer.write_all(b"ready before submit").expect("write");
            drop(writer);
            let (dst, reader) = common::stream_pair(Kind::Unix, false);
            let (src_raw, dst_raw) = (src.as_raw_fd(), dst.as_raw_fd());
            let id = e.submit(cfg.transfer(src, dst).tag(8)).expect("submit");
            let c = cancel_and_collect(&mut e, id, 8, &what);
            assert_eq!(
                (c.delivered, c.undelivered),
                (0, 0),
                "{what} {kind:?}: counts"
            );
            let (src_back, dst_back) = endpoints_back(c, src_raw, dst_raw, &what);
            drop(dst_back);
            let got = common::join(common::spawn_reader(reader), &what).expect("read");
            assert!(
                got.is_empty(),
                "{what} {kind:?}: reader got {} bytes",
                got.len()
            );
            assert_eq!(
                common::read_to_eof(kind, src_back),
                b"ready before submit",
                "{what} {kind:?}: the source lost bytes"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------
// Resets.

/// The source's peer writes, waits until bytes have reached the reader, writes more, then
/// resets the connection (SO_LINGER 0 + close). The transfer fails with ECONNRESET, having
/// delivered exactly what the reader got, all of it a prefix of what was written.
#[test]
fn source_peer_resets_mid_transfer() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] source peer resets");
        let mut rng = Rng::for_test(&what);
        let mut e = cfg.engine();
        let payload = rng.bytes(320 << 10);
        let (src, wpeer) = common::stream_pair(Kind::Tcp, true);
        let (dst, mut rpeer) = common::stream_pair(Kind::Tcp, false);
        let progress = Arc::new(AtomicU64::new(0));
        let p2 = progress.clone();
        let data = payload.clone();
        let writer = common::spawn_named("rs-test-reset-writer", move || {
            let Peer::Tcp(mut s) = wpeer else {
                unreachable!()
            };
            s.write_all(&data[..256 << 10])?;
            common::wait_until("reader progress before the reset", || {
                p2.load(Ordering::SeqCst) > 0
            });
            s.write_all(&data[256 << 10..])?;
            common::set_linger_zero(&s);
            drop(s);
            Ok::<_, io::Error>(())
        });
        rpeer.set_read_timeout(common::HANG_GUARD);
        let reader = common::spawn_named("rs-test-reset-reader", move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = rpeer.read(&mut buf)?;
                if n == 0 {
                    return Ok::<_, io::Error>(got);
                }
                got.extend_from_slice(&buf[..n]);
                progress.store(got.len() as u64, Ordering::SeqCst);
            }
        });
        let id = e.submit(cfg.transfer(src, dst).tag(9)).expect("submit");
        let c = common::wait_one(&mut e, &what);
        assert_eq!((c.id, c.tag), (id, 9), "{what}: id and tag");
        assert_eq!(
            common::errno(&c.result),
            Some(common::sys::ECONNRESET),
            "{what}: result {:?}, want an ECONNRESET error",
            c.result
        );
        assert_eq!(
            c.undelivered, 0,
            "{what}: undelivered with a healthy destination"
        );
        let delivered = c.delivered;
        drop(c);
        common::join(writer, &format!("{what}: writer")).expect("writer");
        let got = common::join(reader, &format!("{what}: reader")).expect("reader");
        assert_eq!(
            got.len() as u64,
            delivered,
            "{what}: reader got != delivered"
        );
        assert!(delivered > 0, "{what}: nothing delivered before the reset");
        common::assert_same_bytes(&got, &payload[..got.len()], &what);
    });
}

/// The destination's reader reads 64 KiB, then resets. The transfer fails with EPIPE or
/// ECONNRESET; the source side accounts for every byte.
#[test]
fn destination_peer_resets_mid_transfer() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        for src_kind in [Kind::Tcp, Kind::File] {
            destination_peer_resets(cfg, src_kind);
        }
    });
}

fn destination_peer_resets(cfg: Config, src_kind: Kind) {
    let what = format!("[{cfg}] {src_kind:?} source, destination peer resets");
    let mut rng = Rng::for_test(&what);
    let mut e = cfg.engine();
    let (src, held) = held_source(src_kind, rng.bytes(1 << 20), |_, _| {});
    let (dst, rpeer) = common::stream_pair(Kind::Tcp, false);
    common::set_sndbuf(&dst, 4096);
    rpeer.set_read_timeout(common::HANG_GUARD);
    let reader = common::spawn_named("rs-test-resetting-reader", move || {
        let Peer::Tcp(mut s) = rpeer else {
            unreachable!()
        };
        let mut got = vec![0u8; 64 << 10];
        s.read_exact(&mut got)?;
        common::set_linger_zero(&s);
        drop(s);
        Ok::<_, io::Error>(got)
    });
    expect_dead_destination(&mut e, cfg, src, dst, 10, reader, held, &what);
}

// ---------------------------------------------------------------------------------------
// A destination closed early, with SIGPIPE at its default.

fn destination_closed_early(cfg: Config, src_kind: Kind, dst_kind: Kind) {
    let what = format!("[{cfg}] {src_kind:?}->{dst_kind:?}, destination closed early");
    let mut rng = Rng::for_test(&what);
    let mut e = cfg.engine();
    let (src, held) = held_source(src_kind, rng.bytes(1 << 20), |_, _| {});
    let (dst, mut rpeer) = common::stream_pair(dst_kind, false);
    if dst_kind != Kind::Pipe {
        common::set_sndbuf(&dst, 4096);
    }
    rpeer.set_read_timeout(common::HANG_GUARD);
    let reader = common::spawn_named("rs-test-closing-reader", move || {
        let mut got = vec![0u8; 16 << 10];
        rpeer.read_exact(&mut got)?;
        drop(rpeer);
        Ok::<_, io::Error>(got)
    });
    expect_dead_destination(&mut e, cfg, src, dst, 11, reader, held, &what);
}

/// Runs a transfer into a destination whose reader goes away after reading a little
/// (`reader` returns what it read): the completion must be `EPIPE`/`ECONNRESET`, the
/// reader got a prefix no longer than `delivered`, and every byte is accounted for.
#[allow(clippy::too_many_arguments)] // the callers differ in every one of them
fn expect_dead_destination(
    e: &mut Engine,
    cfg: Config,
    src: OwnedFd,
    dst: OwnedFd,
    tag: u64,
    reader: std::thread::JoinHandle<io::Result<Vec<u8>>>,
    held: HeldSource,
    what: &str,
) {
    let (src_raw, dst_raw) = (src.as_raw_fd(), dst.as_raw_fd());
    let id = e.submit(cfg.transfer(src, dst).tag(tag)).expect("submit");
    let c = common::wait_one(e, what);
    assert_eq!((c.id, c.tag), (id, tag), "{what}: id and tag");
    let errno = common::errno(&c.result);
    assert!(
        errno == Some(common::sys::EPIPE) || errno == Some(common::sys::ECONNRESET),
        "{what}: result {:?}, want an EPIPE or ECONNRESET error",
        c.result
    );
    let (delivered, undelivered) = (c.delivered, c.undelivered);
    let (src_back, dst_back) = endpoints_back(c, src_raw, dst_raw, what);
    drop(dst_back);
    let got = common::join(reader, &format!("{what}: reader")).expect("reader");
    assert!(
        got.len() as u64 <= delivered,
        "{what}: the reader got {} bytes but only {delivered} were delivered",
        got.len()
    );
    common::assert_same_bytes(&got, &held.payload[..got.len()], what);
    held.account(src_back, delivered, undelivered, None, what);
}

/// Runs in a child process with SIGPIPE's default disposition: a SIGPIPE the engine lets
/// through kills the child, and the parent reports it.
#[test]
fn destination_closed_early_does_not_raise_sigpipe() {
    let _g = common::serial();
    if !common::is_child() {
        common::run_child("destination_closed_early_does_not_raise_sigpipe");
        return;
    }
    common::sigpipe_default();
    common::for_each_config(|cfg| {
        for src_kind in [Kind::Tcp, Kind::Unix, Kind::File] {
            for dst_kind in common::STREAM_KINDS {
                destination_closed_early(cfg, src_kind, dst_kind);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// A source shorter than the exact length.

fn short_source(
    cfg: Config,
    e: &mut Engine,
    src_kind: Kind,
    dst_kind: Kind,
    have: usize,
    ask: u64,
) {
    let what = format!("[{cfg}] {src_kind:?}->{dst_kind:?}: {have} bytes, Exact({ask})");
    let mut rng = Rng::for_test(&what);
    let payload = rng.bytes(have);
    let (src, feed) = common::source_of(src_kind, "short", &payload);
    let (dst, sink) = common::destination_of(dst_kind, "short-dst", b"");
    let id = e
        .submit(cfg.transfer(src, dst).length(Length::Exact(ask)).tag(12))
        .expect("submit");
    let c = common::wait_one(e, &what);
    assert_eq!((c.id, c.tag), (id, 12), "{what}: id and tag");
    match c.result {
        Err(Error::UnexpectedEof {
            expected,
            delivered,
        }) => {
            assert_eq!(
                (expected, delivered),
                (ask, have as u64),
                "{what}: UnexpectedEof fields"
            );
        }
        ref other => panic!("{what}: result {other:?}, want Err(UnexpectedEof)"),
    }
    assert_eq!(c.delivered, have as u64, "{what}: delivered");
    assert_eq!(c.undelivered, 0, "{what}: undelivered");
    drop(c);
    feed.finish(&what);
    common::assert_same_bytes(&sink.contents(&what), &payload, &what);
}

#[test]
fn source_shorter_than_exact_length() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut e = cfg.engine();
        for (i, src_kind) in common::KINDS.into_iter().enumerate() {
            let dst_kind = if i.is_multiple_of(2) {
                Kind::Tcp
            } else {
                Kind::File
            };
            short_source(cfg, &mut e, src_kind, dst_kind, 10_000, 15_000);
            short_source(cfg, &mut e, src_kind, dst_kind, 0, 1);
            short_source(cfg, &mut e, src_kind, Kind::Pipe, (2 << 20) + 5, 3 << 20);
        }
    });
}

/// A file read from an offset near its end, asked for more than is left.
#[test]
fn file_offset_near_the_end_with_exact_length() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] file offset near the end");
        let mut rng = Rng::for_test(&what);
        let data = rng.bytes(10_000);
        let tf = TempFile::with_contents("near-end", &data);
        let (dst, peer) = common::stream_pair(Kind::Tcp, false);
        let reader = common::spawn_reader(peer);
        let mut e = cfg.engine();
        let id = e
            .submit(
                cfg.transfer(tf.open_read(), dst)
                    .source_offset(9_000)
                    .length(Length::Exact(5_000)),
            )
            .expect("submit");
        let c = common::wait_one(&mut e, &what);
        assert_eq!(c.id, id);
        assert!(
            matches!(
                c.result,
                Err(Error::UnexpectedEof {
                    expected: 5_000,
                    delivered: 1_000
                })
            ),
            "{what}: result {:?}",
            c.result
        );
        assert_eq!((c.delivered, c.undelivered), (1_000, 0), "{what}: counts");
        drop(c);
        let got = common::join(reader, &what).expect("reader");
        common::assert_same_bytes(&got, &data[9_000..], &what);
    });
}

/// A file read from an offset past its end: until end of file moves nothing and is `Ok`;
/// an exact length is an `UnexpectedEof` with nothing delivered.
#[test]
fn file_offset_past_the_end() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let tf = TempFile::with_contents("past-end", b"0123456789");
        let mut e = cfg.engine();
        for exact in [false, true] {
            let what = format!("[{cfg}] source_offset past the end, exact={exact}");
            let (dst, peer) = common::stream_pair(Kind::Tcp, false);
            let reader = common::spawn_reader(peer);
            let mut t = cfg.transfer(tf.open_read(), dst).source_offset(100);
            if exact {
                t = t.length(Length::Exact(5));
            }
            let id = e.submit(t.tag(13)).expect("submit");
            let c = common::wait_one(&mut e, &what);
            assert_eq!((c.id, c.tag), (id, 13), "{what}");
            assert_eq!((c.delivered, c.undelivered), (0, 0), "{what}: counts");
            if exact {
                assert!(
                    matches!(
                        c.result,
                        Err(Error::UnexpectedEof {
                            expected: 5,
                            delivered: 0
                        })
                    ),
                    "{what}: {:?}",
                    c.result
                );
            } else {
                assert!(c.is_ok(), "{what}: {:?}", c.result);
            }
            drop(c);
            let got = common::join(reader, &what).expect("read");
            assert!(got.is_empty(), "{what}: {} bytes arrived", got.len());
        }
    });
}
