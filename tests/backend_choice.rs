//! How the engine chooses its backend, proven with real refusals: a child process runs
//! under a seccomp filter that makes `io_uring_setup` fail with `ENOSYS` (a kernel before
//! 5.1) or `EPERM` (Docker's default profile, `kernel.io_uring_disabled=2`); `Auto` must
//! pick the fallback, say why, and move data correctly. Also the probe override and the
//! `RINGSPLICE_BACKEND` variable.

mod common;

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use ringsplice::{BackendPreference, Engine, Error, Length, Transfer};

/// The env var that turns the ignored `child_*` tests on, naming what they should expect.
const CHILD_ENV: &str = "RINGSPLICE_TEST_CHILD_EXPECT";

/// Moves 3 MiB socket→socket and 1 MiB file→socket and checks every byte.
fn move_data(engine: &mut Engine) {
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i ^ (i >> 9)) as u8).collect();
    let (mut w, src) = common::tcp_pair();
    let (dst, mut r) = common::tcp_pair();
    let d = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&d).unwrap());
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    });
    engine.submit(Transfer::new(src, dst).tag(1)).unwrap();

    let path = std::env::temp_dir().join(format!("ringsplice-choice-{}", std::process::id()));
    std::fs::write(&path, &data[..1 << 20]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let (fdst, mut fr) = common::tcp_pair();
    let freader = std::thread::spawn(move || {
        let mut v = Vec::new();
        fr.read_to_end(&mut v).unwrap();
        v
    });
    engine
        .submit(
            Transfer::new(file, fdst)
                .length(Length::Exact(1 << 20))
                .tag(2),
        )
        .unwrap();

    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "hang guard: transfers did not finish"
        );
        engine
            .wait(&mut done, Some(Duration::from_secs(1)))
            .unwrap();
    }
    writer.join().unwrap();
    for c in &done {
        assert!(c.is_ok(), "tag {}: {:?}", c.tag, c.result);
    }
    done.sort_by_key(|c| c.tag);
    assert_eq!(done[0].delivered, data.len() as u64);
    assert_eq!(done[1].delivered, 1 << 20);
    drop(done);
    assert!(reader.join().unwrap() == data);
    assert!(freader.join().unwrap()[..] == data[..1 << 20]);
    std::fs::remove_file(&path).unwrap();
}

/// A seccomp filter: `io_uring_setup` fails with `errno`, every other syscall is allowed.
fn deny_io_uring_setup(errno: u32) -> std::io::Result<()> {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        f(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        f(JEQ_K, 0, 3, AUDIT_ARCH),
        f(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        f(JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | errno),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with integer arguments; the filter program outlives the call (the
    // kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs one ignored `child_*` test of this binary in a child process, with `setup` run
/// before exec, and asserts it ran and passed.
fn run_child(test: &str, expect: &str, env: &[(&str, &str)], errno: Option<u32>) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, expect)
    .env_remove("RINGSPLICE_BACKEND");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(errno) = errno {
        // SAFETY: the closure only makes two prctl calls, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || deny_io_uring_setup(errno));
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child {test} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "child {test} did not run:\n{stdout}\n{stderr}"
    );
    eprintln!("{}", stderr.trim());
}

/// The child side: only runs when the parent set `CHILD_ENV`.
fn child_body() {
    let expect = std::env::var(CHILD_ENV).expect("run by the parent test, not directly");
    let mut engine = Engine::builder().build().unwrap();
    eprintln!(
        "child: backend={:?} reason={}",
        engine.backend(),
        engine.backend_reason()
    );
    assert_eq!(engine.backend(), ringsplice::Backend::Fallback);
    let reason = engine.backend_reason().to_string();
    match expect.as_str() {
        "ENOSYS" | "EPERM" => {
            // The filter is really there: io_uring_setup answers with the errno.
            // SAFETY: io_uring_setup with a null params pointer only reads it after the
            // seccomp check, which refuses first.
            let r =
                unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, std::ptr::null_mut::<u8>()) };
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap();
            let want = if expect == "ENOSYS" {
                libc::ENOSYS
            } else {
                libc::EPERM
            };
            assert_eq!((r, errno), (-1, want));
            assert!(reason.contains("io_uring_setup"), "reason: {reason}");
            // Asking for io_uring explicitly is an error that names the refusal.
            match Engine::builder()
                .backend(BackendPreference::IoUring)
                .build()
            {
                Err(Error::Unsupported(why)) => assert!(why.contains("io_uring_setup"), "{why}"),
                other => panic!("expected Unsupported, got {other:?}"),
            }
        }
        "ENV" => {
            assert!(reason.contains("RINGSPLICE_BACKEND"), "reason: {reason}");
            // The variable refines `Auto` only: a backend named in code is what runs.
            let explicit = Engine::builder()
                .backend(BackendPreference::IoUring)
                .build();
            match (common_io_uring_works(), explicit) {
                (true, Ok(e)) => {
                    assert_eq!(e.backend(), ringsplice::Backend::IoUring);
                    assert!(
                        !e.backend_reason().contains("RINGSPLICE_BACKEND"),
                        "{}",
                        e.backend_reason()
                    );
                }
                (false, Err(Error::Unsupported(_))) => {}
                (works, other) => panic!("io_uring works: {works}; explicit build: {other:?}"),
            }
            let fb = Engine::builder()
                .backend(BackendPreference::Fallback)
                .build()
                .unwrap();
            assert_eq!(fb.backend(), ringsplice::Backend::Fallback);
            // `honor_env(false)` makes `Auto` deaf to it.
            let deaf = Engine::builder().honor_env(false).build().unwrap();
            assert!(
                !deaf.backend_reason().contains("RINGSPLICE_BACKEND"),
                "{}",
                deaf.backend_reason()
            );
        }
        other => panic!("unknown expectation {other}"),
    }
    move_data(&mut engine);
}

