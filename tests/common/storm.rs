//! Storms: many transfers on one engine, their peers driven by a few helper threads with
//! non-blocking I/O, every byte checked as it arrives, and exactly one completion per
//! transfer filed by index.
//!
//! - [`plans`]: each transfer's kinds ([`storm_kinds`]) and payload, a window of one random
//!   pool at a random start, so bytes of one transfer arriving on another are caught;
//! - [`submit_storm`]: submits them, tagged with their index, and returns the [`WriterJob`]s
//!   and [`ReaderJob`]s for their peers, which a test may adjust (a reset at some byte, an
//!   end of file held back, a paced writer) before [`spawn_storm_io`] starts driving them;
//! - [`Outcomes`]: the completions, their endpoints closed at once so the peers see the end;
//!   [`join_reports`]: what each peer saw ([`WriterReport`], [`ReaderReport`]).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringsplice::{Completion, Engine, Error, TransferId};

use super::{
    Config, HANG_GUARD, Kind, Pairs, Peer, Rng, join_within, peer_gone, reset, set_nonblocking,
    spawn_named, sys, wait_ready,
};

/// The kind of a storm transfer's source and destination: TCP, a fifth Unix on each side
/// (never both sides Unix at the same index).
pub(crate) fn storm_kinds(i: usize) -> (Kind, Kind) {
    let src = if i % 5 == 1 { Kind::Unix } else { Kind::Tcp };
    let dst = if i % 5 == 3 { Kind::Unix } else { Kind::Tcp };
    (src, dst)
}

/// Most bytes a helper moves on one peer per pass.
pub(crate) const IO_CHUNK: usize = 64 << 10;

/// How a writer's peer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriterEnd {
    /// Wrote the whole payload, then closed (end of file).
    Closed,
    /// Reset (Unix: closed) on purpose after `reset_at` bytes.
    Reset,
    /// The engine's end went away first: `EPIPE`/`ECONNRESET` on a write, or end of file or
    /// a reset seen while holding the end of file back.
    PeerGone,
}

/// One source peer a writer thread drives.
pub(crate) struct WriterJob {
    idx: usize,
    peer: Option<Peer>,
    start: usize,
    len: usize,
    /// Reset after writing exactly this many bytes (a source-side fault).
    pub(crate) reset_at: Option<usize>,
    /// After the payload, keep the end open (no end of file) until `release` is set,
    /// watching for the engine's end to go away.
    pub(crate) hold: bool,
    /// Most bytes written per pass (a small chunk paces the writer, so transfers stay
    /// mid-payload for many turns).
    pub(crate) chunk: usize,
    written: usize,
    end: Option<WriterEnd>,
}

impl WriterJob {
    pub(crate) fn new(idx: usize, peer: Peer, start: usize, len: usize) -> WriterJob {
        WriterJob {
            idx,
            peer: Some(peer),
            start,
            len,
            reset_at: None,
            hold: false,
            chunk: IO_CHUNK,
            written: 0,
            end: None,
        }
    }

    fn close(&mut self, end: WriterEnd) {
        let peer = self.peer.take().expect("an open job has its peer");
        if end == WriterEnd::Reset {
            reset(peer);
        } else {
            drop(peer);
        }
        self.end = Some(end);
    }

