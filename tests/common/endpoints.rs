//! Endpoints of every kind: [`Kind`], the test's end of a stream ([`Peer`]), connected
//! streams ([`stream_pair`]), sources and destinations with the helper threads that feed or
//! drain them ([`source_of`], [`destination_of`]), and temporary files ([`TempFile`]).

use std::fs::File;
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{HANG_GUARD, join, set_linger_zero, set_nonblocking, spawn_named, tcp_pair};

/// A kind of endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Tcp,
    Unix,
    Pipe,
}

/// Every kind.
pub(crate) const KINDS: [Kind; 4] = [Kind::File, Kind::Tcp, Kind::Unix, Kind::Pipe];
/// The kinds that are streams (not regular files).
pub(crate) const STREAM_KINDS: [Kind; 3] = [Kind::Tcp, Kind::Unix, Kind::Pipe];

/// The test's end of a stream whose other end the engine holds.
#[derive(Debug)]
pub(crate) enum Peer {
    Tcp(TcpStream),
    Unix(UnixStream),
    PipeReader(PipeReader),
    PipeWriter(PipeWriter),
}

impl Peer {
    /// A read timeout (hang guard) for sockets; pipes have none (their helper threads are
    /// joined with a deadline instead).
    pub(crate) fn set_read_timeout(&self, d: Duration) {
        match self {
            Peer::Tcp(s) => s.set_read_timeout(Some(d)).expect("set_read_timeout"),
            Peer::Unix(s) => s.set_read_timeout(Some(d)).expect("set_read_timeout"),
            _ => {}
        }
    }

    /// Another handle on the same stream (`dup`), to read on one thread and write on
    /// another.
    pub(crate) fn try_clone(&self) -> Peer {
        match self {
            Peer::Tcp(s) => Peer::Tcp(s.try_clone().expect("dup")),
            Peer::Unix(s) => Peer::Unix(s.try_clone().expect("dup")),
            Peer::PipeReader(p) => Peer::PipeReader(p.try_clone().expect("dup")),
            Peer::PipeWriter(p) => Peer::PipeWriter(p.try_clone().expect("dup")),
        }
    }

    /// `shutdown(SHUT_WR)`: a half-close, the socket still readable. Pipes have none.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Peer::Tcp(s) => s.shutdown(Shutdown::Write),
            Peer::Unix(s) => s.shutdown(Shutdown::Write),
            Peer::PipeReader(_) | Peer::PipeWriter(_) => {
                Err(io::Error::other("a pipe has no half-close"))
            }
        }
    }
}

/// Resets a peer: `SO_LINGER` 0 then close for TCP (a RST, unsent bytes dropped); a plain
/// close for the others (a Unix stream has no reset).
pub(crate) fn reset(peer: Peer) {
    if let Peer::Tcp(s) = &peer {
        set_linger_zero(s);
    }
    drop(peer);
}

/// A write or read error meaning the engine's end went away (`EPIPE`, `ECONNRESET`).
pub(crate) fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// `shutdown(SHUT_WR)` on a socket the engine shares, as a proxy does when the other
/// direction has ended (through a duplicate: shutdown acts on the socket, not the fd).
pub(crate) fn shutdown_shared_write(fd: &OwnedFd, kind: Kind) {
    let dup = fd.try_clone().expect("dup the shared socket");
    let s = match kind {
        Kind::Tcp => Peer::Tcp(TcpStream::from(dup)),
        Kind::Unix => Peer::Unix(UnixStream::from(dup)),
        k => panic!("not a socket kind: {k:?}"),
    };
    s.shutdown_write()
        .expect("shutdown(SHUT_WR) of the shared socket");
}

