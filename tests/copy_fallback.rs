//! Pairs that splice refuses (`EINVAL` before any byte moved) fall back to a read/write
//! copy, as Go does, and `Stats::copy_fallbacks` counts them: a `/proc` seq_file as source
//! and an `O_APPEND` file as destination (kernel 6.18 refuses both; checked with
//! `splice(2)` directly), on both backends and strategies. Datagram sockets, which older
//! kernels refused, splice on 6.18; they must arrive intact either way.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;

use ringsplice::{Length, Strategy, Transfer};

#[test]
fn datagram_source_is_copied() {
    let _g = common::serial();
    common::run_configs(
        &common::configs(&[Strategy::Chain, Strategy::Inline]),
        |cfg| {
            let (mut e, s) = (cfg.engine(), cfg.strategy);
            let (tx, rx) = UnixDatagram::pair().unwrap();
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let dst = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (mut r, _) = l.accept().unwrap();
            for i in 0..10u8 {
                tx.send(&[i; 100]).unwrap();
            }
            e.submit(
                Transfer::new(rx, dst)
                    .length(Length::Exact(1000))
                    .strategy(s),
            )
            .unwrap();
            let c = common::wait_one(&mut e, "transfer");
            assert!(c.is_ok(), "{:?} {s:?}: {:?}", e.backend(), c.result);
            assert_eq!(c.delivered, 1000);
            drop(c);
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            let want: Vec<u8> = (0..10u8).flat_map(|i| [i; 100]).collect();
            assert_eq!(v, want);
        },
    );
}

#[test]
fn seq_file_source_is_copied() {
    let want = std::fs::read("/proc/self/cmdline").unwrap();
    let _g = common::serial();
    common::run_configs(
        &common::configs(&[Strategy::Chain, Strategy::Inline]),
        |cfg| {
            let (mut e, s) = (cfg.engine(), cfg.strategy);
            let src = std::fs::File::open("/proc/self/cmdline").unwrap();
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let dst = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (mut r, _) = l.accept().unwrap();
            e.submit(Transfer::new(src, dst).strategy(s)).unwrap();
            let c = common::wait_one(&mut e, "transfer");
            assert!(c.is_ok(), "{:?} {s:?}: {:?}", e.backend(), c.result);
            assert_eq!(c.delivered, want.len() as u64);
            assert_eq!(e.stats().copy_fallbacks, 1, "{:?} {s:?}", e.backend());
            drop(c);
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            assert_eq!(v, want);
        },
    );
}

#[test]
fn append_only_destination_is_copied() {
    let _g = common::serial();
    common::run_configs(
        &common::configs(&[Strategy::Chain, Strategy::Inline]),
        |cfg| {
            let (mut e, s) = (cfg.engine(), cfg.strategy);
            let path = std::env::temp_dir().join(format!(
                "ringsplice-append-{}-{:?}-{s:?}",
                std::process::id(),
                e.backend()
            ));
            std::fs::write(&path, b"head:").unwrap();
            let dst = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut w = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (src, _) = l.accept().unwrap();
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            w.write_all(&data).unwrap();
            drop(w);
            e.submit(Transfer::new(src, dst).strategy(s)).unwrap();
            let c = common::wait_one(&mut e, "transfer");
            assert!(c.is_ok(), "{:?} {s:?}: {:?}", e.backend(), c.result);
            assert_eq!(c.delivered, data.len() as u64);
            assert_eq!(e.stats().copy_fallbacks, 1, "{:?} {s:?}", e.backend());
            drop(c);
            let got = std::fs::read(&path).unwrap();
            assert_eq!(&got[..5], b"head:");
            assert!(
                got[5..] == data[..],
                "{:?} {s:?}: appended bytes differ",
                e.backend()
            );
            std::fs::remove_file(&path).unwrap();
        },
    );
}
