use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use ringsplice::*;

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

fn run(backend: BackendPreference, strategy: Strategy) {
    let mut e = Engine::builder().backend(backend).honor_env(false).build().unwrap();
    eprintln!("{:?} {}", e.backend(), e.backend_reason());
    let (mut cw, s_in) = pair();
    let (s_out, mut cr) = pair();
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 + i / 1000) as u8).collect();
    let d2 = data.clone();
    let w = std::thread::spawn(move || {
        for c in d2.chunks(70_000) {
            cw.write_all(c).unwrap();
        }
    });
    let r = std::thread::spawn(move || {
        let mut v = Vec::new();
        cr.read_to_end(&mut v).unwrap();
        v
    });
    let id = e.submit(Transfer::new(s_in, s_out).strategy(strategy).tag(9)).unwrap();
    let mut out = Vec::new();
    let t0 = std::time::Instant::now();
    while out.is_empty() {
        e.wait(&mut out, Some(Duration::from_secs(1))).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(20), "hang");
    }
    w.join().unwrap();
    let c = out.pop().unwrap();
    assert_eq!(c.id, id);
    assert!(c.is_ok(), "{:?}", c.result);
    assert_eq!(c.delivered, data.len() as u64);
    drop(c);
    let got = r.join().unwrap();
    assert!(got == data);
    eprintln!("{:?}", e.stats());

    // file -> socket
    let path = std::env::temp_dir().join(format!("rs-smoke-{}", std::process::id()));
    std::fs::write(&path, &data).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    let (s_out, mut cr) = pair();
    let r = std::thread::spawn(move || {
        let mut v = Vec::new();
        cr.read_to_end(&mut v).unwrap();
        v
    });
    e.submit(Transfer::new(f, s_out).strategy(strategy).length(Length::Exact(4_000_000)).source_offset(1000)).unwrap();
    let mut out = Vec::new();
    while out.is_empty() {
        e.wait(&mut out, Some(Duration::from_secs(1))).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(20), "hang");
    }
    let c = out.pop().unwrap();
    assert!(c.is_ok(), "{:?}", c.result);
    assert_eq!(c.delivered, 4_000_000);
    drop(c);
    let got = r.join().unwrap();
    assert!(got[..] == data[1000..4_001_000]);
    std::fs::remove_file(&path).unwrap();
    eprintln!("{:?}", e.stats());
}

#[test]
fn smoke_all() {
    for b in [BackendPreference::IoUring, BackendPreference::Fallback] {
        for s in [Strategy::Auto, Strategy::Chain, Strategy::Inline] {
            eprintln!("== {b:?} {s:?}");
            run(b, s);
        }
    }
}
