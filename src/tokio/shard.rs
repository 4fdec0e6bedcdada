//! One shard: an [`Engine`] created, driven and dropped by one thread of its own, fed
//! through a command queue and woken by an eventfd.
//!
//! Why one thread for the engine's whole life (Linux 6.18 sources, `io_uring/`, and a check
//! on this machine's 6.18 kernel):
//! - An io_uring request belongs to the task that submitted it. Its completion work is
//!   queued with `task_work_add(req->tctx->task, …, ctx->notify_method)`
//!   (`io_req_normal_work_add`, `io_uring/io_uring.c`), `TWA_SIGNAL` unless the ring was set
//!   up with `COOP_TASKRUN`/`DEFER_TASKRUN`: the submitting thread is interrupted to run it.
//!   Checked: an `epoll_wait(2)` on an unrelated fd in the thread that submitted a
//!   `POLL_ADD` returned `EINTR` when that poll fired (`poll(2)` is restarted by the kernel
//!   instead, so the shard's own sleep just goes on). Submitted from whichever tokio worker
//!   runs a task, that work would interrupt tokio's workers.
//! - Requests of a thread that exits are cancelled: `do_exit()` calls
//!   `io_uring_files_cancel()` (`io_uring_cancel_generic()`, `io_uring/cancel.c`), and a
//!   request left armed past that has its task work run by the ring's fallback worker,
//!   which terminates it (`io_should_terminate_tw()`: `PF_EXITING | PF_KTHREAD`). Checked:
//!   a `POLL_ADD` submitted by a thread that had exited completed with `-ECANCELED` when
//!   its fd became readable. A request submitted by a tokio blocking-pool thread that later
//!   exits would fail under a transfer still running.
//! - io-wq workers (the `iou-wrk-*` threads that run blocking splices and cold file reads)
//!   belong to the submitting task too, and so does `IORING_REGISTER_IOWQ_MAX_WORKERS`: the
//!   engine is built on this thread so that bound applies to the workers it will use.
//!
//! So every engine call happens on the shard thread; other threads only push commands
//! (under a mutex) and write the eventfd. `IORING_SETUP_SINGLE_ISSUER` (Linux 6.0), which
//! would make a submission from another thread fail with `EEXIST` instead of misbehaving,
//! is not set: [`Builder`] does not expose it, and this module, which uses only the
//! crate's public API, relies on the structure above instead.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use super::sys;
use crate::{Backend, Builder, Completion, Engine, Error, Stats, Transfer, TransferId};

/// What a group's future receives: each member's completion, in submission order (`None`
/// for a member cancelled before it reached the engine), or why there will be none.
pub(super) type Reply = io::Result<Vec<Option<Completion>>>;

/// How long a shard that is shutting down waits for the completions of the transfers it
/// cancelled before it drops its engine (which then waits for the kernel on its own).
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

pub(super) enum Cmd {
    /// A group of transfers answered together once all have completed: one transfer, or
    /// the two directions of a connection (`cancel_on_failure`: the first to fail cancels
    /// the other, without a round trip through the future).
    Submit {
        ticket: u64,
        transfers: Vec<Transfer>,
        cancel_on_failure: bool,
        reply: oneshot::Sender<Reply>,
    },
    Cancel {
        ticket: u64,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
}

#[derive(Default)]
struct Queue {
    cmds: Vec<Cmd>,
    /// The eventfd has been written since the shard last took the queue: later pushes
    /// need not write it again.
    woken: bool,
    /// The shard is shutting down or gone: pushes are refused.
    closed: bool,
}

/// What a shard's thread and its handles share.
struct Shared {
    queue: Mutex<Queue>,
    wake: File,
    next_ticket: AtomicU64,
    /// Transfers given to this shard whose future has not had its answer: queued, in the
    /// engine, or waiting for room in it.
    in_flight: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves a Vec and two flags, all consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a command and wakes the shard if it may be asleep. `false` if the shard is
    /// closed: the command is dropped (a transfer in it never reached an engine, so that
    /// closes its fds).
    #[must_use]
    fn push(&self, cmd: Cmd) -> bool {
        let mut q = self.lock();
        if q.closed {
            return false;
        }
        q.cmds.push(cmd);
        let wake = !std::mem::replace(&mut q.woken, true);
        drop(q);
        if wake {
            sys::signal(&self.wake);
        }
        true
    }

