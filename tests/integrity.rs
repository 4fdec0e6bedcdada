//! Byte-exact integrity: random payloads, checked by length and checksum, moved between every
//! kind of source and destination (regular file, TCP socket, Unix stream socket, pipe),
//! with an exact length and until end of file, from file offsets and file positions and to
//! file offsets (the rest of a destination file untouched), at sizes 0, 1, a few KiB and
//! several MiB, on both backends and all strategies.
//!
//! Each completion must report the exact bytes the reader got, nothing undelivered, `Ok`,
//! its id and tag, and hand both endpoints back as the same owned fds. An exact-length
//! transfer must not take a byte more from its source: the rest is still there afterwards
//! (or, for a file, its position stops exactly there).

mod common;

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};

use common::{Config, Kind, Rng, TempFile};
use ringsplice::{Engine, Length};

/// The sizes every pair is tried with: empty, one byte, a few KiB, several MiB (more than a
/// pipe and a chunk, so many rounds).
const SIZES: [usize; 4] = [0, 1, 4099, (3 << 20) + 123];
/// Bytes after the payload that an exact-length transfer must leave alone.
const TAIL: usize = 333;
/// Size of a destination file before the transfer (its bytes outside the written range
/// must survive).
const CANVAS: usize = 10_000;

/// Where a file endpoint is read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    /// No offset; the fd's position is 0.
    Start,
    /// `source_offset` / `destination_offset`.
    Offset(u64),
    /// No offset; the fd's position was moved here before submitting.
    Seeked(u64),
}

#[derive(Debug, Clone, Copy)]
struct Case {
    src: Kind,
    dst: Kind,
    size: usize,
    exact: bool,
    src_pos: Pos,
    dst_pos: Pos,
}

fn src_positions(k: Kind) -> Vec<Pos> {
    match k {
        Kind::File => vec![Pos::Start, Pos::Offset(4097), Pos::Seeked(1234)],
        _ => vec![Pos::Start],
    }
}

fn dst_positions(k: Kind) -> Vec<Pos> {
    match k {
        // Inside the destination's old contents, and past its end (a hole of zeros).
        Kind::File => vec![Pos::Start, Pos::Offset(4321), Pos::Offset(20_000)],
        _ => vec![Pos::Start],
    }
}

/// The cases for one source kind: every destination kind × size × length mode, with the
/// file positions cycled so each variant of each side shows up.
fn cases(src: Kind) -> Vec<Case> {
    let mut v = Vec::new();
    for dst in common::KINDS {
        let (sp, dp) = (src_positions(src), dst_positions(dst));
        let variants = sp.len().max(dp.len());
        for size in SIZES {
            for exact in [true, false] {
                for i in 0..variants {
                    v.push(Case {
                        src,
                        dst,
                        size,
                        exact,
                        src_pos: sp[i % sp.len()],
                        dst_pos: dp[i % dp.len()],
                    });
                }
            }
        }
    }
    v
}

/// Random bytes to cut payloads from (at a random start, so every case has its own bytes
/// without generating megabytes per case in a debug build).
struct Pool(Vec<u8>);

impl Pool {
    const SLACK: usize = 1 << 16;

    fn new(rng: &mut Rng) -> Pool {
        Pool(rng.bytes(SIZES[SIZES.len() - 1] + Self::SLACK))
    }

    fn payload(&self, rng: &mut Rng, size: usize) -> &[u8] {
        let start = rng.below(Self::SLACK as u64) as usize;
        &self.0[start..start + size]
    }
}