impl AsRawFd for Peer {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Peer::Tcp(s) => s.as_raw_fd(),
            Peer::Unix(s) => s.as_raw_fd(),
            Peer::PipeReader(p) => p.as_raw_fd(),
            Peer::PipeWriter(p) => p.as_raw_fd(),
        }
    }
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Peer::Tcp(s) => s.read(buf),
            Peer::Unix(s) => s.read(buf),
            Peer::PipeReader(p) => p.read(buf),
            Peer::PipeWriter(_) => Err(io::Error::other("reading a pipe's write end")),
        }
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Peer::Tcp(s) => s.write(buf),
            Peer::Unix(s) => s.write(buf),
            Peer::PipeWriter(p) => p.write(buf),
            Peer::PipeReader(_) => Err(io::Error::other("writing a pipe's read end")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connected stream of `kind` (not `File`): the engine's end as an `OwnedFd`, and the
/// test's end. `engine_reads`: the engine's end is a source (else a destination); for a
/// pipe that picks which end the engine gets.
pub(crate) fn stream_pair(kind: Kind, engine_reads: bool) -> (OwnedFd, Peer) {
    match kind {
        Kind::Tcp => {
            let (a, b) = tcp_pair();
            (b.into(), Peer::Tcp(a))
        }
        Kind::Unix => {
            let (a, b) = UnixStream::pair().expect("socketpair");
            (b.into(), Peer::Unix(a))
        }
        Kind::Pipe => {
            let (r, w) = io::pipe().expect("pipe");
            if engine_reads {
                (r.into(), Peer::PipeWriter(w))
            } else {
                (w.into(), Peer::PipeReader(r))
            }
        }
        Kind::File => panic!("stream_pair(File)"),
    }
}

/// Writes `data` to `peer` from a helper thread, then closes it (end of file). Returns the
/// bytes written (all of them, or the write error).
pub(crate) fn spawn_writer(mut peer: Peer, data: Vec<u8>) -> JoinHandle<io::Result<usize>> {
    spawn_named("rs-test-writer", move || {
        peer.write_all(&data)?;
        drop(peer);
        Ok(data.len())
    })
}

/// Reads `peer` to end of file from a helper thread (sockets get a read timeout as a hang
/// guard).
pub(crate) fn spawn_reader(mut peer: Peer) -> JoinHandle<io::Result<Vec<u8>>> {
    peer.set_read_timeout(HANG_GUARD);
    spawn_named("rs-test-reader", move || {
        let mut v = Vec::new();
        peer.read_to_end(&mut v)?;
        Ok(v)
    })
}

/// Reads an fd the engine handed back to end of file (made blocking again first; sockets
/// get a read timeout as a hang guard).
pub(crate) fn read_to_eof(kind: Kind, fd: OwnedFd) -> Vec<u8> {
    set_nonblocking(&fd, false);
    let mut v = Vec::new();
    match kind {
        Kind::Tcp => {
            let mut s = TcpStream::from(fd);
            s.set_read_timeout(Some(HANG_GUARD))
                .expect("set_read_timeout");
            s.read_to_end(&mut v)
                .expect("read the handed-back TCP socket");
        }
        Kind::Unix => {
            let mut s = UnixStream::from(fd);
            s.set_read_timeout(Some(HANG_GUARD))
                .expect("set_read_timeout");
            s.read_to_end(&mut v)
                .expect("read the handed-back Unix socket");
        }
        Kind::Pipe | Kind::File => {
            File::from(fd)
                .read_to_end(&mut v)
                .expect("read the handed-back fd");
        }
    }
    v
}

/// What feeds a source made by [`source_of`]: the temporary file it reads, or the helper
/// thread writing into its stream.
#[derive(Debug)]
pub(crate) enum Feed {
    File(TempFile),
    Stream(JoinHandle<io::Result<usize>>),
}

impl Feed {
    /// Waits for the writer, if any (panics, naming `what`, if it failed); removes the file.
    pub(crate) fn finish(self, what: &str) {
        if let Feed::Stream(w) = self {
            join(w, &format!("{what}: writer"))
                .unwrap_or_else(|e| panic!("{what}: writing the source: {e}"));
        }
    }
}

/// A transfer source of `kind` that yields `payload`: a temporary file holding it (named
/// with `tag`), or the engine's end of a stream whose other end a helper thread writes it
/// into and then closes.
pub(crate) fn source_of(kind: Kind, tag: &str, payload: &[u8]) -> (OwnedFd, Feed) {
    match kind {
        Kind::File => {
            let tf = TempFile::with_contents(tag, payload);
            (tf.open_read().into(), Feed::File(tf))
        }
        k => {
            let (fd, peer) = stream_pair(k, true);
            (fd, Feed::Stream(spawn_writer(peer, payload.to_vec())))
        }
    }
}

/// Where the bytes of a destination made by [`destination_of`] end up: its temporary file,
/// or the helper thread reading its stream to end of file.
#[derive(Debug)]
pub(crate) enum Sink {
    File(TempFile),
    Stream(JoinHandle<io::Result<Vec<u8>>>),
}

impl Sink {
    /// Everything the destination holds: the whole file, or what the reader got. Call it
    /// once the engine's end is closed (the reader waits for end of file).
    pub(crate) fn contents(self, what: &str) -> Vec<u8> {
        match self {
            Sink::File(tf) => tf.contents(),
            Sink::Stream(r) => join(r, &format!("{what}: reader"))
                .unwrap_or_else(|e| panic!("{what}: reading the destination: {e}")),
        }
    }
}

/// A transfer destination of `kind`: a temporary file holding `initial` (named with `tag`),
/// opened for writing, or the engine's end of a stream that a helper thread reads to end
/// of file.
pub(crate) fn destination_of(kind: Kind, tag: &str, initial: &[u8]) -> (OwnedFd, Sink) {
    match kind {
        Kind::File => {
            let tf = TempFile::with_contents(tag, initial);
            (tf.open_write().into(), Sink::File(tf))
        }
        k => {
            let (fd, peer) = stream_pair(k, false);
            (fd, Sink::Stream(spawn_reader(peer)))
        }
    }
}

/// A file in the temp directory, removed on drop.
#[derive(Debug)]
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    /// A new file holding `data`.
    pub(crate) fn with_contents(tag: &str, data: &[u8]) -> TempFile {
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ringsplice-test-{}-{n}-{tag}", std::process::id()));
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        TempFile { path }
    }

    /// Opened read-only.
    pub(crate) fn open_read(&self) -> File {
        File::open(&self.path).unwrap_or_else(|e| panic!("open {:?}: {e}", self.path))
    }

    /// Opened write-only (no truncation, no append).
    pub(crate) fn open_write(&self) -> File {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap_or_else(|e| panic!("open {:?} for writing: {e}", self.path))
    }

    /// The whole contents.
    pub(crate) fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_else(|e| panic!("read {:?}: {e}", self.path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
