//! Invalid input never panics and never loses an fd, on both backends and all strategies:
//! a closed fd, a directory, the two ends of one pipe (owned and shared), a write-only
//! source, a read-only destination and an offset on a socket each end in an error (from
//! `submit` or in the completion) with the other endpoint handed back intact; a zero-length
//! transfer completes at once with `Ok` and 0 bytes, taking nothing; `submit` past
//! `max_transfers` is refused with `Error::Full` and the transfer's fds handed back usable;
//! `cancel` of an unknown or finished id returns `false` and touches nothing.

mod common;

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use common::{Config, Kind, Peer, TempFile};
use ringsplice::{Endpoint, Engine, Error, Length, Transfer};

/// Submits a transfer that must fail; returns the error and the endpoints handed back
/// (from the `Rejected` or from the completion).
fn expect_error(e: &mut Engine, t: Transfer, what: &str) -> (Error, Endpoint, Endpoint) {
    match e.submit(t) {
        Err(r) => {
            let (s, d) = r.transfer.into_endpoints();
            (r.error, s, d)
        }
        Ok(id) => {
            let c = common::wait_one(e, what);
            assert_eq!(c.id, id, "{what}: completion id");
            assert_eq!((c.delivered, c.undelivered), (0, 0), "{what}: counts");
            let err = match c.result {
                Ok(()) => panic!("{what}: completed Ok, want an error"),
                Err(err) => err,
            };
            (err, c.source, c.destination)
        }
    }
}

/// The error must say the input is bad: `InvalidInput`, or the OS error behind it.
fn assert_input_error(err: &Error, what: &str) {
    assert!(
        matches!(err, Error::InvalidInput(_) | Error::Io { .. }),
        "{what}: error {err:?}, want InvalidInput or an OS error"
    );
}

/// The test's view of a healthy TCP destination given to a failing transfer.
struct DstCheck {
    raw: i32,
    peer: Peer,
}

fn good_dst() -> (OwnedFd, DstCheck) {
    let (fd, peer) = common::stream_pair(Kind::Tcp, false);
    let raw = fd.as_raw_fd();
    (fd, DstCheck { raw, peer })
}

impl DstCheck {
    /// The same fd came back, owned, and still carries bytes to the peer.
    fn check_back(mut self, back: Endpoint, what: &str) {
        let fd = back
            .into_owned_fd()
            .unwrap_or_else(|| panic!("{what}: destination not handed back as owned"));
        assert_eq!(
            fd.as_raw_fd(),
            self.raw,
            "{what}: a different destination fd came back"
        );
        common::set_nonblocking(&fd, false);
        let mut s = std::net::TcpStream::from(fd);
        s.write_all(b"intact")
            .expect("write through the handed-back destination");
        drop(s);
        self.peer.set_read_timeout(common::HANG_GUARD);
        let mut got = Vec::new();
        self.peer.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"intact", "{what}: destination handed back broken");
    }
}

/// The test's view of a healthy TCP source (with bytes and an end of file waiting) given
/// to a failing transfer.
struct SrcCheck {
    raw: i32,
}

fn good_src() -> (OwnedFd, SrcCheck) {
    let (fd, mut peer) = common::stream_pair(Kind::Tcp, true);
    peer.write_all(b"untouched").expect("write");
    drop(peer);
    let raw = fd.as_raw_fd();
    (fd, SrcCheck { raw })
}

impl SrcCheck {
    /// The same fd came back, owned, with every byte still in it.
    fn check_back(self, back: Endpoint, what: &str) {
        let fd = back
            .into_owned_fd()
            .unwrap_or_else(|| panic!("{what}: source not handed back as owned"));
        assert_eq!(
            fd.as_raw_fd(),
            self.raw,
            "{what}: a different source fd came back"
        );
        assert_eq!(
            common::read_to_eof(Kind::Tcp, fd),
            b"untouched",
            "{what}: the source lost bytes"
        );
    }
}

/// After bad input the engine still moves data.
fn still_works(cfg: Config, e: &mut Engine, what: &str) {
    let (src, mut w) = common::stream_pair(Kind::Unix, true);
    let (dst, r) = common::stream_pair(Kind::Unix, false);
    let reader = common::spawn_reader(r);
    w.write_all(b"still works").expect("write");
    drop(w);
    let id = e.submit(cfg.transfer(src, dst).tag(1)).expect("submit");
    let c = common::wait_one(e, what);
    common::assert_ok_completion(&c, id, 1, 11, what);
    drop(c);
    assert_eq!(
        common::join(reader, what).expect("read"),
        b"still works",
        "{what}"
    );
    assert_eq!(e.in_flight(), 0, "{what}: transfers left in flight");
}

