//! Record sources: datagram and seqpacket sockets (Unix and UDP). Splicing one into a pipe
//! keeps only the part of a record that fits and drops the rest, so the engine must take
//! each record whole: every record arrives whole and in order, with exact counts, on both
//! backends and every strategy, into pipes, sockets and files, with default and one-page
//! pipes and a consumer that starts late. A byte stream into a record socket is refused.

mod common;

use std::io::{self, Read};
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use common::{Config, Kind, Peer, Rng, raise_buffer};
use ringsplice::{Error, Length, Transfer};

/// The kinds of record source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordKind {
    UnixSeqpacket,
    UnixDgram,
    Udp,
}

const RECORD_KINDS: [RecordKind; 3] = [
    RecordKind::UnixSeqpacket,
    RecordKind::UnixDgram,
    RecordKind::Udp,
];

impl RecordKind {
    /// The largest record this kind carries in these tests: 200 KiB for Unix sockets (the
    /// sender's buffer is raised to hold it), UDP's own limit for UDP.
    fn max_record(self) -> usize {
        match self {
            RecordKind::Udp => 65_507,
            _ => 200 << 10,
        }
    }

    /// Whether the source reports end of stream when the sender closes (seqpacket does;
    /// datagram sockets have no end of stream, so those transfers use an exact length).
    fn has_eof(self) -> bool {
        self == RecordKind::UnixSeqpacket
    }
}

/// A connected `AF_UNIX` socket pair of `ty`.
fn unix_pair(ty: libc::c_int) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds socketpair writes.
    let r =
        unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair: {}", io::Error::last_os_error());
    // SAFETY: socketpair succeeded: both fds are new and ours.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A record source of `kind`: the engine's end, and the sending end (blocking).
fn record_pair(kind: RecordKind) -> (OwnedFd, OwnedFd) {
    let (engine, sender) = match kind {
        RecordKind::UnixSeqpacket => unix_pair(libc::SOCK_SEQPACKET),
        RecordKind::UnixDgram => {
            let (a, b) = UnixDatagram::pair().expect("UnixDatagram::pair");
            (a.into(), b.into())
        }
        RecordKind::Udp => {
            let a = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
            let b = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
            a.connect(b.local_addr().unwrap()).expect("connect udp");
            b.connect(a.local_addr().unwrap()).expect("connect udp");
            (a.into(), b.into())
        }
    };
    raise_buffer(sender.as_raw_fd(), true, 4 << 20);
    raise_buffer(engine.as_raw_fd(), false, 4 << 20);
    (engine, sender)
}

/// `n` records of 1 byte to `max` bytes: the edges around a page and a pipe's slots first,
/// then random sizes. Each starts with its index, so a cut or reordering shows where.
fn make_records(rng: &mut Rng, n: usize, max: usize) -> Vec<Vec<u8>> {
    let mut sizes = vec![1, 4095, 4096, 4097, 61_440, 65_536, 150_000, max];
    sizes.retain(|&s| s <= max);
    while sizes.len() < n {
        sizes.push(rng.range(1, max as u64 + 1) as usize);
    }
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut r = rng.bytes(len);
            let tag = (i as u32).to_le_bytes();
            let k = len.min(4);
            r[..k].copy_from_slice(&tag[..k]);
            r
        })
        .collect()
}

