//! Tokio integration (cargo feature `tokio`): engines driven by threads of their own,
//! behind `async` functions that any tokio task, on any worker, can call.
//!
//! ```no_run
//! use ringsplice::tokio::Splicer;
//! use tokio::net::{TcpListener, TcpStream};
//!
//! # async fn f() -> std::io::Result<()> {
//! let splicer = Splicer::new()?;
//! let listener = TcpListener::bind("127.0.0.1:8000").await?;
//! loop {
//!     let (mut client, _) = listener.accept().await?;
//!     let splicer = splicer.clone();
//!     tokio::spawn(async move {
//!         let mut upstream = TcpStream::connect("127.0.0.1:9000").await?;
//!         // Like tokio::io::copy_bidirectional: (client → upstream, upstream → client).
//!         // (`copy_bidirectional_owned(client, upstream)` takes the sockets out of tokio's
//!         // reactor, which then sleeps while the engine relays: cheaper for a proxy.)
//!         let (up, down) = splicer.copy_bidirectional(&mut client, &mut upstream).await?;
//!         println!("{up} bytes up, {down} down");
//!         std::io::Result::Ok(())
//!     });
//! }
//! # }
//! ```
//!
//! # Threads
//! A [`Splicer`](crate::tokio::Splicer) is a set of *shards*; each shard is one [`Engine`](crate::Engine) that one thread
//! (`ringsplice-shard-N`) builds, drives and drops, for its whole life. Transfers are spread
//! over the shards (both directions of a [`copy_bidirectional`](crate::tokio::Splicer::copy_bidirectional)
//! on the same one). A tokio task never touches an engine: it pushes a command onto its
//! shard's queue (a mutex-guarded `Vec`) and writes the shard's eventfd if the shard may be
//! asleep; the shard thread sleeps in `poll(2)` on two fds, its engine's fd and that eventfd
//! (retrying `EINTR`), runs its engine's `poll` until it has nothing left to do without
//! blocking, and answers each transfer's future through a tokio oneshot channel.
//!
//! The reason is the kernel's: an io_uring request belongs to the thread that submitted it
//! (its completion work interrupts that thread, and requests of a thread that exits are
//! cancelled), so an engine must be submitted to from one thread only, never from whichever
//! tokio worker runs a task. The kernel sources behind this are cited in `shard.rs`.
//! `IORING_SETUP_SINGLE_ISSUER` (Linux 6.0), which would turn a submission from another
//! thread into an `EEXIST` error, is **not** used: [`Builder`](crate::Builder) does not expose it, and the
//! single thread per engine is guaranteed by this structure instead.
//!
//! # Cancellation
//! Dropping a future of [`transfer`](crate::tokio::Splicer::transfer),
//! [`copy_bidirectional`](crate::tokio::Splicer::copy_bidirectional) or [`send_file`](crate::tokio::Splicer::send_file)
//! before it finishes cancels its transfers ([`Engine::cancel`](crate::Engine::cancel)). The completion is still
//! reaped by the shard, which drops it there: fds are closed only after the kernel has
//! given the transfer back. So `tokio::time::timeout(d, splicer.transfer(t))` is a deadline.
//!
//! # Shutdown
//! When the last clone of a [`Splicer`](crate::tokio::Splicer) is dropped, or on [`Splicer::shutdown`](crate::tokio::Splicer::shutdown), every shard
//! cancels what it runs, answers the futures still waiting (`Err(Cancelled)` completions;
//! futures polled later get an `io::ErrorKind::NotConnected` error), drops its engine (which
//! waits for the kernel) and exits; the threads are joined before `drop`/`shutdown`
//! returns. This blocks the calling thread for as long as the kernel takes to give back the
//! cancelled operations (normally well under a millisecond; the engine waits at most a few
//! seconds). On kernels before io-wq's exit-on-idle (≤ 6.12), an engine's idle `iou-wrk-*`
//! workers last until the thread that submitted to it exits: the shard threads exit on
//! shutdown, so their workers go too.
//!
//! # Files
//! [`send_file`](crate::tokio::Splicer::send_file) never blocks a tokio worker on the disk: the file is
//! read by the shard's engine. On the io_uring backend, [`Strategy::Auto`] asks
//! `cachestat(2)` (Linux 6.5+) before each chunk whether it is in the page cache; cached
//! chunks are sent with `sendfile(2)` on the shard thread, cold ones are read into a pipe by
//! an io-wq worker, so neither the shard thread nor a tokio worker waits for the disk
//! (before 6.5, every chunk goes through io-wq). On the fallback backend, the file is read
//! with `sendfile(2)` on the shard thread itself: a cold page cache stalls that shard, and
//! every transfer on it, for the disk read (at most one [`Builder::chunk_size`](crate::Builder::chunk_size) per step),
//! but never a tokio worker.
//!
//! [`Strategy::Auto`]: crate::Strategy::Auto