/// A bad source with a healthy destination, then a healthy source with a bad destination.
fn bad_either_side(
    cfg: Config,
    e: &mut Engine,
    what: &str,
    mut bad: impl FnMut() -> Endpoint,
    check: impl Fn(&Error, &str),
) {
    let w = format!("{what} as source");
    let (dst, dcheck) = good_dst();
    let (err, s, d) = expect_error(e, cfg.transfer(bad(), dst), &w);
    check(&err, &w);
    drop(s);
    dcheck.check_back(d, &w);

    let w = format!("{what} as destination");
    let (src, scheck) = good_src();
    let (err, s, d) = expect_error(e, cfg.transfer(src, bad()), &w);
    check(&err, &w);
    drop(d);
    scheck.check_back(s, &w);
}

#[test]
fn closed_fd_is_an_error() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut e = cfg.engine();
        let bad = common::closed_fd();
        let what = format!("[{cfg}] closed fd {bad}");
        bad_either_side(
            cfg,
            &mut e,
            &what,
            || {
                // SAFETY: `bad` is not open and nothing opens it during the test (see
                // `closed_fd`); the engine can only fail on it.
                unsafe { Endpoint::from_raw_fd(bad) }
            },
            |err, w| {
                assert_input_error(err, w);
                if let Some(errno) = err.raw_os_error() {
                    assert_eq!(errno, common::sys::EBADF, "{w}: {err:?}");
                }
            },
        );
        assert!(!common::fd_is_open(bad), "{what}: fd {bad} was opened");
        still_works(cfg, &mut e, &what);
    });
}

#[test]
fn directory_is_an_error() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut e = cfg.engine();
        let what = format!("[{cfg}] a directory");
        bad_either_side(
            cfg,
            &mut e,
            &what,
            || Endpoint::owned(std::fs::File::open(std::env::temp_dir()).expect("open dir")),
            assert_input_error,
        );
        still_works(cfg, &mut e, &what);
    });
}

#[test]
fn write_only_source_and_read_only_destination_are_errors() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut e = cfg.engine();
        let tf = TempFile::with_contents("modes", b"some bytes in a file");

        let what = format!("[{cfg}] write-only file as source");
        let (dst, dcheck) = good_dst();
        let (err, _, d) = expect_error(&mut e, cfg.transfer(tf.open_write(), dst), &what);
        assert_input_error(&err, &what);
        dcheck.check_back(d, &what);

        let what = format!("[{cfg}] a pipe's write end as source");
        let (_r, w) = std::io::pipe().expect("pipe");
        let (dst, dcheck) = good_dst();
        let (err, _, d) = expect_error(&mut e, cfg.transfer(w, dst), &what);
        assert_input_error(&err, &what);
        dcheck.check_back(d, &what);

        let what = format!("[{cfg}] read-only file as destination");
        let (src, scheck) = good_src();
        let (err, s, _) = expect_error(&mut e, cfg.transfer(src, tf.open_read()), &what);
        assert_input_error(&err, &what);
        scheck.check_back(s, &what);
        assert_eq!(
            tf.contents(),
            b"some bytes in a file",
            "{what}: file changed"
        );

        let what = format!("[{cfg}] a pipe's read end as destination");
        let (r, _w) = std::io::pipe().expect("pipe");
        let (src, scheck) = good_src();
        let (err, s, _) = expect_error(&mut e, cfg.transfer(src, r), &what);
        assert_input_error(&err, &what);
        scheck.check_back(s, &what);

        still_works(cfg, &mut e, &what);
    });
}

/// The read end of a pipe as source and the write end of the same pipe as destination:
/// refused, with the bytes in the pipe left alone; owned and shared endpoints alike, and a
/// shared endpoint's reference is given back.
#[test]
fn both_ends_of_one_pipe_are_an_error() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut e = cfg.engine();

        let what = format!("[{cfg}] same pipe, owned ends");
        let (r, mut w) = std::io::pipe().expect("pipe");
        w.write_all(b"in the pipe").expect("write");
        let (err, s, d) = expect_error(&mut e, cfg.transfer(r, w), &what);
        assert_input_error(&err, &what);
        let r = s.into_owned_fd().expect("read end handed back owned");
        drop(d.into_owned_fd().expect("write end handed back owned"));
        assert_eq!(common::read_to_eof(Kind::Pipe, r), b"in the pipe", "{what}");

        let what = format!("[{cfg}] same pipe, shared ends");
        let (r, mut w) = std::io::pipe().expect("pipe");
        w.write_all(b"shared").expect("write");
        let r: Arc<OwnedFd> = Arc::new(r.into());
        let w: Arc<OwnedFd> = Arc::new(w.into());
        let t = cfg.transfer(Endpoint::shared(r.clone()), Endpoint::shared(w.clone()));
        let (err, s, d) = expect_error(&mut e, t, &what);
        assert_input_error(&err, &what);
        let (s, d) = (
            s.into_shared_fd().expect("read end handed back shared"),
            d.into_shared_fd().expect("write end handed back shared"),
        );
        assert!(
            Arc::ptr_eq(&s, &r) && Arc::ptr_eq(&d, &w),
            "{what}: other Arcs came back"
        );
        drop((s, d));
        assert_eq!(
            Arc::strong_count(&r),
            1,
            "{what}: the engine kept a reference"
        );
        assert_eq!(
            Arc::strong_count(&w),
            1,
            "{what}: the engine kept a reference"
        );
        drop(w);
        let r = Arc::into_inner(r).expect("sole owner");
        assert_eq!(common::read_to_eof(Kind::Pipe, r), b"shared", "{what}");

        still_works(cfg, &mut e, &what);
    });
}