fn send_record(fd: RawFd, rec: &[u8]) -> io::Result<()> {
    loop {
        // SAFETY: `rec` is valid for its length; a blocking send of one record.
        let n = unsafe { libc::send(fd, rec.as_ptr().cast(), rec.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            assert_eq!(
                n as usize,
                rec.len(),
                "a record socket sent part of a record"
            );
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // A UDP receiver that is briefly full (ENOBUFS) is retried; nothing is lost.
        if e.kind() != io::ErrorKind::Interrupted && e.raw_os_error() != Some(libc::ENOBUFS) {
            return Err(e);
        }
    }
}

/// Sends the records from a helper thread, then closes the sender. `received` counts the
/// bytes the final consumer has read: UDP drops datagrams a full receiver has no room for,
/// so its sender keeps at most `window` bytes ahead of the consumer (flow control of the
/// test, not of the engine: nothing the engine took may ever be lost).
fn spawn_sender(
    sender: OwnedFd,
    records: Vec<Vec<u8>>,
    received: Option<(Arc<AtomicU64>, u64)>,
) -> JoinHandle<io::Result<()>> {
    common::spawn_named("rs-test-record-sender", move || {
        let mut sent = 0u64;
        for r in &records {
            if let Some((got, window)) = &received {
                common::wait_until("record sender: consumer catching up", || {
                    sent.saturating_sub(got.load(Ordering::Acquire)) + r.len() as u64 <= *window
                });
            }
            send_record(sender.as_raw_fd(), r)?;
            sent += r.len() as u64;
        }
        drop(sender);
        Ok(())
    })
}

/// Reads a stream destination to end of file from a helper thread, starting only once
/// `gate` has reached `start_after` bytes (a consumer that starts late), and counting what
/// it has read in `got`.
fn spawn_counting_reader(
    mut peer: Peer,
    got: Arc<AtomicU64>,
    start_after: (Arc<AtomicU64>, u64),
) -> JoinHandle<io::Result<Vec<u8>>> {
    peer.set_read_timeout(common::HANG_GUARD);
    common::spawn_named("rs-test-late-reader", move || {
        let (gate, at) = start_after;
        common::wait_until("late reader: start", || gate.load(Ordering::Acquire) >= at);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = peer.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
            got.fetch_add(n as u64, Ordering::Release);
        }
    })
}

/// One record source into one destination kind: every record arrives whole and in order.
fn records_into(cfg: Config, src_kind: RecordKind, dst_kind: Kind, pipe_size: Option<usize>) {
    let what = format!("[{cfg}] {src_kind:?} -> {dst_kind:?} (pipe size {pipe_size:?})");
    let mut rng = Rng::for_test(&what);
    let records = make_records(&mut rng, 24, src_kind.max_record());
    let all: Vec<u8> = records.concat();
    let total = all.len() as u64;

    let mut b = cfg.builder();
    if let Some(p) = pipe_size {
        b = b.pipe_size(p);
    }
    let mut e = cfg.engine_from(b);
    let (src, sender) = record_pair(src_kind);

    // The consumer starts only once the engine has delivered the first two records, so
    // the engine meets a full destination; a file destination is read after completion.
    let got = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(AtomicU64::new(0));
    let (dst, sink, file): (OwnedFd, _, _) = match dst_kind {
        Kind::File => {
            let tf = common::TempFile::with_contents("records", b"");
            (tf.open_write().into(), None, Some(tf))
        }
        k => {
            let (fd, peer) = common::stream_pair(k, false);
            let start = (Arc::clone(&gate), 1);
            let reader = spawn_counting_reader(peer, Arc::clone(&got), start);
            (fd, Some(reader), None)
        }
    };
    // UDP: at most 256 KiB ahead of the consumer (the receive buffer is 4 MiB, or as
    // large as the host allows); for a file destination `got` follows the engine's
    // progress instead.
    let window = (256 << 10) as u64;
    let flow = (src_kind == RecordKind::Udp).then(|| (Arc::clone(&got), window));
    let first_two = records.iter().take(2).map(|r| r.len() as u64).sum::<u64>();
    let len = if src_kind.has_eof() {
        Length::UntilEof
    } else {
        Length::Exact(total)
    };
    let id = e
        .submit(cfg.transfer(src, dst).length(len).tag(9))
        .expect("submit");
    let sender_h = spawn_sender(sender, records.clone(), flow);
    let mut done = Vec::new();
    let deadline = std::time::Instant::now() + common::HANG_GUARD * 2;
    while done.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: hang guard; delivered so far {:?}, stats {:?}",
            e.delivered(id),
            e.stats()
        );
        e.wait(&mut done, Some(std::time::Duration::from_millis(20)))
            .expect("wait");
        let d = e.delivered(id).unwrap_or(total);
        if d >= first_two.min(total) {
            gate.store(1, Ordering::Release);
        }
        if dst_kind == Kind::File {
            got.store(d, Ordering::Release);
        }
    }
    gate.store(1, Ordering::Release);
    common::join(sender_h, &format!("{what}: sender"))
        .unwrap_or_else(|err| panic!("{what}: sending records: {err}"));
    let c = done.pop().expect("one completion");
    common::assert_ok_completion(&c, id, 9, total, &what);
    assert_eq!(e.stats().record_copies, 1, "{what}: stats {:?}", e.stats());
    let (_src, dst) = c.into_endpoints();
    drop(dst);
    let out = match (sink, &file) {
        (Some(r), _) => common::join(r, &format!("{what}: reader"))
            .unwrap_or_else(|err| panic!("{what}: reading: {err}")),
        (None, Some(tf)) => tf.contents(),
        (None, None) => unreachable!(),
    };
    common::assert_same_bytes(&out, &all, &what);
}

