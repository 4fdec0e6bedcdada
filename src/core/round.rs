//! The next io_uring round of a chained transfer: which linked operations carry its next
//! steps. Pure; the io_uring driver turns the list into SQEs (op/), linking them in order.
//!
//! - pollable source: `POLL_ADD(src) → SPLICE(src → pipe) =hard=> SPLICE(pipe → dst)`;
//! - regular-file source: up to `chain_depth` pairs `SPLICE(file → pipe) =hard=>
//!   SPLICE(pipe → dst) → …`;
//! - bytes left in the pipe: `POLL_ADD(dst, POLLOUT) → SPLICE(pipe → dst)`;
//! - one side a pipe: `POLL_ADD → SPLICE(src → dst)`.
//!
//! A readiness wait that just fired (`fresh`) is not waited for again.

use crate::op::OpKind;

use super::machine::{Action, Machine, Route};
use super::plan::Plan;

/// Whether a round for `action` starts by waiting for the source to be readable. Such a
/// round leases its pipe only if one is free: with none, it waits for readiness alone, so
/// an idle source holds no pipe.
pub(crate) fn waits_for_source(action: Action, plan: &Plan, fresh: bool) -> bool {
    match action {
        Action::WaitReadable => true,
        Action::Fill { .. } | Action::Direct { .. } => plan.src_pollable() && !fresh,
        _ => false,
    }
}

/// Whether a round for `action` needs the engine's pipe.
pub(crate) fn needs_pipe(action: Action, m: &Machine) -> bool {
    matches!(
        action,
        Action::WaitReadable | Action::Fill { .. } | Action::Direct { .. }
    ) && m.route() != Route::Direct
}

/// The operations of the next round, at most `cap` and at most `depth` fill/drain pairs.
pub(crate) fn ops(
    action: Action,
    m: &Machine,
    plan: &Plan,
    fresh: bool,
    (depth, cap): (usize, usize),
) -> Vec<(OpKind, usize)> {
    let mut ops = Vec::with_capacity(1 + 2 * depth);
    match action {
        Action::Drain { len } => {
            // Bytes left in the pipe after a short drain: the destination was full.
            if plan.dst_pollable() && !fresh {
                ops.push((OpKind::PollOut, 0));
            }
            ops.push((OpKind::Drain, len));
        }
        Action::WaitWritable => {
            ops.push((OpKind::PollOut, 0));
            match m.route() {
                Route::Direct => ops.push((OpKind::Direct, m.next_len())),
                _ => ops.push((OpKind::Drain, m.staged() as usize)),
            }
        }
        Action::WaitReadable | Action::Direct { .. } | Action::Fill { .. } => {
            if waits_for_source(action, plan, fresh) {
                ops.push((OpKind::PollIn, 0));
            }
            if m.route() == Route::Direct {
                ops.push((OpKind::Direct, m.next_len()));
            } else {
                let pairs = if plan.src_pollable() { 1 } else { depth };
                let room = (cap - ops.len()) / 2;
                push_pairs(&mut ops, m, pairs.min(room).max(1));
            }
        }
        Action::Finish => {}
    }
    ops.truncate(cap);
    ops
}

/// Fill/drain pairs of a chunk each, until the transfer's length runs out.
fn push_pairs(ops: &mut Vec<(OpKind, usize)>, m: &Machine, pairs: usize) {
    let mut left = m.remaining();
    let chunk = m.next_len();
    for _ in 0..pairs {
        let len = match left {
            Some(0) => break,
            Some(r) => (r as usize).min(chunk),
            None => chunk,
        };
        ops.push((OpKind::Fill, len));
        ops.push((OpKind::Drain, len));
        if let Some(r) = &mut left {
            *r -= len as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::{Mode, Via};

    fn plan(src_file: bool) -> Plan {
        let mut p = Plan::failed(3, 4);
        p.src_file = src_file;
        p.mode = Mode::Chain;
        p.via = Via::Splice;
        p
    }

    #[test]
    fn a_file_round_holds_depth_pairs_within_the_cap_and_the_length() {
        let m = Machine::new(Route::Pipe, Some(10 * 100), None, None, 100, (3, 4));
        let fill = m.next();
        let ops = ops(fill, &m, &plan(true), false, (4, 256));
        assert_eq!(ops.len(), 8);
        assert!(ops.iter().all(|&(_, l)| l == 100));
        let ops = super::ops(fill, &m, &plan(true), false, (200, 256));
        assert_eq!(ops.len(), 20, "the length ends the round first");
        let m = Machine::new(Route::Pipe, None, None, None, 100, (3, 4));
        let ops = super::ops(fill, &m, &plan(true), false, (200, 256));
        assert_eq!(ops.len(), 256, "the cap ends it");
    }

    #[test]
    fn a_socket_round_waits_first_unless_readiness_just_fired() {
        let m = Machine::new(Route::Pipe, None, None, None, 100, (3, 4));
        let fill = m.next();
        let waited = ops(fill, &m, &plan(false), false, (4, 256));
        assert_eq!(waited[0], (OpKind::PollIn, 0));
        assert_eq!(&waited[1..], &[(OpKind::Fill, 100), (OpKind::Drain, 100)]);
        let fresh = ops(fill, &m, &plan(false), true, (4, 256));
        assert_eq!(fresh, vec![(OpKind::Fill, 100), (OpKind::Drain, 100)]);
    }
}
