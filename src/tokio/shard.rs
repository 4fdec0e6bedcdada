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

/// What a transfer's future receives: its completion, or why there will be none.
type Reply = io::Result<Completion>;

/// How long a shard that is shutting down waits for the completions of the transfers it
/// cancelled before it drops its engine (which then waits for the kernel on its own).
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

pub(super) enum Cmd {
    Submit {
        ticket: u64,
        transfer: Transfer,
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

fn shut_down() -> io::Error {
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

    /// Hands `transfer` to the shard now; the returned future awaits its completion and,
    /// dropped before that, cancels it.
    pub(super) fn start(&self, transfer: Transfer) -> io::Result<Pending<'_>> {
        let (reply, rx) = oneshot::channel();
        let ticket = self.shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let cmd = Cmd::Submit {
            ticket,
            transfer,
            reply,
        };
        if !self.shared.push(cmd) {
            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
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

/// One transfer in a shard: resolves to its completion; dropped unanswered, cancels it.
pub(super) struct Pending<'a> {
    shared: &'a Shared,
    ticket: u64,
    rx: oneshot::Receiver<Reply>,
    answered: bool,
}

impl Pending<'_> {
    /// Asks the shard to cancel the transfer; its completion still arrives through this
    /// future (with [`Error::Cancelled`], unless it had already finished).
    pub(super) fn cancel(&self) {
        let _sent = self.shared.push(Cmd::Cancel {
            ticket: self.ticket,
        });
    }
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
            // The completion still arrives in the shard, which drops it there: the fds
            // close only after the kernel has given the transfer back.
            self.cancel();
        }
    }
}

/// A transfer not yet in the engine: its ticket, itself, and its future's answer channel.
type Job = (u64, Transfer, oneshot::Sender<Reply>);

/// The shard thread's state: the engine and who waits for what.
struct Driver {
    engine: Engine,
    shared: Arc<Shared>,
    /// Transfers in the engine, by id: the ticket and the future's answer channel.
    waiting: HashMap<TransferId, (u64, oneshot::Sender<Reply>)>,
    /// Tickets of transfers in the engine that have not been cancelled, to their ids.
    ids: HashMap<u64, TransferId>,
    /// Transfers the engine refused as full (`max_transfers`), in order: submitted as
    /// completions make room.
    backlog: VecDeque<Job>,
    done: Vec<Completion>,
}

impl Driver {
    fn new(engine: Engine, shared: Arc<Shared>) -> Driver {
        Driver {
            engine,
            shared,
            waiting: HashMap::new(),
            ids: HashMap::new(),
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
                transfer,
                reply,
            } => {
                let job = (ticket, transfer, reply);
                if !self.backlog.is_empty() {
                    self.backlog.push_back(job);
                } else if let Some(refused) = self.submit(job) {
                    self.backlog.push_back(refused);
                }
            }
            Cmd::Cancel { ticket } => {
                if let Some(id) = self.ids.remove(&ticket) {
                    self.engine.cancel(id);
                } else if let Some(i) = self.backlog.iter().position(|b| b.0 == ticket) {
                    // Never reached the engine: dropping it closes its fds.
                    self.backlog.remove(i);
                    self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                }
                // Otherwise it has been answered already: nothing to do.
            }
            Cmd::Stats { reply } => {
                let _ = reply.send(self.engine.stats());
            }
        }
    }

    /// Submits one transfer; hands it back if the engine is full (`max_transfers`).
    fn submit(&mut self, job: Job) -> Option<Job> {
        let (ticket, t, reply) = job;
        match self.engine.submit(t) {
            Ok(id) => {
                self.waiting.insert(id, (ticket, reply));
                self.ids.insert(ticket, id);
                None
            }
            Err(r) if matches!(r.error, Error::Full { .. }) => Some((ticket, *r.transfer, reply)),
            Err(r) => {
                self.answer(reply, Err(r.into()));
                None
            }
        }
    }

    fn answer(&self, reply: oneshot::Sender<Reply>, r: Reply) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        // A future dropped meanwhile hands the completion back here, and it drops now, on
        // this thread, after the kernel has let go of the transfer.
        let _ = reply.send(r);
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
            self.deliver();
            if n == 0 || self.backlog.is_empty() {
                return Ok(());
            }
        }
    }

    fn deliver(&mut self) {
        let done = std::mem::take(&mut self.done);
        for c in done {
            if let Some((ticket, reply)) = self.waiting.remove(&c.id) {
                self.ids.remove(&ticket);
                self.answer(reply, Ok(c));
            }
        }
    }

    /// The engine failed (`io_uring_enter` or `epoll_wait` errors other than an
    /// interruption): every waiting future gets the error, and the shard closes.
    fn fail(&mut self, e: Error) {
        let msg = format!("ringsplice::tokio shard failed: {e}");
        self.shared.close();
        for (_, (_, reply)) in std::mem::take(&mut self.waiting) {
            self.answer(reply, Err(io::Error::other(msg.clone())));
        }
        self.ids.clear();
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
                Cmd::Submit { reply, .. } => self.answer(reply, Err(shut_down())),
                other => self.command(other),
            }
        }
        for (_, _, reply) in std::mem::take(&mut self.backlog) {
            self.answer(reply, Err(shut_down()));
        }
        let ids: Vec<TransferId> = self.waiting.keys().copied().collect();
        for id in ids {
            self.engine.cancel(id);
        }
        self.ids.clear();
        let _ = self.engine.wait_all(&mut self.done, SHUTDOWN_DRAIN);
        self.deliver();
        let Driver {
            engine,
            waiting,
            shared,
            ..
        } = self;
        drop(engine);
        // Only what the kernel never gave back is left; its future learns the shard is gone.
        for (_, (_, reply)) in waiting {
            shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = reply.send(Err(shut_down()));
        }
    }
}