fn run_case(cfg: Config, e: &mut Engine, c: Case, rng: &mut Rng, pool: &Pool) {
    let what = format!("[{cfg}] {c:?}");
    let payload = pool.payload(rng, c.size);
    let want_sum = common::checksum(payload);
    let tail = if c.exact { rng.bytes(TAIL) } else { Vec::new() };

    // The source.
    let mut src_file = None;
    let mut writer = None;
    let src_fd: OwnedFd = match c.src {
        Kind::File => {
            let prefix = match c.src_pos {
                Pos::Start => 0,
                Pos::Offset(o) | Pos::Seeked(o) => o as usize,
            };
            let mut content = rng.bytes(prefix);
            content.extend_from_slice(payload);
            content.extend_from_slice(&tail);
            let tf = TempFile::with_contents("src", &content);
            let mut f = tf.open_read();
            if let Pos::Seeked(p) = c.src_pos {
                f.seek(SeekFrom::Start(p)).expect("seek source");
            }
            src_file = Some(tf);
            f.into()
        }
        k => {
            let (fd, peer) = common::stream_pair(k, true);
            let mut data = payload.to_vec();
            data.extend_from_slice(&tail);
            writer = Some(common::spawn_writer(peer, data));
            fd
        }
    };

    // The destination.
    let canvas = rng.bytes(CANVAS);
    let (dst_fd, sink) = common::destination_of(c.dst, "dst", &canvas);

    let (src_raw, dst_raw) = (src_fd.as_raw_fd(), dst_fd.as_raw_fd());
    let tag = rng.next_u64();
    let mut t = cfg.transfer(src_fd, dst_fd).tag(tag).length(if c.exact {
        Length::Exact(c.size as u64)
    } else {
        Length::UntilEof
    });
    if let Pos::Offset(o) = c.src_pos {
        t = t.source_offset(o);
    }
    if let Pos::Offset(o) = c.dst_pos {
        t = t.destination_offset(o);
    }
    let id = e
        .submit(t)
        .unwrap_or_else(|r| panic!("{what}: submit refused: {r}"));
    let done = common::wait_one(e, &what);
    common::assert_ok_completion(&done, id, tag, c.size as u64, &what);

    let src_back = done
        .source
        .into_owned_fd()
        .unwrap_or_else(|| panic!("{what}: source not handed back as an owned fd"));
    let dst_back = done
        .destination
        .into_owned_fd()
        .unwrap_or_else(|| panic!("{what}: destination not handed back as an owned fd"));
    assert_eq!(
        src_back.as_raw_fd(),
        src_raw,
        "{what}: a different source fd came back"
    );
    assert_eq!(
        dst_back.as_raw_fd(),
        dst_raw,
        "{what}: a different destination fd came back"
    );

    // What reached the destination. Closing the engine's end ends the reader's stream.
    drop(dst_back);
    match sink {
        common::Sink::File(tf) => {
            let start = match c.dst_pos {
                Pos::Offset(o) => o as usize,
                _ => 0,
            };
            // Writing past the end leaves a hole of zeros; writing nothing changes nothing.
            let mut want = canvas;
            if c.size > 0 && want.len() < start + c.size {
                want.resize(start + c.size, 0);
            }
            if c.size > 0 {
                want[start..start + c.size].copy_from_slice(payload);
            }
            common::assert_same_bytes(&tf.contents(), &want, &format!("{what}: destination file"));
        }
        stream @ common::Sink::Stream(_) => {
            let got = stream.contents(&what);
            assert_eq!(
                got.len() as u64,
                done.delivered,
                "{what}: reader got != delivered"
            );
            assert_eq!(
                common::checksum(&got),
                want_sum,
                "{what}: checksum of what the reader got"
            );
            common::assert_same_bytes(&got, payload, &format!("{what}: destination stream"));
        }
    }

    // What the source has left: an exact-length transfer takes not one byte more.
    match c.src {
        Kind::File => {
            let mut f = File::from(src_back);
            let pos = f.stream_position().expect("source position");
            let want = match c.src_pos {
                Pos::Start => c.size as u64,
                Pos::Offset(_) => 0,
                Pos::Seeked(p) => p + c.size as u64,
            };
            assert_eq!(pos, want, "{what}: source file position after the transfer");
            drop(src_file);
        }
        k => {
            let w = writer.expect("writer");
            common::join(w, &format!("{what}: writer"))
                .unwrap_or_else(|err| panic!("{what}: writing the source: {err}"));
            let rest = common::read_to_eof(k, src_back);
            common::assert_same_bytes(&rest, &tail, &format!("{what}: source left-over"));
        }
    }
}