#[test]
fn records_arrive_whole_and_in_order_into_every_kind() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        for src in RECORD_KINDS {
            for dst in common::KINDS {
                records_into(cfg, src, dst, None);
            }
        }
    });
}

/// One-page pipes (what a user past `pipe-user-pages-soft` is granted) and a 64 KiB pipe
/// size: records never pass through a pipe, so neither can cut one.
#[test]
fn small_pipes_cut_no_record() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        for pipe in [4096, 64 << 10] {
            records_into(cfg, RecordKind::UnixSeqpacket, Kind::Pipe, Some(pipe));
            records_into(cfg, RecordKind::UnixDgram, Kind::Unix, Some(pipe));
        }
    });
}

/// A one-page engine pipe moves a byte stream exactly too: a short splice from a stream
/// socket leaves the rest in the socket, so no byte is ever lost to a small pipe.
#[test]
fn a_one_page_pipe_loses_nothing_from_a_stream() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] TCP -> Unix through one-page pipes");
        let payload = Rng::for_test(&what).bytes(3 << 20);
        let mut e = cfg.engine_from(cfg.builder().pipe_size(4096));
        let (src, feed) = common::source_of(Kind::Tcp, "one-page", &payload);
        let (dst, sink) = common::destination_of(Kind::Unix, "one-page", b"");
        let id = e.submit(cfg.transfer(src, dst).tag(1)).expect("submit");
        let c = common::wait_one(&mut e, &what);
        common::assert_ok_completion(&c, id, 1, payload.len() as u64, &what);
        feed.finish(&what);
        drop(c);
        common::assert_same_bytes(&sink.contents(&what), &payload, &what);
    });
}

/// Seqpacket into seqpacket: each record is written with one send, so the destination's
/// reader sees the same records, boundaries included.
#[test]
fn seqpacket_into_seqpacket_keeps_boundaries() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] seqpacket -> seqpacket");
        let records = make_records(&mut Rng::for_test(&what), 16, 100 << 10);
        let total: u64 = records.iter().map(|r| r.len() as u64).sum();
        let mut e = cfg.engine();
        let (src, sender) = record_pair(RecordKind::UnixSeqpacket);
        let (dst, reader) = unix_pair(libc::SOCK_SEQPACKET);
        raise_buffer(dst.as_raw_fd(), true, 4 << 20);
        raise_buffer(reader.as_raw_fd(), false, 4 << 20);
        let id = e.submit(cfg.transfer(src, dst).tag(2)).expect("submit");
        let sender_h = spawn_sender(sender, records.clone(), None);
        let reader_h = common::spawn_named("rs-test-seqpacket-reader", move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                // SAFETY: `buf` is valid for its length.
                let n = unsafe {
                    libc::recv(reader.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                assert!(n >= 0, "recv: {}", io::Error::last_os_error());
                if n == 0 {
                    return got;
                }
                got.push(buf[..n as usize].to_vec());
            }
        });
        let c = common::wait_one(&mut e, &what);
        common::assert_ok_completion(&c, id, 2, total, &what);
        common::join(sender_h, &what).expect("send");
        drop(c); // closes the destination: the reader sees end of stream
        let got = common::join(reader_h, &what);
        assert_eq!(got.len(), records.len(), "{what}: record count");
        for (i, (g, w)) in got.iter().zip(&records).enumerate() {
            assert!(
                g == w,
                "{what}: record {i}: {} bytes, want {}",
                g.len(),
                w.len()
            );
        }
    });
}

