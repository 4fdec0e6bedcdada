//! A transfer's identity, packed one way for everything: the slot index and the slot's
//! generation make the caller's [`TransferId`], and that id shifted past an operation's
//! index makes io_uring's `user_data` ("token"). The builder checks, before an engine
//! exists, that the slab size and the longest round fit (`check_packing`).

use crate::transfer::TransferId;

/// Bits of a slot index: [`MAX_TRANSFERS`] slots at most.
const INDEX_BITS: u32 = 31;
/// Bits of a slot's generation.
pub(crate) const GENERATION_BITS: u32 = 24;
/// Bits of an operation's place in its io_uring round.
const OP_BITS: u32 = 8;

/// Most transfers one engine may hold: slot indexes have [`INDEX_BITS`] bits.
pub(crate) const MAX_TRANSFERS: usize = 1 << INDEX_BITS;
/// Most operations one io_uring round may hold: their index has [`OP_BITS`] bits.
pub(crate) const MAX_ROUND_OPS: usize = 1 << OP_BITS;

/// Tokens at and above this are the drivers' own (cancels, timers): no transfer's token
/// reaches them, since slot indexes stay below [`MAX_TRANSFERS`].
pub(crate) const RESERVED_TOKENS: u64 = u64::MAX - 15;

/// Checks that `max_transfers` slots and rounds of `round_ops` operations can be packed.
pub(crate) fn check_packing(max_transfers: usize, round_ops: usize) -> Result<(), String> {
    if max_transfers == 0 || max_transfers > MAX_TRANSFERS {
        return Err(format!(
            "max_transfers must be between 1 and {MAX_TRANSFERS}"
        ));
    }
    if round_ops > MAX_ROUND_OPS {
        return Err(format!(
            "an io_uring round of {round_ops} operations cannot be numbered in {OP_BITS} bits \
             (at most {MAX_ROUND_OPS})"
        ));
    }
    Ok(())
}

/// A transfer's identity: its slot and the slot's generation when it was submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Id {
    index: u32,
    generation: u32,
}

impl Id {
    pub(crate) fn new(index: usize, generation: u32) -> Id {
        debug_assert!(index < MAX_TRANSFERS && generation < 1 << GENERATION_BITS);
        Id {
            index: index as u32,
            generation,
        }
    }

    pub(crate) fn generation(self) -> u32 {
        self.generation
    }

    /// The slot index.
    pub(crate) fn index(self) -> usize {
        self.index as usize
    }

    /// The id as the caller sees it: `generation << 32 | index`.
    pub(crate) fn transfer_id(self) -> TransferId {
        TransferId((u64::from(self.generation) << 32) | u64::from(self.index))
    }

    pub(crate) fn from_transfer_id(t: TransferId) -> Id {
        Id {
            index: (t.0 & 0xFFFF_FFFF) as u32,
            generation: (t.0 >> 32) as u32,
        }
    }

    /// The `user_data` of operation `op` of this transfer's round: the transfer id shifted
    /// past the op index, `generation << 40 | index << 8 | op`.
    pub(crate) fn token(self, op: usize) -> u64 {
        debug_assert!(op < MAX_ROUND_OPS, "round op {op} past {MAX_ROUND_OPS}");
        (self.transfer_id().0 << OP_BITS) | op as u64
    }

    /// The id and op index a token was made from.
    pub(crate) fn from_token(token: u64) -> (Id, usize) {
        let op = (token & ((1 << OP_BITS) - 1)) as usize;
        (Id::from_transfer_id(TransferId(token >> OP_BITS)), op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One packing: a token carries the transfer id and the op index, whatever the bits.
    #[test]
    fn tokens_and_transfer_ids_round_trip_at_the_limits() {
        let gens = [0, 1, (1 << GENERATION_BITS) - 1];
        let indexes = [0, 1, MAX_TRANSFERS as u32 - 1];
        for generation in gens {
            for index in indexes {
                let id = Id { index, generation };
                assert_eq!(Id::from_transfer_id(id.transfer_id()), id);
                for op in [0, 1, MAX_ROUND_OPS - 1] {
                    let t = id.token(op);
                    assert!(t < RESERVED_TOKENS, "{t:#x}");
                    assert_eq!(Id::from_token(t), (id, op));
                }
            }
        }
    }

    #[test]
    fn packing_refuses_what_it_cannot_number() {
        assert!(check_packing(MAX_TRANSFERS, MAX_ROUND_OPS).is_ok());
        assert!(check_packing(MAX_TRANSFERS + 1, 1).is_err());
        assert!(check_packing(0, 1).is_err());
        assert!(check_packing(1, MAX_ROUND_OPS + 1).is_err());
    }
}