/// Offsets are for regular files: asked of a socket, the transfer fails rather than
/// silently ignoring them.
#[test]
fn offset_on_a_socket_is_an_error() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut e = cfg.engine();
        let what = format!("[{cfg}] source_offset on a socket");
        let (src, scheck) = good_src();
        let (dst, dcheck) = good_dst();
        let (err, s, d) = expect_error(&mut e, cfg.transfer(src, dst).source_offset(3), &what);
        assert_input_error(&err, &what);
        scheck.check_back(s, &what);
        dcheck.check_back(d, &what);

        let what = format!("[{cfg}] destination_offset on a socket");
        let (src, scheck) = good_src();
        let (dst, dcheck) = good_dst();
        let t = cfg.transfer(src, dst).destination_offset(3);
        let (err, s, d) = expect_error(&mut e, t, &what);
        assert_input_error(&err, &what);
        scheck.check_back(s, &what);
        dcheck.check_back(d, &what);
        still_works(cfg, &mut e, &what);
    });
}

/// `Length::Exact(0)`: the first `poll` returns an `Ok` completion with 0 bytes, and no
/// byte is taken from a source that has some.
#[test]
fn zero_length_completes_at_once() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut e = cfg.engine();
        for kind in common::KINDS {
            let what = format!("[{cfg}] Exact(0) from {kind:?}");
            let data = b"nothing of this may move";
            let mut keep = None;
            let src: OwnedFd = match kind {
                Kind::File => {
                    let tf = TempFile::with_contents("zero", data);
                    let f = tf.open_read();
                    keep = Some(tf);
                    f.into()
                }
                k => {
                    let (fd, mut peer) = common::stream_pair(k, true);
                    peer.write_all(data).expect("write");
                    fd
                }
            };
            let (dst, r) = common::stream_pair(Kind::Unix, false);
            let reader = common::spawn_reader(r);
            let id = e
                .submit(cfg.transfer(src, dst).length(Length::Exact(0)).tag(2))
                .expect("submit");
            let mut out = Vec::new();
            e.poll(&mut out).expect("poll");
            assert_eq!(
                out.len(),
                1,
                "{what}: not complete after the first poll: {out:?}"
            );
            let c = out.pop().expect("completion");
            common::assert_ok_completion(&c, id, 2, 0, &what);
            let src_back = c.source.into_owned_fd().expect("source back");
            drop(c.destination);
            let got = common::join(reader, &what).expect("read");
            assert!(got.is_empty(), "{what}: {} bytes arrived", got.len());
            match kind {
                Kind::File => {
                    let pos = std::fs::File::from(src_back)
                        .stream_position()
                        .expect("pos");
                    assert_eq!(pos, 0, "{what}: file position moved");
                }
                _ => {
                    common::set_nonblocking(&src_back, true);
                    let mut buf = [0u8; 64];
                    let n = std::fs::File::from(src_back).read(&mut buf).expect("read");
                    assert_eq!(&buf[..n], data, "{what}: bytes were taken from the source");
                }
            }
            drop(keep);
        }
        still_works(cfg, &mut e, &format!("[{cfg}] after Exact(0)"));
    });
}