fn every_destination_from(src: Kind) {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut rng = Rng::for_test(&format!("integrity {src:?} {cfg}"));
        let pool = Pool::new(&mut rng);
        let mut e = cfg.engine();
        let cases = cases(src);
        for &c in &cases {
            run_case(cfg, &mut e, c, &mut rng, &pool);
        }
        assert_eq!(e.in_flight(), 0, "[{cfg}] transfers left in flight");
        let st = e.stats();
        let n = cases.len() as u64;
        let bytes: u64 = cases.iter().map(|c| c.size as u64).sum();
        assert_eq!(
            (st.submitted, st.completed, st.bytes),
            (n, n, bytes),
            "[{cfg}] stats (submitted, completed, bytes): {st:?}"
        );
    });
}

#[test]
fn from_a_file_to_every_destination() {
    every_destination_from(Kind::File);
}

#[test]
fn from_a_tcp_socket_to_every_destination() {
    every_destination_from(Kind::Tcp);
}

#[test]
fn from_a_unix_socket_to_every_destination() {
    every_destination_from(Kind::Unix);
}

#[test]
fn from_a_pipe_to_every_destination() {
    every_destination_from(Kind::Pipe);
}

/// Many transfers of every pair in flight on one engine at once, each checked.
#[test]
fn every_pair_at_once_on_one_engine() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut rng = Rng::for_test(&format!("integrity at once {cfg}"));
        let mut e = cfg.engine();
        struct Pending {
            what: String,
            payload: Vec<u8>,
            tag: u64,
            feed: common::Feed,
            sink: common::Sink,
        }
        let mut pending = std::collections::HashMap::new();
        for src in common::KINDS {
            for dst in common::KINDS {
                let size = rng.range(1, 300_000) as usize;
                let payload = rng.bytes(size);
                let what = format!("[{cfg}] {src:?}->{dst:?} {size} bytes (concurrent)");
                let (src_fd, feed) = common::source_of(src, "src", &payload);
                let (dst_fd, sink) = common::destination_of(dst, "dst", b"");
                let tag = rng.next_u64();
                let id = e
                    .submit(cfg.transfer(src_fd, dst_fd).tag(tag))
                    .unwrap_or_else(|r| panic!("{what}: submit refused: {r}"));
                pending.insert(
                    id,
                    Pending {
                        what,
                        payload,
                        tag,
                        feed,
                        sink,
                    },
                );
            }
        }
        let n = pending.len();
        for done in common::wait_n(&mut e, n, &format!("[{cfg}] {n} concurrent transfers")) {
            let p = pending
                .remove(&done.id)
                .unwrap_or_else(|| panic!("[{cfg}] completion for an unknown id: {done:?}"));
            let what = &p.what;
            common::assert_ok_completion(&done, done.id, p.tag, p.payload.len() as u64, what);
            drop(done);
            p.feed.finish(what);
            common::assert_same_bytes(&p.sink.contents(what), &p.payload, what);
        }
        assert!(pending.is_empty());
    });
}

