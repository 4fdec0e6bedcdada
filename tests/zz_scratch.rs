//! scratch
use ringsplice::*;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn tasks() -> Vec<String> {
    std::fs::read_dir("/proc/self/task").unwrap().map(|e| {
        let p = e.unwrap().path();
        std::fs::read_to_string(p.join("comm")).unwrap().trim().to_string()
    }).collect()
}

#[test]
fn iowq_lifetime() {
    eprintln!("start {:?}", tasks());
    let h = std::thread::current();
    let _ = h;
    {
        let mut e = Engine::builder().backend(BackendPreference::IoUring).honor_env(false).build().unwrap();
        let path = std::env::temp_dir().join("rs-scratch");
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        let r = std::thread::spawn(move || { let mut v = Vec::new(); b.read_to_end(&mut v).unwrap(); v.len() });
        e.submit(Transfer::new(f, a).strategy(Strategy::Chain)).unwrap();
        let mut out = Vec::new();
        while out.is_empty() { e.wait(&mut out, Some(Duration::from_secs(1))).unwrap(); }
        eprintln!("done {:?} {:?}", out[0].result, out[0].delivered);
        drop(out);
        eprintln!("read {}", r.join().unwrap());
        eprintln!("before drop {:?}", tasks());
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(8) {
        eprintln!("{:?} {:?}", t0.elapsed(), tasks());
        std::thread::sleep(Duration::from_millis(1000));
    }
}