    /// One step; `true` when something happened.
    fn step(
        &mut self,
        pool: &[u8],
        released: bool,
        scratch: &mut [u8],
        progress: &Progress,
    ) -> bool {
        let target = self.reset_at.unwrap_or(self.len);
        let peer = self.peer.as_mut().expect("an open job has its peer");
        if self.written < target {
            let end = target.min(self.written + self.chunk);
            match peer.write(&pool[self.start + self.written..self.start + end]) {
                Ok(n) => {
                    self.written += n;
                    progress.written[self.idx].store(self.written, Ordering::SeqCst);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if peer_gone(&e) => {
                    self.close(WriterEnd::PeerGone);
                    return true;
                }
                Err(e) => panic!("writer #{}: write: {e}", self.idx),
            }
            if self.written < target {
                return true;
            }
        }
        if self.reset_at.is_some() {
            self.close(WriterEnd::Reset);
            return true;
        }
        if !self.hold || released {
            self.close(WriterEnd::Closed);
            return true;
        }
        // Holding the end of file back: the engine never writes to a source, so a read
        // sees only its end going away.
        match peer.read(scratch) {
            Ok(0) => self.close(WriterEnd::PeerGone),
            Ok(n) => panic!("writer #{}: {n} unexpected bytes from the engine", self.idx),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if peer_gone(&e) => self.close(WriterEnd::PeerGone),
            Err(e) => panic!("writer #{}: read while holding: {e}", self.idx),
        }
        true
    }

    fn pollfd(&self) -> sys::PollFd {
        let peer = self.peer.as_ref().expect("an open job has its peer");
        let target = self.reset_at.unwrap_or(self.len);
        sys::PollFd {
            fd: peer.as_raw_fd(),
            events: if self.written < target {
                sys::POLLOUT
            } else {
                sys::POLLIN
            },
            revents: 0,
        }
    }
}

/// What a writer thread reports for one job.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterReport {
    pub(crate) written: usize,
    pub(crate) end: WriterEnd,
}