/// Whether io_uring with its splice opcode can be had here, asked without the variable.
fn common_io_uring_works() -> bool {
    Engine::builder()
        .honor_env(false)
        .build()
        .is_ok_and(|e| e.backend() == ringsplice::Backend::IoUring)
}

#[test]
#[ignore = "run in a child process by the seccomp and env tests"]
fn child_expect_fallback() {
    child_body();
}

#[test]
fn seccomp_enosys_picks_fallback() {
    run_child(
        "child_expect_fallback",
        "ENOSYS",
        &[],
        Some(libc::ENOSYS as u32),
    );
}

#[test]
fn seccomp_eperm_picks_fallback() {
    run_child(
        "child_expect_fallback",
        "EPERM",
        &[],
        Some(libc::EPERM as u32),
    );
}

#[test]
fn env_var_forces_fallback() {
    run_child(
        "child_expect_fallback",
        "ENV",
        &[("RINGSPLICE_BACKEND", "fallback")],
        None,
    );
}

#[test]
fn probe_without_splice_picks_fallback() {
    // No ring to probe where io_uring is refused (kernel.io_uring_disabled=2, say): there
    // the refusal, not the probe, picks the fallback, which the seccomp tests cover.
    if !common::io_uring_or_skip() {
        return;
    }
    let mut engine = Engine::builder()
        .honor_env(false)
        .pretend_no_splice_opcode(true)
        .build()
        .unwrap();
    assert_eq!(engine.backend(), ringsplice::Backend::Fallback);
    assert!(
        engine.backend_reason().contains("IORING_OP_SPLICE"),
        "{}",
        engine.backend_reason()
    );
    move_data(&mut engine);
    match Engine::builder()
        .honor_env(false)
        .pretend_no_splice_opcode(true)
        .backend(BackendPreference::IoUring)
        .build()
    {
        Err(Error::Unsupported(why)) => assert!(why.contains("IORING_OP_SPLICE"), "{why}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn auto_uses_io_uring_where_it_works() {
    let e = Engine::builder()
        .honor_env(false)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    if e.backend() != ringsplice::Backend::IoUring && !common::io_uring_or_skip() {
        return;
    }
    assert_eq!(
        e.backend(),
        ringsplice::Backend::IoUring,
        "io_uring works here, yet Auto chose the fallback: {}",
        e.backend_reason()
    );
}

#[test]
fn bad_env_value_is_an_error() {
    run_child_bad_env();
}

fn run_child_bad_env() {
    // Checked in-process through the builder: the variable is read at build time, so a
    // child is needed to set it without racing other tests.
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["child_bad_env", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "BAD")
        .env("RINGSPLICE_BACKEND", "turbo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}"
    );
}

#[test]
#[ignore = "run in a child process by bad_env_value_is_an_error"]
fn child_bad_env() {
    assert_eq!(std::env::var(CHILD_ENV).as_deref(), Ok("BAD"));
    match Engine::new() {
        Err(Error::InvalidInput(msg)) => assert!(msg.contains("turbo"), "{msg}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}
