//! Completion: what happened to a transfer.

use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::fan_out::Branch;
use crate::transfer::TransferId;

/// The end of one transfer, returned by [`Engine::poll`](crate::Engine::poll) and
/// [`Engine::wait`](crate::Engine::wait).
///
/// `#[non_exhaustive]`: fields may be added (read them by name; a completion is only ever
/// made by the engine).
#[derive(Debug)]
#[non_exhaustive]
pub struct Completion {
    /// The id `submit` returned.
    pub id: TransferId,
    /// The caller's tag from [`Transfer::tag`](crate::Transfer::tag).
    pub tag: u64,
    /// Exactly how many bytes reached the destination. For a fan-out: the bytes taken from
    /// the source (each destination's own count is in [`branches`](Completion::branches)).
    pub delivered: u64,
    /// Bytes taken from the source that never reached the destination (they were in the
    /// engine's pipe or buffer when the transfer failed or was cancelled). Zero on success.
    /// For a fan-out: the most that any required destination missed.
    pub undelivered: u64,
    /// `Ok` when the whole transfer was delivered, or the error that stopped it.
    pub result: Result<(), Error>,
    /// The source endpoint, handed back.
    pub source: Endpoint,
    /// The destination endpoint, handed back. For a fan-out, a stand-in naming no fd (`-1`):
    /// its destinations are handed back in [`branches`](Completion::branches).
    pub destination: Endpoint,
    /// A fan-out's destinations, in the order they were added, each with exactly what it
    /// got and what stopped it. Empty for an ordinary transfer.
    pub branches: Vec<Branch>,
}

impl Completion {
    /// `true` when the transfer finished without error.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The endpoints back, source first, for reuse in another transfer or to take the
    /// fd out (see [`Endpoint::into_typed`]).
    ///
    /// ```no_run
    /// # fn f(c: ringsplice::Completion) {
    /// let (_file, sock) = c.into_endpoints();
    /// let sock: std::net::TcpStream = sock.into_typed().expect("owned endpoint");
    /// # }
    /// ```
    pub fn into_endpoints(self) -> (Endpoint, Endpoint) {
        (self.source, self.destination)
    }
}