mod shard;
mod sys;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

#[cfg(doc)]
use crate::Engine;
use crate::{Backend, Builder, Completion, Endpoint, Length, Stats, Transfer};
use shard::Shard;

mod sealed {
    use std::io;
    use std::os::fd::OwnedFd;

    pub trait Socket {
        /// The socket's fd, taken out of tokio's reactor (deregistered).
        fn into_fd(self) -> io::Result<OwnedFd>;
    }

    pub trait File {}
}

/// A connected stream socket for [`Splicer::copy_bidirectional`],
/// [`Splicer::copy_bidirectional_owned`] and [`Splicer::send_file`]: tokio's
/// [`TcpStream`](tokio::net::TcpStream) and [`UnixStream`](tokio::net::UnixStream). Sealed.
///
/// Tokio's sockets are already non-blocking, so the engine, which makes the sockets it is
/// given non-blocking (a flag of the open file description, shared with every duplicate),
/// changes nothing about them.
pub trait StreamSocket: AsFd + sealed::Socket {}

impl sealed::Socket for tokio::net::TcpStream {
    fn into_fd(self) -> io::Result<OwnedFd> {
        self.into_std().map(OwnedFd::from)
    }
}
impl StreamSocket for tokio::net::TcpStream {}
impl sealed::Socket for tokio::net::UnixStream {
    fn into_fd(self) -> io::Result<OwnedFd> {
        self.into_std().map(OwnedFd::from)
    }
}
impl StreamSocket for tokio::net::UnixStream {}

/// A file that [`Splicer::send_file`] can read: [`std::fs::File`] or [`tokio::fs::File`].
/// Sealed.
pub trait SourceFile: AsFd + sealed::File {}

impl sealed::File for std::fs::File {}
impl SourceFile for std::fs::File {}
impl sealed::File for tokio::fs::File {}
impl SourceFile for tokio::fs::File {}

/// Engines on their own threads, for tokio: see the [module documentation](self).
///
/// `Clone` (an `Arc`), `Send` and `Sync`. Its methods may be called from any task on any
/// runtime; they need no tokio runtime of their own (the answers arrive through tokio's
/// oneshot channels, which work under any executor).
///
/// ```no_run
/// use ringsplice::tokio::Splicer;
/// use ringsplice::{BackendPreference, Length, Transfer};
/// use std::time::Duration;
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let splicer = Splicer::builder(ringsplice::Engine::builder().backend(BackendPreference::Auto))
///     .shards(2)
///     .build()?;
/// println!("{} shards on {}", splicer.shards(), splicer.backend());
///
/// // One transfer, with a deadline: the timeout drops (and so cancels) it.
/// let file = std::fs::File::open("/etc/services")?;
/// let sock = std::net::TcpStream::connect("127.0.0.1:9000")?;
/// let t = Transfer::new(file, sock).length(Length::Exact(1000));
/// match tokio::time::timeout(Duration::from_secs(5), splicer.transfer(t)).await {
///     Ok(c) => println!("{} bytes: {:?}", c?.delivered, ()),
///     Err(_) => println!("cancelled at the deadline"),
/// }
///
/// // A file to a tokio socket, from offset 0, without blocking a tokio worker.
/// let file = tokio::fs::File::open("/etc/services").await?;
/// let mut sock = tokio::net::TcpStream::connect("127.0.0.1:9000").await?;
/// let sent = splicer.send_file(&file, 0, Length::UntilEof, &mut sock).await?;
/// println!("{sent} bytes sent; {:?}", splicer.stats().await);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Splicer {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<Shard>,
    next: AtomicUsize,
}

