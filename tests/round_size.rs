//! The largest io_uring round the builder accepts: the largest ring (`ring_entries(32768)`,
//! the kernel's `IORING_MAX_ENTRIES`) and the largest `chain_depth` (127 pairs plus a poll:
//! 255 operations, numbered in the 8 index bits of `user_data`). A large file moves through
//! it intact under `Strategy::Chain`; one entry or one pair more is refused at build time
//! instead of failing in the kernel or spilling the index into the slot bits.

mod common;

use common::{Config, Kind, Rng, TempFile};
use ringsplice::{BackendPreference, Engine, Error, Length, Strategy};

const CHAIN: Config = Config {
    backend: BackendPreference::IoUring,
    strategy: Strategy::Chain,
};

#[test]
fn the_deepest_accepted_chain_moves_a_large_file_intact() {
    let _g = common::serial();
    common::run_configs(&[CHAIN], |cfg| {
        // 64 KiB chunks: 127 pairs cover 8 MiB per round, so a 24 MiB file takes rounds of
        // the full depth.
        let b = cfg
            .builder()
            .ring_entries(32768)
            .chain_depth(127)
            .pipe_size(64 << 10)
            .chunk_size(64 << 10);
        let mut e = cfg.engine_from(b);
        let data = Rng::for_test("round size").bytes(24 << 20);
        let file = TempFile::with_contents("round-size", &data);
        let (dst, sink) = common::destination_of(Kind::File, "round-size-dst", b"");
        let t = cfg
            .transfer(file.open_read(), dst)
            .length(Length::Exact(data.len() as u64))
            .source_offset(0)
            .destination_offset(0);
        let id = e.submit(t).expect("submit");
        let c = common::wait_one(&mut e, "deep chain");
        common::assert_ok_completion(&c, id, 0, data.len() as u64, "deep chain");
        drop(c);
        let got = sink.contents("deep chain");
        assert!(got == data, "deep chain: file differs");
    });
}

#[test]
fn a_chain_too_deep_to_number_is_refused() {
    let _g = common::serial();
    for backend in common::BACKENDS {
        match Engine::builder()
            .backend(backend)
            .honor_env(false)
            .ring_entries(4096)
            .chain_depth(128)
            .build()
        {
            Err(Error::InvalidInput(m)) => assert!(m.contains("chain_depth"), "{m}"),
            other => panic!("{backend:?}: chain_depth 128 accepted: {other:?}"),
        }
        match Engine::builder()
            .backend(backend)
            .honor_env(false)
            .ring_entries(32769)
            .build()
        {
            Err(Error::InvalidInput(m)) => assert!(m.contains("ring_entries"), "{m}"),
            other => panic!("{backend:?}: ring_entries 32769 accepted: {other:?}"),
        }
    }
}