/// Drives `jobs` from one thread until every peer is closed. Held ends of file wait for
/// `release` (or for the engine's end to go away).
pub(crate) fn spawn_writers(
    name: &str,
    mut jobs: Vec<WriterJob>,
    pool: Arc<Vec<u8>>,
    release: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> JoinHandle<Vec<(usize, WriterReport)>> {
    for j in &jobs {
        set_nonblocking(j.peer.as_ref().expect("peer"), true);
    }
    let label = name.to_string();
    spawn_named(name, move || {
        let deadline = Instant::now() + HANG_GUARD;
        let mut scratch = [0u8; 64];
        let mut fds = Vec::new();
        let paced = jobs.iter().any(|j| j.chunk < IO_CHUNK);
        loop {
            let released = release.load(Ordering::SeqCst);
            let mut busy = false;
            for j in jobs.iter_mut().filter(|j| j.end.is_none()) {
                busy |= j.step(&pool, released, &mut scratch, &progress);
            }
            let open: Vec<&WriterJob> = jobs.iter().filter(|j| j.end.is_none()).collect();
            if open.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let sample: Vec<_> = open
                    .iter()
                    .take(8)
                    .map(|j| (j.idx, j.written, j.len, j.hold))
                    .collect();
                panic!(
                    "{label}: hang guard: {} peers still open after {:?} (released {released}); \
                     first (idx, written, len, hold): {sample:?}",
                    open.len(),
                    HANG_GUARD
                );
            }
            if !busy {
                fds.clear();
                fds.extend(open.iter().map(|j| j.pollfd()));
                wait_ready(&mut fds);
            } else if paced {
                // Pacing only (how often a cancel or the drop lands mid-payload), never
                // correctness.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        jobs.into_iter()
            .map(|j| {
                let end = j.end.expect("every job ended");
                (
                    j.idx,
                    WriterReport {
                        written: j.written,
                        end,
                    },
                )
            })
            .collect()
    })
}

/// How a reader's peer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReaderEnd {
    /// End of file.
    Eof,
    /// Reset (Unix: closed) on purpose after `reset_at` bytes.
    Reset,
    /// `ECONNRESET` from the engine's end.
    PeerReset,
}

/// One destination peer a reader thread drives.
pub(crate) struct ReaderJob {
    idx: usize,
    peer: Option<Peer>,
    start: usize,
    len: usize,
    /// Reset after reading exactly this many bytes (a destination-side fault).
    pub(crate) reset_at: Option<usize>,
    got: usize,
    end: Option<ReaderEnd>,
    /// The first problem with the bytes received, if any.
    bad: Option<String>,
}

impl ReaderJob {
    pub(crate) fn new(idx: usize, peer: Peer, start: usize, len: usize) -> ReaderJob {
        ReaderJob {
            idx,
            peer: Some(peer),
            start,
            len,
            reset_at: None,
            got: 0,
            end: None,
            bad: None,
        }
    }

    fn close(&mut self, end: ReaderEnd) {
        let peer = self.peer.take().expect("an open job has its peer");
        if end == ReaderEnd::Reset {
            reset(peer);
        } else {
            drop(peer);
        }
        self.end = Some(end);
    }

    /// One step; `true` when something happened.
    fn step(&mut self, pool: &[u8], buf: &mut [u8], progress: &Progress) -> bool {
        if self.reset_at.is_some_and(|r| self.got >= r) {
            self.close(ReaderEnd::Reset);
            return true;
        }
        let want = match self.reset_at {
            Some(r) => (r - self.got).min(buf.len()),
            None => buf.len(),
        };
        let peer = self.peer.as_mut().expect("an open job has its peer");
        match peer.read(&mut buf[..want]) {
            Ok(0) => self.close(ReaderEnd::Eof),
            Ok(n) => {
                if self.got == 0 {
                    progress.started.fetch_add(1, Ordering::SeqCst);
                }
                let chunk = &buf[..n];
                if self.bad.is_none() {
                    if self.got + n > self.len {
                        self.bad = Some(format!(
                            "{} bytes arrived, more than the {} sent",
                            self.got + n,
                            self.len
                        ));
                    } else {
                        let want = &pool[self.start + self.got..self.start + self.got + n];
                        // memcmp first: a byte-by-byte search on every chunk is slow in debug.
                        if chunk != want {
                            let p = chunk.iter().zip(want).position(|(a, b)| a != b);
                            self.bad = Some(format!(
                                "byte {} differs from what was sent",
                                self.got + p.unwrap_or(0)
                            ));
                        }
                    }
                }
                self.got += n;
                if self.reset_at.is_some_and(|r| self.got >= r) {
                    self.close(ReaderEnd::Reset);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                self.close(ReaderEnd::PeerReset)
            }
            Err(e) => panic!("reader #{}: read: {e}", self.idx),
        }
        true
    }
}

/// What the helper threads have done so far, for the driving thread to act on.
pub(crate) struct Progress {
    /// Destination peers that have received at least one byte.
    started: AtomicUsize,
    /// Bytes written to each source peer, by transfer index.
    written: Vec<AtomicUsize>,
}

impl Progress {
    pub(crate) fn new(n: usize) -> Arc<Progress> {
        Arc::new(Progress {
            started: AtomicUsize::new(0),
            written: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    pub(crate) fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    pub(crate) fn written(&self, idx: usize) -> usize {
        self.written[idx].load(Ordering::SeqCst)
    }

    pub(crate) fn written_total(&self) -> usize {
        (0..self.written.len()).map(|i| self.written(i)).sum()
    }
}

/// What a reader thread reports for one job.
#[derive(Debug, Clone)]
pub(crate) struct ReaderReport {
    pub(crate) got: usize,
    pub(crate) end: ReaderEnd,
    pub(crate) bad: Option<String>,
}

/// Drives `jobs` from one thread until every peer has ended, reporting what arrives in
/// `progress`.
pub(crate) fn spawn_readers(
    name: &str,
    mut jobs: Vec<ReaderJob>,
    pool: Arc<Vec<u8>>,
    progress: Arc<Progress>,
) -> JoinHandle<Vec<(usize, ReaderReport)>> {
    for j in &jobs {
        set_nonblocking(j.peer.as_ref().expect("peer"), true);
    }
    let label = name.to_string();
    spawn_named(name, move || {
        let deadline = Instant::now() + HANG_GUARD;
        let mut buf = vec![0u8; IO_CHUNK];
        let mut fds = Vec::new();
        loop {
            let mut busy = false;
            for j in jobs.iter_mut().filter(|j| j.end.is_none()) {
                busy |= j.step(&pool, &mut buf, &progress);
            }
            let open: Vec<&ReaderJob> = jobs.iter().filter(|j| j.end.is_none()).collect();
            if open.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let sample: Vec<_> = open.iter().take(8).map(|j| (j.idx, j.got, j.len)).collect();
                panic!(
                    "{label}: hang guard: {} peers saw no end of file after {:?}; first (idx, \
                     got, len): {sample:?}",
                    open.len(),
                    HANG_GUARD
                );
            }
            if !busy {
                fds.clear();
                fds.extend(open.iter().map(|j| sys::PollFd {
                    fd: j.peer.as_ref().expect("peer").as_raw_fd(),
                    events: sys::POLLIN,
                    revents: 0,
                }));
                wait_ready(&mut fds);
            }
        }
        jobs.into_iter()
            .map(|j| {
                let end = j.end.expect("every job ended");
                (
                    j.idx,
                    ReaderReport {
                        got: j.got,
                        end,
                        bad: j.bad,
                    },
                )
            })
            .collect()
    })
}

/// Joins helper threads and files their reports by transfer index.
pub(crate) fn join_reports<T>(
    handles: Vec<JoinHandle<Vec<(usize, T)>>>,
    n: usize,
    what: &str,
) -> Vec<Option<T>> {
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for h in handles {
        // Each thread has its own hang guard; this one only adds a margin.
        for (idx, r) in join_within(h, HANG_GUARD * 2, what) {
            assert!(out[idx].is_none(), "{what}: two reports for #{idx}");
            out[idx] = Some(r);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Completions of a storm.

/// What a completion said, its endpoints dropped (closed) at once so the peers see it.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) result: Result<(), Error>,
    pub(crate) delivered: u64,
    pub(crate) undelivered: u64,
}

/// Files completions by transfer index (the tag), asserting exactly one per transfer.
pub(crate) struct Outcomes {
    ids: HashMap<TransferId, usize>,
    pub(crate) by_idx: Vec<Option<Outcome>>,
    pub(crate) collected: usize,
}

impl Outcomes {
    pub(crate) fn new(n: usize) -> Outcomes {
        Outcomes {
            ids: HashMap::new(),
            by_idx: (0..n).map(|_| None).collect(),
            collected: 0,
        }
    }

    pub(crate) fn record(&mut self, out: &mut Vec<Completion>, what: &str) {
        for c in out.drain(..) {
            let Completion {
                id,
                tag,
                delivered,
                undelivered,
                result,
                source,
                destination,
                ..
            } = c;
            let idx = *self
                .ids
                .get(&id)
                .unwrap_or_else(|| panic!("{what}: completion for an unknown id {id:?}"));
            assert_eq!(tag, idx as u64, "{what}: #{idx}: tag");
            assert!(
                self.by_idx[idx].is_none(),
                "{what}: #{idx}: a second completion ({result:?}, delivered {delivered}) after \
                 {:?}",
                self.by_idx[idx]
            );
            // Closing the engine's ends now lets the peers see the end.
            drop(source);
            drop(destination);
            self.by_idx[idx] = Some(Outcome {
                result,
                delivered,
                undelivered,
            });
            self.collected += 1;
        }
    }

    pub(crate) fn all_in(&self) -> bool {
        self.collected == self.by_idx.len()
    }

    /// Turns of `wait` until every transfer has completed (hang guard).
    pub(crate) fn collect_rest(&mut self, e: &mut Engine, what: &str) {
        let deadline = Instant::now() + HANG_GUARD;
        let mut out = Vec::new();
        while !self.all_in() {
            assert!(
                e.in_flight() > 0,
                "{what}: {} of {} completions and nothing in flight",
                self.collected,
                self.by_idx.len()
            );
            assert!(
                Instant::now() < deadline,
                "{what}: hang guard: {} of {} completions after {:?}; stats {:?}",
                self.collected,
                self.by_idx.len(),
                HANG_GUARD,
                e.stats()
            );
            e.wait(&mut out, Some(Duration::from_millis(5)))
                .unwrap_or_else(|err| panic!("{what}: wait: {err}"));
            self.record(&mut out, what);
        }
        assert_eq!(e.in_flight(), 0, "{what}: transfers left in flight");
    }
}

/// A storm transfer's plan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) src: Kind,
    pub(crate) dst: Kind,
    pub(crate) start: usize,
    pub(crate) len: usize,
}

/// Random payload windows for `n` transfers of `min..=max` bytes in a pool of `pool` bytes.
pub(crate) fn plans(rng: &mut Rng, n: usize, pool: usize, min: usize, max: usize) -> Vec<Plan> {
    (0..n)
        .map(|i| {
            let (src, dst) = storm_kinds(i);
            let len = rng.range(min as u64, max as u64) as usize;
            let start = rng.below((pool - len) as u64) as usize;
            Plan {
                src,
                dst,
                start,
                len,
            }
        })
        .collect()
}

/// Submits one transfer per plan, tagged with its index; returns the writer and reader jobs
/// (in index order).
pub(crate) fn submit_storm(
    cfg: Config,
    e: &mut Engine,
    plans: &[Plan],
    outcomes: &mut Outcomes,
    what: &str,
    tune_destination: impl Fn(Kind, &OwnedFd, &Peer),
) -> (Vec<TransferId>, Vec<WriterJob>, Vec<ReaderJob>) {
    let tcp = plans
        .iter()
        .map(|p| usize::from(p.src == Kind::Tcp) + usize::from(p.dst == Kind::Tcp))
        .sum();
    let mut pairs = Pairs::new(tcp);
    let mut ids = Vec::with_capacity(plans.len());
    let mut writers = Vec::with_capacity(plans.len());
    let mut readers = Vec::with_capacity(plans.len());
    for (i, p) in plans.iter().enumerate() {
        let (src, w) = pairs.make(p.src, true);
        let (dst, r) = pairs.make(p.dst, false);
        tune_destination(p.dst, &dst, &r);
        let id = e
            .submit(cfg.transfer(src, dst).tag(i as u64))
            .unwrap_or_else(|r| panic!("{what}: #{i}: submit refused: {r}"));
        outcomes.ids.insert(id, i);
        ids.push(id);
        writers.push(WriterJob::new(i, w, p.start, p.len));
        readers.push(ReaderJob::new(i, r, p.start, p.len));
    }
    e.flush()
        .unwrap_or_else(|err| panic!("{what}: flush: {err}"));
    (ids, writers, readers)
}

/// Splits jobs over `threads` helper threads by index.
fn split<T>(jobs: Vec<T>, threads: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, j) in jobs.into_iter().enumerate() {
        out[i % threads].push(j);
    }
    out
}

/// Spawns `threads` writer and `threads` reader threads over the jobs.
#[allow(clippy::type_complexity)]
pub(crate) fn spawn_storm_io(
    writers: Vec<WriterJob>,
    readers: Vec<ReaderJob>,
    threads: usize,
    pool: &Arc<Vec<u8>>,
    release: &Arc<AtomicBool>,
    progress: &Arc<Progress>,
) -> (
    Vec<JoinHandle<Vec<(usize, WriterReport)>>>,
    Vec<JoinHandle<Vec<(usize, ReaderReport)>>>,
) {
    let w = split(writers, threads)
        .into_iter()
        .enumerate()
        .map(|(t, jobs)| {
            spawn_writers(
                &format!("rs-storm-writer-{t}"),
                jobs,
                pool.clone(),
                release.clone(),
                progress.clone(),
            )
        })
        .collect();
    let r = split(readers, threads)
        .into_iter()
        .enumerate()
        .map(|(t, jobs)| {
            spawn_readers(
                &format!("rs-storm-reader-{t}"),
                jobs,
                pool.clone(),
                progress.clone(),
            )
        })
        .collect();
    (w, r)
}
