//! # ringsplice
//!
//! An io_uring zero-copy transfer engine for Linux: move bytes between file descriptors
//! (sockets, pipes, files) with `splice`, many transfers at once on one ring, driven by
//! the caller's own event loop.
//!
//! ```no_run
//! use ringsplice::{Engine, Length, Transfer};
//! use std::net::TcpStream;
//!
//! let mut engine = Engine::new()?;
//! println!("backend: {} ({})", engine.backend(), engine.backend_reason());
//!
//! // A file to a socket: exact length, from an offset.
//! let file = std::fs::File::open("/etc/services")?;
//! let sock = TcpStream::connect("127.0.0.1:9000")?;
//! let id = engine.submit(
//!     Transfer::new(file, sock).length(Length::Exact(1000)).source_offset(0).tag(42),
//! )?;
//!
//! let mut done = Vec::new();
//! while engine.in_flight() > 0 {
//!     engine.wait(&mut done, None)?;
//! }
//! let c = &done[0];
//! assert_eq!((c.id, c.tag), (id, 42));
//! println!("{} bytes delivered: {:?}", c.delivered, c.result);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## How a transfer runs
//! - io_uring backend, [`Strategy::Chain`]: linked `IORING_OP_SPLICE` operations
//!   (`src → pipe → dst`), gated by `IORING_OP_POLL_ADD` for sockets and pipes;
//! - io_uring backend, [`Strategy::Inline`]: `IORING_OP_POLL_ADD` reports readiness and the
//!   engine's thread calls non-blocking `splice(2)`;
//! - [`Strategy::Copy`]: readiness, then non-blocking `read(2)`/`write(2)` through an
//!   engine buffer, no pipe;
//! - [`Strategy::Auto`] (default): chains for regular-file sources, inline otherwise, and a
//!   copy for a known length of at most [`Builder::copy_threshold`] (default 0: never)
//!   between two sockets, counted in [`Stats::copies`];
//! - one side a pipe: one splice, no intermediate pipe; splice refused (`EINVAL` before any
//!   byte moved): a read/write copy, counted in [`Stats::copy_fallbacks`];
//! - a datagram or seqpacket source (any strategy): one whole record at a time, peeked with
//!   `recv(MSG_PEEK | MSG_TRUNC)` and read into a buffer that holds it, never spliced (a
//!   pipe would cut a record that does not fit and the kernel would drop the rest), counted
//!   in [`Stats::record_copies`];
//! - [`Backend::Fallback`]: epoll readiness and inline syscalls, where io_uring or its
//!   splice opcode is unavailable.
//!
//! ## Guarantees
//! A [`Completion`] says exactly how many bytes reached the destination (`delivered`) and
//! how many were taken from the source but never delivered (`undelivered`: they were in
//! the engine's pipe when a destination failed or the transfer was cancelled). A pipe that
//! still holds bytes is closed, never reused. File descriptors stay open until the
//! completion hands them back.
//!
//! Bytes spliced from a file are references to its page cache: a write to the file before
//! they leave the socket can change what is sent.

// Unsafe code is quarantined: `sys` (raw syscalls) and `driver` (the ring's SQEs) hold
// it, each with a module-level `# Safety` section; two audited items elsewhere opt in.
#![deny(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "ringsplice supports Linux only: it is built on splice(2), io_uring and epoll (the \
     fallback needs Linux 2.6.17+ for splice; io_uring needs Linux 5.7+ for IORING_OP_SPLICE)"
);

// Layout (arrows point down only): the public face (engine, builder, transfer, endpoint,
// completion, error, stats, backend) uses the core; the core decides and uses the
// operations and pipes; drivers carry out what the core decided; `sys` knows nothing above.
mod backend;
mod builder;
mod completion;
mod config;
mod core;
#[allow(unsafe_code)]
mod driver;
mod endpoint;
mod engine;
mod error;
mod fan_out;
mod op;
mod stats;
#[allow(unsafe_code)]
mod sys;
/// Tokio integration (feature `tokio`): [`tokio::Splicer`] runs engines on their own threads.
#[cfg(feature = "tokio")]
pub mod tokio;
mod transfer;

pub use backend::{BACKEND_ENV, Backend};
pub use builder::Builder;
pub use completion::Completion;
pub use config::BackendPreference;
pub use endpoint::Endpoint;
pub use engine::Engine;
pub use error::{Error, Op, Rejected, Result};
pub use fan_out::{
    Branch, DEFAULT_LINGER, FanOut, MAX_FAN_OUT, MIN_FAN_OUT, Policy, RejectedFanOut,
};
pub use stats::Stats;
pub use transfer::{Length, Strategy, Transfer, TransferId};

// The README's example is compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