    /// Takes every queued command; `true` once the shard is closed. `clear`: the eventfd
    /// was seen readable, and is reset first, so a push after this take, which finds
    /// `woken` false, writes it again. (Left alone when it was not seen readable: a push
    /// that wrote it since then only costs one more turn of the loop.)
    fn take(&self, into: &mut Vec<Cmd>, clear: bool) -> bool {
        if clear {
            sys::clear(&self.wake);
        }
        let mut q = self.lock();
        q.woken = false;
        into.append(&mut q.cmds);
        q.closed
    }

    fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.woken = true;
        drop(q);
        sys::signal(&self.wake);
    }
}

pub(super) fn shut_down() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "ringsplice::tokio::Splicer has been shut down",
    )
}

/// A handle on one shard thread.
pub(super) struct Shard {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub(super) backend: Backend,
    pub(super) reason: String,
}

impl Shard {
    /// Starts the thread and builds its engine there; returns once the engine exists.
    pub(super) fn spawn(engine: Builder, name: String) -> crate::Result<Shard> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: sys::eventfd().map_err(|e| Error::Io {
                op: crate::Op::Eventfd,
                fd: -1,
                source: e,
            })?,
            next_ticket: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        });
        let (tx, rx) = mpsc::sync_channel(1);
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || match engine.build() {
                Ok(e) => {
                    let _ = tx.send(Ok((e.backend(), e.backend_reason().to_string())));
                    drop(tx);
                    Driver::new(e, theirs).run();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| Error::InvalidInput(format!("cannot start a shard thread: {e}")))?;
        let built = rx.recv();
        let (backend, reason) = match built {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::InvalidInput(
                    "a shard thread ended before building its engine".into(),
                ));
            }
        };
        Ok(Shard {
            shared,
            thread: Mutex::new(Some(thread)),
            backend,
            reason,
        })
    }

    /// Hands `transfers` to the shard now, as one group; the returned future awaits all
    /// their completions and, dropped before that, cancels them.
    pub(super) fn start(
        &self,
        transfers: Vec<Transfer>,
        cancel_on_failure: bool,
    ) -> io::Result<Pending<'_>> {
        let (reply, rx) = oneshot::channel();
        let ticket = self.shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        let n = transfers.len();
        self.shared.in_flight.fetch_add(n, Ordering::Relaxed);
        let cmd = Cmd::Submit {
            ticket,
            transfers,
            cancel_on_failure,
            reply,
        };
        if !self.shared.push(cmd) {
            self.shared.in_flight.fetch_sub(n, Ordering::Relaxed);
            return Err(shut_down());
        }
        Ok(Pending {
            shared: &self.shared,
            ticket,
            rx,
            answered: false,
        })
    }

    pub(super) async fn stats(&self) -> Option<Stats> {
        let (reply, rx) = oneshot::channel();
        if !self.shared.push(Cmd::Stats { reply }) {
            return None;
        }
        rx.await.ok()
    }

    pub(super) fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Tells the thread to cancel what it runs and exit.
    pub(super) fn close(&self) {
        self.shared.close();
    }

    /// Waits for the thread to exit (after [`close`](Shard::close)).
    pub(super) fn join(&self) {
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            // Joining from the shard thread itself would deadlock; nothing of ours runs
            // there, but a waker could (a foreign executor's), so check.
            if h.thread().id() == std::thread::current().id() {
                return;
            }
            let _ = h.join();
        }
    }
}

/// One group of transfers in a shard: resolves to their completions; dropped unanswered,
/// cancels them.
pub(super) struct Pending<'a> {
    shared: &'a Shared,
    ticket: u64,
    rx: oneshot::Receiver<Reply>,
    answered: bool,
}

impl Future for Pending<'_> {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        if self.answered {
            return Poll::Ready(Err(io::Error::other("transfer already answered")));
        }
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(r) => {
                self.answered = true;
                // The sender went without an answer: the shard's engine failed or the
                // thread ended.
                Poll::Ready(r.unwrap_or_else(|_| Err(shut_down())))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.answered {
            // The completions still arrive in the shard, which drops them there: the fds
            // close only after the kernel has given the transfers back.
            let _sent = self.shared.push(Cmd::Cancel {
                ticket: self.ticket,
            });
        }
    }
}