/// A destination file opened with `O_APPEND` (which `splice` and `copy_file_range` refuse):
/// the bytes are appended after what the file held, whatever the source.
#[test]
fn into_an_append_only_file() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        let mut rng = Rng::for_test(&format!("append {cfg}"));
        let mut e = cfg.engine();
        for src in common::KINDS {
            for size in [1, 70_000, (2 << 20) + 3] {
                let what = format!("[{cfg}] {src:?} -> O_APPEND file, {size} bytes");
                let payload = rng.bytes(size);
                let head = rng.bytes(1000);
                let (src_fd, feed) = common::source_of(src, "append-src", &payload);
                let dst = TempFile::with_contents("append-dst", &head);
                let f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&dst.path)
                    .expect("open O_APPEND");
                let id = e
                    .submit(cfg.transfer(src_fd, f).tag(3))
                    .unwrap_or_else(|r| panic!("{what}: submit refused: {r}"));
                let c = common::wait_one(&mut e, &what);
                common::assert_ok_completion(&c, id, 3, size as u64, &what);
                drop(c);
                feed.finish(&what);
                let mut want = head;
                want.extend_from_slice(&payload);
                common::assert_same_bytes(&dst.contents(), &want, &what);
            }
        }
    });
}

/// Both directions of a proxy at once, each socket the source of one transfer and the
/// destination of the other through [`ringsplice::Endpoint::shared`]; the engine gives its
/// references back.
#[test]
fn bidirectional_proxy_over_shared_sockets() {
    let _g = common::serial();
    common::for_each_config(|cfg| {
        for kind in [Kind::Tcp, Kind::Unix] {
            let what = format!("[{cfg}] {kind:?} proxy, both directions");
            let mut rng = Rng::for_test(&what);
            let mut e = cfg.engine();
            let (c_engine, client) = common::stream_pair(kind, true);
            let (s_engine, server) = common::stream_pair(kind, true);
            let (c_arc, s_arc) = (std::sync::Arc::new(c_engine), std::sync::Arc::new(s_engine));
            let up = rng.bytes((2 << 20) + 11);
            let down = rng.bytes((3 << 20) + 7);
            let shared = |a: &std::sync::Arc<OwnedFd>| ringsplice::Endpoint::shared(a.clone());
            let id_up = e
                .submit(
                    cfg.transfer(shared(&c_arc), shared(&s_arc))
                        .length(Length::Exact(up.len() as u64))
                        .tag(1),
                )
                .expect("submit up");
            let id_down = e
                .submit(
                    cfg.transfer(shared(&s_arc), shared(&c_arc))
                        .length(Length::Exact(down.len() as u64))
                        .tag(2),
                )
                .expect("submit down");
            // Each peer writes its side and reads the other's, at once.
            let talk = |peer: common::Peer, send: Vec<u8>, expect: usize| {
                let (mut rd, mut wr) = (peer.try_clone(), peer);
                rd.set_read_timeout(common::HANG_GUARD);
                let w = common::spawn_named("rs-test-proxy-writer", move || {
                    std::io::Write::write_all(&mut wr, &send).map(|()| wr)
                });
                let r = common::spawn_named("rs-test-proxy-reader", move || {
                    let mut got = vec![0u8; expect];
                    std::io::Read::read_exact(&mut rd, &mut got).map(|()| got)
                });
                (w, r)
            };
            let (cw, cr) = talk(client, up.clone(), down.len());
            let (sw, sr) = talk(server, down.clone(), up.len());
            let done = common::wait_n(&mut e, 2, &what);
            for c in &done {
                let (id, n) = if c.tag == 1 {
                    (id_up, up.len())
                } else {
                    (id_down, down.len())
                };
                common::assert_ok_completion(c, id, c.tag, n as u64, &what);
            }
            drop(done);
            assert_eq!(
                std::sync::Arc::strong_count(&c_arc),
                1,
                "{what}: reference kept"
            );
            assert_eq!(
                std::sync::Arc::strong_count(&s_arc),
                1,
                "{what}: reference kept"
            );
            let _client = common::join(cw, &what).expect("client writes");
            let _server = common::join(sw, &what).expect("server writes");
            let got_down = common::join(cr, &what).expect("client reads");
            let got_up = common::join(sr, &what).expect("server reads");
            common::assert_same_bytes(&got_up, &up, &format!("{what}: client to server"));
            common::assert_same_bytes(&got_down, &down, &format!("{what}: server to client"));
        }
    });
}