/// Past `max_transfers`, `submit` refuses with `Full` and hands the transfer back whole;
/// once a slot frees, the same transfer goes through and moves its bytes.
#[test]
fn submit_past_max_transfers_is_refused_with_the_fds_handed_back() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] max_transfers(2)");
        let mut e = cfg.engine_from(cfg.builder().max_transfers(2));
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        let mut ids = Vec::new();
        for i in 0..2 {
            let (src, w) = common::stream_pair(Kind::Tcp, true);
            let (dst, r) = common::stream_pair(Kind::Tcp, false);
            ids.push(e.submit(cfg.transfer(src, dst).tag(i)).expect("submit"));
            writers.push(w);
            readers.push(r);
        }
        e.flush().expect("flush");
        let (src, mut w3) = common::stream_pair(Kind::Pipe, true);
        let (dst, r3) = common::stream_pair(Kind::Unix, false);
        let (src_raw, dst_raw) = (src.as_raw_fd(), dst.as_raw_fd());
        let rejected = match e.submit(cfg.transfer(src, dst).tag(3).length(Length::Exact(5))) {
            Ok(id) => panic!("{what}: a third transfer was accepted: {id:?}"),
            Err(r) => r,
        };
        assert!(
            matches!(rejected.error, Error::Full { max: 2 }),
            "{what}: {:?}, want Full {{ max: 2 }}",
            rejected.error
        );
        assert!(!format!("{rejected}").is_empty() && !format!("{rejected:?}").is_empty());
        assert_eq!(e.in_flight(), 2, "{what}: in_flight after a refusal");
        assert_eq!(
            e.stats().submitted,
            2,
            "{what}: a refused transfer was counted"
        );
        let (s, d) = rejected.transfer.into_endpoints();
        assert_eq!(
            (s.as_raw_fd(), d.as_raw_fd()),
            (src_raw, dst_raw),
            "{what}: fds"
        );
        assert!(
            common::fd_is_open(src_raw) && common::fd_is_open(dst_raw),
            "{what}"
        );

        // Free a slot; the refused transfer then goes through with the same endpoints.
        let c = {
            assert!(e.cancel(ids[0]), "{what}: cancel");
            common::wait_one(&mut e, &what)
        };
        assert!(
            matches!(c.result, Err(Error::Cancelled)),
            "{what}: {:?}",
            c.result
        );
        drop(c);
        let reader = common::spawn_reader(r3);
        w3.write_all(b"hello").expect("write");
        let id = e
            .submit(
                Transfer::new(s, d)
                    .strategy(cfg.strategy)
                    .tag(3)
                    .length(Length::Exact(5)),
            )
            .unwrap_or_else(|r| panic!("{what}: refused again: {r}"));
        let c = common::wait_one(&mut e, &what);
        common::assert_ok_completion(&c, id, 3, 5, &what);
        drop(c);
        assert_eq!(
            common::join(reader, &what).expect("read"),
            b"hello",
            "{what}"
        );
        drop(w3);
        // The other idle transfer is still there; cancel it so the engine drops clean.
        assert!(e.cancel(ids[1]), "{what}: cancel the second");
        let c = common::wait_one(&mut e, &what);
        assert_eq!(c.id, ids[1]);
        drop((writers, readers));
    });
}

/// `cancel` of a finished id, of an id whose slot was reused, and of an id another engine
/// issued returns `false`, and leaves the transfer in flight alone.
#[test]
fn cancel_of_an_unknown_or_finished_id_returns_false() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let what = format!("[{cfg}] stale cancel");
        let mut e = cfg.engine();
        let (src, mut w) = common::stream_pair(Kind::Unix, true);
        let (dst, _r) = common::stream_pair(Kind::Unix, false);
        w.write_all(b"x").expect("write");
        drop(w);
        let old = e.submit(cfg.transfer(src, dst)).expect("submit");
        let c = common::wait_one(&mut e, &what);
        assert!(c.is_ok(), "{what}: {:?}", c.result);
        drop(c);
        assert!(
            !e.cancel(old),
            "{what}: cancel of a finished transfer returned true"
        );

        // A new transfer, likely in the same slot: the old id must not reach it.
        let (src, mut w) = common::stream_pair(Kind::Unix, true);
        let (dst, r) = common::stream_pair(Kind::Unix, false);
        let reader = common::spawn_reader(r);
        let new = e.submit(cfg.transfer(src, dst).tag(4)).expect("submit");
        assert_ne!(new, old, "{what}: an id was reused");
        e.flush().expect("flush");
        assert!(!e.cancel(old), "{what}: a stale id cancelled something");
        let mut other = cfg.engine();
        assert!(
            !other.cancel(old),
            "{what}: a fresh engine cancelled an unknown id"
        );
        assert!(
            !other.cancel(new),
            "{what}: a fresh engine cancelled an unknown id"
        );
        drop(other);
        w.write_all(b"survived").expect("write");
        drop(w);
        let c = common::wait_one(&mut e, &what);
        common::assert_ok_completion(&c, new, 4, 8, &what);
        drop(c);
        assert_eq!(
            common::join(reader, &what).expect("read"),
            b"survived",
            "{what}"
        );
    });
}
