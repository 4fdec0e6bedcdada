//! Shared helpers for ringsplice's integration tests, one module per concept; everything but
//! the namespaces `sys`, `iowq` and `storm` is re-exported here (`common::serial()`, ...).
//!
//! - `serial`: one test at a time per test binary ([`serial()`]), since fd and thread counts
//!   are process-wide; the running test's name ([`test_name`]);
//! - `leaks`: no fd, pipe or thread left behind ([`LeakCheck`]);
//! - `config`: the backend × strategy matrix ([`Config`], [`for_each_config`],
//!   [`run_configs`]), each configuration on its own thread, named in every panic;
//! - `skip`: the one way to skip ([`skip()`], printed past libtest's capture), only where
//!   the io_uring backend is unsupported ([`io_uring_or_skip`], [`engine_or_skip`]) or a
//!   probed feature is missing; [`say`] for notes;
//! - `wait`: waiting for completions and conditions under a hang guard ([`wait_n`],
//!   [`wait_for`], [`pump_until`], [`wait_until`]), checking them
//!   ([`assert_ok_completion`]);
//! - `threads`: helper threads that are always joined ([`spawn_named`], [`join_within`]);
//! - `endpoints`: endpoints of every kind ([`Kind`], [`Peer`], [`stream_pair`],
//!   [`source_of`], [`destination_of`], [`TempFile`]), peers reset or half-closed;
//! - `net`: TCP pairs on 127.0.0.1 ([`tcp_pair`], [`tcp_pairs`], [`Pairs`],
//!   [`tcp_pair_small_buffers`]);
//! - `payload`: a xorshift PRNG ([`Rng`]), a checksum ([`checksum`]), byte comparisons;
//! - `child`: a test rerun alone in a child process ([`run_child`]);
//! - `fd`: socket options, queue sizes, readiness and flags of raw fds;
//! - [`sys`]: the few libc calls the tests need, declared by hand;
//! - [`iowq`]: io_uring's io-wq workers, per kernel;
//! - [`storm`]: many transfers at once, their peers driven by a few non-blocking threads.
//!
//! Every wait has a deadline ([`HANG_GUARD`]) and panics with a clear message when it
//! passes: the deadlines are hang guards, never timing assertions.

// Each test binary (each has its own `mod common;`) uses a different part of these
// helpers: the others are dead code there, and some re-exports unused.
#![allow(dead_code, unused_imports)]

mod child;
mod config;
mod endpoints;
mod fd;
pub(crate) mod iowq;
mod leaks;
mod net;
mod payload;
mod serial;
mod skip;
pub(crate) mod storm;
pub(crate) mod sys;
mod threads;
mod wait;

pub(crate) use child::*;
pub(crate) use config::*;
pub(crate) use endpoints::*;
pub(crate) use fd::*;
pub(crate) use leaks::*;
pub(crate) use net::*;
pub(crate) use payload::*;
pub(crate) use serial::*;
pub(crate) use skip::*;
pub(crate) use threads::*;
pub(crate) use wait::*;