/// An exact length that ends inside a record: the transfer stops before that record with
/// `RecordTooLong`, having delivered the records before it, and the record stays queued on
/// the source, whole.
#[test]
fn a_record_past_the_exact_length_is_left_in_the_socket() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        for kind in RECORD_KINDS {
            let what = format!("[{cfg}] {kind:?}: exact length inside a record");
            let mut e = cfg.engine();
            let (src, sender) = record_pair(kind);
            send_record(sender.as_raw_fd(), &[1u8; 100]).unwrap();
            send_record(sender.as_raw_fd(), &[2u8; 3000]).unwrap();
            let (dst, sink) = common::destination_of(Kind::Pipe, "too-long", b"");
            let t = cfg.transfer(src, dst).length(Length::Exact(1000)).tag(3);
            e.submit(t).expect("submit");
            let c = common::wait_one(&mut e, &what);
            match &c.result {
                Err(Error::RecordTooLong { record, room, .. }) => {
                    assert_eq!((*record, *room), (3000, 900), "{what}")
                }
                other => panic!("{what}: {other:?}"),
            }
            assert_eq!((c.delivered, c.undelivered), (100, 0), "{what}");
            let (src, dst) = c.into_endpoints();
            drop(dst);
            assert_eq!(sink.contents(&what), vec![1u8; 100], "{what}");
            let src: OwnedFd = src.into_typed().expect("owned source");
            common::set_nonblocking(&src, false);
            let mut buf = vec![0u8; 8192];
            // SAFETY: `buf` is valid for its length.
            let n = unsafe { libc::recv(src.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            assert_eq!(n, 3000, "{what}: the record left on the socket");
            assert!(buf[..3000].iter().all(|&b| b == 2), "{what}");
        }
    });
}

/// A byte stream into a datagram or seqpacket socket is refused up front, naming the
/// destination; nothing is read from the source.
#[test]
fn a_stream_into_a_record_socket_is_refused() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] TCP -> Unix datagram");
        let mut e = cfg.engine();
        let (src, mut peer) = common::stream_pair(Kind::Tcp, true);
        std::io::Write::write_all(&mut peer, b"must stay unread").unwrap();
        let (dst, _other) = UnixDatagram::pair().expect("pair");
        e.submit(cfg.transfer(src, dst).tag(4)).expect("submit");
        let c = common::wait_one(&mut e, &what);
        match &c.result {
            Err(Error::InvalidInput(msg)) => {
                assert!(msg.contains("destination fd"), "{what}: {msg}")
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!((c.delivered, c.undelivered), (0, 0), "{what}");
        let (src, _dst) = c.into_endpoints();
        let src: std::net::TcpStream = src.into_typed().expect("owned source");
        let mut buf = [0u8; 64];
        src.set_nonblocking(true).unwrap();
        let n = (&src).read(&mut buf).expect("the bytes are still there");
        assert_eq!(&buf[..n], b"must stay unread", "{what}");
    });
}

/// A record source whose transfer is not `Transfer::new` default: `Strategy::Copy` and
/// `Chain` forced on io_uring still take records whole (covered by the matrix above); this
/// pins that a zero-length datagram ends an `UntilEof` transfer, as `recv` reports it
/// exactly like end of stream.
#[test]
fn an_empty_datagram_ends_an_until_eof_transfer() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] Unix datagram, empty record");
        let mut e = cfg.engine();
        let (src, sender) = record_pair(RecordKind::UnixDgram);
        send_record(sender.as_raw_fd(), b"first").unwrap();
        send_record(sender.as_raw_fd(), b"").unwrap();
        send_record(sender.as_raw_fd(), b"after").unwrap();
        let (dst, sink) = common::destination_of(Kind::Unix, "empty-dgram", b"");
        let id = e
            .submit(Transfer::new(src, dst).strategy(cfg.strategy).tag(5))
            .expect("submit");
        let c = common::wait_one(&mut e, &what);
        common::assert_ok_completion(&c, id, 5, 5, &what);
        let (src, dst) = c.into_endpoints();
        drop(dst);
        assert_eq!(sink.contents(&what), b"first", "{what}");
        // The record after the empty one is still queued.
        let src: UnixDatagram = src.into_typed().expect("owned");
        src.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 16];
        let n = src.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after", "{what}");
    });
}