impl Inner {
    fn pick(&self) -> &Shard {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        &self.shards[i]
    }

    fn shutdown(&self) {
        // All close first, so the shards wind down at once, then all are joined.
        for s in &self.shards {
            s.close();
        }
        for s in &self.shards {
            s.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Splicer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Splicer")
            .field("shards", &self.inner.shards.len())
            .field("backend", &self.backend())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Settings for a [`Splicer`]: the shard count and each shard's engine settings.
#[derive(Debug, Clone)]
pub struct SplicerBuilder {
    engine: Builder,
    shards: Option<usize>,
}

impl SplicerBuilder {
    /// Number of shards, each an engine with a thread (default
    /// [`std::thread::available_parallelism`], 1 if unknown; 0 means the default).
    pub fn shards(mut self, n: usize) -> SplicerBuilder {
        self.shards = (n > 0).then_some(n);
        self
    }

    /// Starts the shard threads and builds an engine on each (every shard gets the same
    /// settings; [`Builder::max_transfers`] is per shard, and transfers past it wait in
    /// their shard until one finishes, so callers never see [`Error::Full`]).
    ///
    /// # Errors
    /// The first shard's [`Builder::build`] error (e.g. [`Error::Unsupported`] when
    /// [`BackendPreference::IoUring`] was asked for and cannot be had), after the shards
    /// already started have been shut down; [`Error::Io`] if the eventfd cannot be made.
    ///
    /// [`Error::Full`]: crate::Error::Full
    /// [`Error::Unsupported`]: crate::Error::Unsupported
    /// [`Error::Io`]: crate::Error::Io
    /// [`BackendPreference::IoUring`]: crate::BackendPreference::IoUring
    pub fn build(self) -> crate::Result<Splicer> {
        let n = self.shards.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let mut inner = Inner {
            shards: Vec::with_capacity(n),
            next: AtomicUsize::new(0),
        };
        for i in 0..n {
            // On error, dropping `inner` shuts down the shards already started.
            inner.shards.push(Shard::spawn(
                self.engine.clone(),
                format!("ringsplice-shard-{i}"),
            )?);
        }
        Ok(Splicer {
            inner: Arc::new(inner),
        })
    }
}

impl Splicer {
    /// A splicer with default settings: one shard per available core, engines as
    /// [`Engine::new`] makes them.
    ///
    /// # Errors
    /// As [`SplicerBuilder::build`].
    pub fn new() -> crate::Result<Splicer> {
        Splicer::builder(Builder::default()).build()
    }

    /// Settings for a splicer whose shards' engines are built from `engine`.
    pub fn builder(engine: Builder) -> SplicerBuilder {
        SplicerBuilder {
            engine,
            shards: None,
        }
    }

    /// Number of shards (engines, threads).
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// The backend the shards run (all are built from the same settings, so they agree
    /// unless the kernel changed its mind between two builds).
    pub fn backend(&self) -> Backend {
        self.inner.shards[0].backend
    }

    /// Why the first shard's engine runs its backend ([`Engine::backend_reason`]).
    pub fn backend_reason(&self) -> &str {
        &self.inner.shards[0].reason
    }

    /// Transfers handed to the shards whose futures have not been answered yet, including
    /// those being cancelled.
    pub fn in_flight(&self) -> usize {
        self.inner.shards.iter().map(Shard::in_flight).sum()
    }

    /// Each shard's [`Engine::stats`] (none once shut down).
    pub async fn stats(&self) -> Vec<Stats> {
        let mut v = Vec::with_capacity(self.inner.shards.len());
        for s in &self.inner.shards {
            if let Some(st) = s.stats().await {
                v.push(st);
            }
        }
        v
    }

    /// Shuts every shard down now, for every clone (see the [module docs](self#shutdown)):
    /// transfers in flight are cancelled, their futures answered, the threads joined. Later
    /// calls of `transfer`, `copy_bidirectional` and `send_file` fail with
    /// [`io::ErrorKind::NotConnected`]. Blocks the calling thread until the shard threads
    /// have exited; dropping the last clone does the same.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// Runs one transfer on one of the shards and returns its completion, exactly as
    /// [`Engine::poll`] would (an error of the transfer is in [`Completion::result`]).
    ///
    /// Dropping the future before it is ready cancels the transfer; its fds close once the
    /// kernel has let go of them.
    ///
    /// # Errors
    /// Only when there will be no completion: the splicer was shut down
    /// ([`io::ErrorKind::NotConnected`]; a transfer not yet started is dropped, which closes
    /// its fds), or the shard's engine itself failed (`io_uring_enter`/`epoll_wait`).
    pub async fn transfer(&self, transfer: Transfer) -> io::Result<Completion> {
        let mut done = self.inner.pick().start(vec![transfer], false)?.await?;
        // `None` only for a transfer cancelled before it reached the engine: at shutdown.
        done.pop().flatten().ok_or_else(shard::shut_down)
    }

    /// Copies in both directions between `a` and `b` until each direction reaches end of
    /// file, like [`tokio::io::copy_bidirectional`](https://docs.rs/tokio/1/tokio/io/fn.copy_bidirectional.html), and returns the bytes copied
    /// `(a → b, b → a)` as it does. When one direction reaches end of file, the write side
    /// of its destination is shut down (`shutdown(SHUT_WR)`) and the other direction goes
    /// on.
    ///
    /// The sockets are borrowed, as tokio's function borrows them: each is duplicated
    /// (`dup`, which shares the open file description, its non-blocking flag and its
    /// socket), the two directions run as transfers sharing the duplicates, and the
    /// duplicates are closed once the kernel has let go of them. When the future returns,
    /// the engine no longer uses either socket.
    ///
    /// **Cost of borrowing**: the sockets stay registered with tokio's reactor (epoll,
    /// edge-triggered), which therefore wakes a tokio worker for every readiness change
    /// while the engine moves the bytes — measured at 64 connections × 32 MiB on 2 cores,
    /// one shard: 0.321 CPU-s/GB (3,435 voluntary context switches of one tokio worker)
    /// against 0.149 for the same relay with
    /// [`copy_bidirectional_owned`](Splicer::copy_bidirectional_owned), which takes the
    /// sockets out of the reactor. Use that one when the sockets are not needed afterwards
    /// (a proxy).
    ///
    /// # Errors
    /// The first direction's error (converted from [`crate::Error`]); the other direction is
    /// then cancelled and its completion awaited before returning. A `dup` failure
    /// (`EMFILE`). As for [`transfer`](Splicer::transfer), a shut-down splicer.
    ///
    /// Dropping the future cancels both directions without waiting for them.
    pub async fn copy_bidirectional<A, B>(&self, a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
    where
        A: StreamSocket + ?Sized,
        B: StreamSocket + ?Sized,
    {
        let fa = a.as_fd().try_clone_to_owned()?;
        let fb = b.as_fd().try_clone_to_owned()?;
        self.relay(fa, fb).await
    }

    /// [`copy_bidirectional`](Splicer::copy_bidirectional) on sockets given away: they are
    /// taken out of tokio's reactor (`into_std`), so no tokio worker wakes while the engine
    /// relays, and closed once both directions are done (after the kernel has let go of
    /// them). The cheaper choice for a proxy; same result and errors.
    pub async fn copy_bidirectional_owned<A, B>(&self, a: A, b: B) -> io::Result<(u64, u64)>
    where
        A: StreamSocket,
        B: StreamSocket,
    {
        self.relay(a.into_fd()?, b.into_fd()?).await
    }

    /// Both directions between two sockets, sharing them, on one shard: the sockets are
    /// learnt once, and a failure of one direction cancels the other in the same engine.
    async fn relay(&self, a: OwnedFd, b: OwnedFd) -> io::Result<(u64, u64)> {
        let (a, b) = (Arc::new(a), Arc::new(b));
        let direction = |src: &Arc<OwnedFd>, dst: &Arc<OwnedFd>| {
            Transfer::new(
                Endpoint::shared(Arc::clone(src)),
                Endpoint::shared(Arc::clone(dst)),
            )
            .shutdown_destination(true)
        };
        let (ab, ba) = (direction(&a, &b), direction(&b, &a));
        drop((a, b));
        let done = self.inner.pick().start(vec![ab, ba], true)?.await?;
        let mut it = done.into_iter().map(|c| match c {
            Some(c) => (c.delivered, c.result),
            None => (0, Err(crate::Error::Cancelled)), // never reached the engine
        });
        let ((da, ra), (db, rb)) = (
            it.next().unwrap_or((0, Err(crate::Error::Cancelled))),
            it.next().unwrap_or((0, Err(crate::Error::Cancelled))),
        );
        // The shard cancels one direction when the other fails: the failure is the cause,
        // the other's `Cancelled` is not.
        match (ra, rb) {
            (Ok(()), Ok(())) => Ok((da, db)),
            (Err(crate::Error::Cancelled), Err(e)) | (Err(e), _) | (Ok(()), Err(e)) => {
                Err(e.into())
            }
        }
    }

    /// Sends `len` bytes of `file` from `offset` (read like `pread`: the file's position is
    /// left alone) to `sock`, and returns the bytes delivered. Never blocks a tokio worker
    /// on the disk: see [Files](self#files) for where the file is read on each backend.
    ///
    /// Both are borrowed (duplicated with `dup` for the transfer, like
    /// [`copy_bidirectional`](Splicer::copy_bidirectional)), so one file can be sent to
    /// many sockets at once. `sock` is not shut down afterwards. As with the borrowed
    /// `copy_bidirectional`, `sock` stays registered with tokio's reactor, which wakes a
    /// worker as its send buffer drains; [`transfer`](Splicer::transfer) with a socket taken
    /// out of tokio (`into_std`) avoids that.
    ///
    /// # Errors
    /// The transfer's error ([`crate::Error`] converted; for the bytes delivered before an
    /// error, run a [`transfer`](Splicer::transfer) and read its completion), e.g.
    /// `UnexpectedEof` when the file is shorter than `Length::Exact(n)`.
    pub async fn send_file<F, S>(
        &self,
        file: &F,
        offset: u64,
        len: Length,
        sock: &mut S,
    ) -> io::Result<u64>
    where
        F: SourceFile + ?Sized,
        S: StreamSocket + ?Sized,
    {
        let f = file.as_fd().try_clone_to_owned()?;
        let s = sock.as_fd().try_clone_to_owned()?;
        let t = Transfer::new(f, s).source_offset(offset).length(len);
        let c = self.transfer(t).await?;
        c.result?;
        Ok(c.delivered)
    }
}

/// The splicer behind the free [`copy_bidirectional`], made on first use with
/// [`Splicer::new`]'s defaults and kept for the life of the process (its threads sleep
/// when idle).
fn default_splicer() -> io::Result<&'static Splicer> {
    static DEFAULT: OnceLock<Result<Splicer, String>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| Splicer::new().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| io::Error::other(format!("ringsplice::tokio default splicer: {e}")))
}

/// [`Splicer::copy_bidirectional`] on a default [`Splicer`], created on first use (one
/// shard per core, default engine settings) and kept for the life of the process: a
/// drop-in replacement for [`tokio::io::copy_bidirectional`](https://docs.rs/tokio/1/tokio/io/fn.copy_bidirectional.html) on tokio's TCP and Unix
/// stream sockets.
///
/// ```no_run
/// # async fn f(mut a: tokio::net::TcpStream, mut b: tokio::net::TcpStream) -> std::io::Result<()> {
/// let (a_to_b, b_to_a) = ringsplice::tokio::copy_bidirectional(&mut a, &mut b).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`Splicer::copy_bidirectional`], and the default splicer's build error.
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: StreamSocket + ?Sized,
    B: StreamSocket + ?Sized,
{
    default_splicer()?.copy_bidirectional(a, b).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn splicer_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<super::Splicer>();
    }
}