/// A group's transfers and who waits for them.
struct Group {
    reply: oneshot::Sender<Reply>,
    /// Each member's id while it is in the engine.
    ids: Vec<Option<TransferId>>,
    done: Vec<Option<Completion>>,
    /// Members not yet completed (in the engine or the backlog).
    left: usize,
    cancel_on_failure: bool,
    cancelled: bool,
    /// A submit refused for a reason other than a full engine (the future gets it).
    error: Option<io::Error>,
}

/// A member not yet in the engine: its group's ticket, its index, itself.
type Job = (u64, usize, Transfer);

/// The shard thread's state: the engine and who waits for what.
struct Driver {
    engine: Engine,
    shared: Arc<Shared>,
    groups: HashMap<u64, Group>,
    /// Members in the engine, by id: their group's ticket and their index.
    members: HashMap<TransferId, (u64, usize)>,
    /// Members the engine refused as full (`max_transfers`), in order: submitted as
    /// completions make room.
    backlog: VecDeque<Job>,
    done: Vec<Completion>,
}

impl Driver {
    fn new(engine: Engine, shared: Arc<Shared>) -> Driver {
        Driver {
            engine,
            shared,
            groups: HashMap::new(),
            members: HashMap::new(),
            backlog: VecDeque::new(),
            done: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut cmds = Vec::new();
        let mut woken = true;
        loop {
            let closed = self.shared.take(&mut cmds, woken);
            for cmd in cmds.drain(..) {
                self.command(cmd);
            }
            if closed {
                break;
            }
            if let Err(e) = self.pump() {
                self.fail(e);
                break;
            }
            // Sleep until the engine has progress to make or a command arrives. `poll` left
            // the engine's fd readable if it stopped with work left (its pass bound) or
            // completions queued, so nothing is lost by sleeping on it; `take` set `woken`
            // false under the lock, so a command pushed since has written the eventfd.
            let fds: [BorrowedFd<'_>; 2] = [self.engine.as_fd(), self.shared.wake.as_fd()];
            match sys::poll_readable(fds) {
                Ok([_, wake]) => woken = wake,
                Err(e) => {
                    self.fail(Error::Io {
                        op: crate::Op::Poll,
                        fd: -1,
                        source: e,
                    });
                    break;
                }
            }
        }
        self.shutdown();
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit {
                ticket,
                transfers,
                cancel_on_failure,
                reply,
            } => {
                let n = transfers.len();
                self.groups.insert(
                    ticket,
                    Group {
                        reply,
                        ids: vec![None; n],
                        done: (0..n).map(|_| None).collect(),
                        left: n,
                        cancel_on_failure,
                        cancelled: false,
                        error: None,
                    },
                );
                for (m, t) in transfers.into_iter().enumerate() {
                    let live = self.groups.get(&ticket).is_some_and(|g| !g.cancelled);
                    if !live {
                        // An earlier member's submit failed and cancelled the group: this
                        // one never starts (dropping it closes its fds).
                        if let Some(g) = self.groups.get_mut(&ticket) {
                            g.left -= 1;
                        }
                    } else if !self.backlog.is_empty() {
                        self.backlog.push_back((ticket, m, t));
                    } else if let Some(refused) = self.submit((ticket, m, t)) {
                        self.backlog.push_back(refused);
                    }
                }
                self.finish_if_done(ticket);
            }
            Cmd::Cancel { ticket } => self.cancel(ticket),
            Cmd::Stats { reply } => {
                let _ = reply.send(self.engine.stats());
            }
        }
    }

    /// Cancels every member of a group still running; members still in the backlog never
    /// reach the engine (dropping them closes their fds).
    fn cancel(&mut self, ticket: u64) {
        let Some(g) = self.groups.get_mut(&ticket) else {
            return; // answered already
        };
        if std::mem::replace(&mut g.cancelled, true) {
            return;
        }
        for id in g.ids.iter().flatten() {
            self.engine.cancel(*id);
        }
        let before = self.backlog.len();
        self.backlog.retain(|job| job.0 != ticket);
        g.left -= before - self.backlog.len();
        self.finish_if_done(ticket);
    }

    /// Submits one member; hands it back if the engine is full.
    fn submit(&mut self, job: Job) -> Option<Job> {
        let (ticket, m, t) = job;
        match self.engine.submit(t) {
            Ok(id) => {
                self.members.insert(id, (ticket, m));
                if let Some(g) = self.groups.get_mut(&ticket) {
                    g.ids[m] = Some(id);
                }
                None
            }
            Err(r) if matches!(r.error, Error::Full { .. }) => Some((ticket, m, *r.transfer)),
            Err(r) => {
                if let Some(g) = self.groups.get_mut(&ticket) {
                    g.left -= 1;
                    g.error.get_or_insert(r.into());
                }
                self.cancel(ticket);
                self.finish_if_done(ticket);
                None
            }
        }
    }

    /// Answers a group whose members have all completed.
    fn finish_if_done(&mut self, ticket: u64) {
        if self.groups.get(&ticket).is_none_or(|g| g.left > 0) {
            return;
        }
        let Some(g) = self.groups.remove(&ticket) else {
            return;
        };
        self.shared
            .in_flight
            .fetch_sub(g.ids.len(), Ordering::Relaxed);
        let r = match g.error {
            Some(e) => Err(e),
            None => Ok(g.done),
        };
        // A future dropped meanwhile hands the completions back here, and they drop now,
        // on this thread, after the kernel has let go of the transfers.
        let _ = g.reply.send(r);
    }

    /// Runs the engine until it has nothing more to do without blocking: submits what
    /// waits for room, polls, answers every completion, and goes round again while
    /// completions made room for the backlog.
    fn pump(&mut self) -> crate::Result<()> {
        loop {
            while let Some(job) = self.backlog.pop_front() {
                if let Some(refused) = self.submit(job) {
                    self.backlog.push_front(refused);
                    break;
                }
            }
            let n = self.engine.poll(&mut self.done)?;
            // A failed direction cancels its partner here: that cancel's completion comes
            // from a later `poll` (and the engine's fd is not signalled for it), so poll
            // again rather than sleep.
            let cancelled = self.deliver();
            if !cancelled && (n == 0 || self.backlog.is_empty()) {
                return Ok(());
            }
        }
    }

    /// Answers the groups whose last member completed; `true` if a failure cancelled a
    /// partner.
    fn deliver(&mut self) -> bool {
        let mut cancelled = false;
        for c in std::mem::take(&mut self.done) {
            let Some((ticket, m)) = self.members.remove(&c.id) else {
                continue;
            };
            let Some(g) = self.groups.get_mut(&ticket) else {
                continue;
            };
            g.ids[m] = None;
            g.left -= 1;
            let failed = !c.is_ok();
            g.done[m] = Some(c);
            if failed && g.cancel_on_failure && g.left > 0 {
                self.cancel(ticket);
                cancelled = true;
            }
            self.finish_if_done(ticket);
        }
        cancelled
    }

    /// The engine failed (`io_uring_enter` or `epoll_wait` errors other than an
    /// interruption): every waiting future gets the error, and the shard closes.
    fn fail(&mut self, e: Error) {
        let msg = format!("ringsplice::tokio shard failed: {e}");
        self.shared.close();
        for (_, g) in std::mem::take(&mut self.groups) {
            self.shared
                .in_flight
                .fetch_sub(g.ids.len(), Ordering::Relaxed);
            let _ = g.reply.send(Err(io::Error::other(msg.clone())));
        }
        self.members.clear();
        self.backlog.clear();
    }

    /// Cancels everything, hands out the completions that arrive within
    /// [`SHUTDOWN_DRAIN`], then drops the engine (which waits for the kernel to give back
    /// what is left before closing fds) and lets the thread end.
    fn shutdown(mut self) {
        // Commands pushed before the queue closed and not yet taken (the engine failed):
        // no new transfer starts now, but cancels and stats are still answered.
        let mut cmds = Vec::new();
        self.shared.take(&mut cmds, true);
        for cmd in cmds {
            match cmd {
                Cmd::Submit {
                    transfers, reply, ..
                } => {
                    self.shared
                        .in_flight
                        .fetch_sub(transfers.len(), Ordering::Relaxed);
                    let _ = reply.send(Err(shut_down()));
                }
                other => self.command(other),
            }
        }
        let tickets: Vec<u64> = self.groups.keys().copied().collect();
        for t in tickets {
            self.cancel(t);
        }
        let _ = self.engine.wait_all(&mut self.done, SHUTDOWN_DRAIN);
        let _ = self.deliver();
        let Driver {
            engine,
            groups,
            shared,
            ..
        } = self;
        drop(engine);
        // Only what the kernel never gave back is left; its future learns the shard is gone.
        for (_, g) in groups {
            shared.in_flight.fetch_sub(g.ids.len(), Ordering::Relaxed);
            let _ = g.reply.send(Err(shut_down()));
        }
    }
}
