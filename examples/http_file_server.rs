//! A minimal HTTP/1.1 static file server on one engine: `GET` and `HEAD` of the files under a
//! root directory, with keep-alive; every response body is one file → socket transfer.
//!
//! ```text
//! cargo run --release --example http_file_server -- --root /srv/www --listen 127.0.0.1:8080
//! curl -v http://127.0.0.1:8080/index.html
//! RINGSPLICE_BACKEND=fallback cargo run --release --example http_file_server -- --root .
//! ```
//!
//! - One thread, one `poll(2)`: the listener, every connection that waits for input (a
//!   request, or the client's close) or for room to write a response header, and the
//!   engine's fd.
//! - A request is read with plain `recv` into an 8 KiB buffer and parsed there. The response
//!   header is written with `send(MSG_MORE)`, so it leaves in one segment with the start of
//!   the body; then the body goes as one [`Transfer`] from the opened file
//!   (`Length::Exact(file length)`, `source_offset(0)`) to the socket, which the engine
//!   shares ([`Endpoint::shared`]) so the connection is ours again at the completion; the
//!   endpoint the completion hands back is kept for the connection's next response (it
//!   remembers the socket's kind and flags, so the engine does not probe the fd again). While
//!   a body is in flight the connection is not read: pipelined requests wait in the buffer
//!   (or the socket) and are answered in order afterwards.
//! - Keep-alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
//!   `Connection: keep-alive`. A request with a body (`Content-Length` above 0, or
//!   `Transfer-Encoding`) is answered and the connection then closed, as the body is not read.
//! - Paths are percent-decoded and the query dropped; a `..` segment is refused (400), and
//!   files are opened with `openat2(RESOLVE_BENEATH)` under the root, so a symlink cannot lead
//!   out of it either. A directory serves its `index.html`; only regular files are served.
//! - Errors: 400 (malformed request, `..`, HTTP/1.1 without `Host`), 403, 404, 405 (methods
//!   other than GET and HEAD), 431 (request header over 8 KiB), 500. 400 and 431 close the
//!   connection.
//! - Timeouts: 60 s idle between requests, or waiting for room for a header; a body transfer
//!   is cancelled after 60 s without progress (`Transfer::idle_timeout`). A connection being
//!   closed is shut down for writing and drained for up to 5 s, so the end of the last
//!   response is not lost to a reset.
//! - `SIGINT`/`SIGTERM`: stop accepting, close idle connections, let the responses in flight
//!   finish for up to 5 s, then drop the engine (which cancels the rest).
//!
//! Flags: `--root DIR` (default `.`), `--listen ADDR` (default `127.0.0.1:8080`),
//! `--max-conns N` (default 4096), `--copy-max BYTES` (default 0: bodies of at most this
//! many bytes go as [`Strategy::Copy`], a `pread`/`send` on the engine's thread, instead of
//! `Strategy::Auto`'s io-wq splice chain; a cold file then blocks the loop for the disk read),
//! `--verbose` (a line per request).
//!
//! Bodies are sent from the page cache (see the README's Guarantees): a file written in place
//! while it is being sent can reach a client half old, half new. Replace files with `rename`.

use std::collections::HashMap;
use std::error::Error;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringsplice::{Completion, Endpoint, Engine, Length, Strategy, Transfer};

#[path = "support/listen.rs"]
mod listen;
use listen::listen_wide;

#[path = "support/signals.rs"]
mod signals;

#[path = "support/flags.rs"]
mod flags;

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// Largest request head (request line and header fields) accepted.
const MAX_HEAD: usize = 8 << 10;
/// How long a connection may sit idle between requests, or wait for room for a header.
const IDLE: Duration = Duration::from_secs(60);
/// A body transfer is cancelled after this long without a byte delivered.
const BODY_IDLE: Duration = Duration::from_secs(60);
/// How long a closing connection is drained before it is closed anyway.
const LINGER: Duration = Duration::from_secs(5);
/// How long responses in flight may finish after SIGINT/SIGTERM.
const GRACE: Duration = Duration::from_secs(5);

/// A minimal HTTP/1.1 static file server (GET and HEAD, keep-alive) on one engine.
#[derive(argh::FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// address to listen on (default 127.0.0.1:8080)
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 8080))")]
    listen: SocketAddr,
    /// directory whose files are served (default .)
    #[argh(option, default = "PathBuf::from(\".\")")]
    root: PathBuf,
    /// most connections at once (default 4096)
    #[argh(option, default = "4096", from_str_fn(flags::positive))]
    max_conns: usize,
    /// bodies of at most this many bytes go as Strategy::Copy (default 0: none)
    #[argh(option, default = "0")]
    copy_max: u64,
    /// a line per request
    #[argh(switch)]
    verbose: bool,
}

// ---------------------------------------------------------------------------------------
// Plain syscalls on shared fds.

/// `send(2)` without `SIGPIPE`; `more`: the body follows (`MSG_MORE`).
fn send(fd: RawFd, buf: &[u8], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `recv(2)` into `buf`.
fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Opens `rel` (relative, no `..`) under the directory `root`, read-only and without
/// following it out of `root` (`openat2` with `RESOLVE_BENEATH`; on a kernel without
/// `openat2`, 5.6+, a plain `openat`). `O_NONBLOCK` keeps a FIFO from blocking the open;
/// it is cleared again for regular files ([`open_regular`]).
fn open_beneath(root: RawFd, rel: &OsStr) -> io::Result<File> {
    let path = CString::new(rel.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
    // SAFETY: `open_how` is plain integers (non-exhaustive only for future fields), for
    // which all zeroes is a valid value: no mode, no resolve flags.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `path` is a NUL-terminated string and `how` a valid `open_how` of the size
    // passed, both alive for the duration of the call.
    let mut fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    } as RawFd;
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // SAFETY: `path` is a NUL-terminated string alive for the duration of the call.
        fd = unsafe { libc::openat(root, path.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just opened and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// What a path names, once opened.
enum Opened {
    File(File, u64),
    Dir,
    Other,
}

fn open_regular(root: RawFd, rel: &OsStr) -> io::Result<Opened> {
    let file = open_beneath(root, rel)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Ok(Opened::Dir);
    }
    if !meta.is_file() {
        return Ok(Opened::Other);
    }
    // Back to blocking reads for the engine (O_NONBLOCK was only for the open).
    // SAFETY: fcntl on an fd we own, with integer arguments.
    let r = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_SETFL,
            libc::O_RDONLY | libc::O_NOCTTY,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Opened::File(file, meta.len()))
}

// ---------------------------------------------------------------------------------------
// Requests.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

/// A parsed request head.
#[derive(Debug)]
struct Request {
    method: Method,
    /// The decoded path, relative to the root (`""` for `/`).
    path: Vec<u8>,
    keep_alive: bool,
    /// The request has a body, which this server does not read.
    has_body: bool,
}

enum Parsed {
    /// No complete head in the buffer yet.
    Incomplete,
    /// A head of `len` bytes: a request, or the status to refuse it with.
    Head {
        len: usize,
        req: Result<Request, Status>,
    },
}

/// Where the head ends (the byte after its blank line), if it is complete. Lines may end in
/// CRLF or a bare LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

fn parse(buf: &[u8]) -> Parsed {
    // Empty lines before a request line are ignored (RFC 9112 section 2.2).
    let skip = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let Some(end) = head_end(&buf[skip..]) else {
        return Parsed::Incomplete;
    };
    Parsed::Head {
        len: skip + end,
        req: parse_head(&buf[skip..skip + end]),
    }
}

fn parse_head(head: &[u8]) -> Result<Request, Status> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next().ok_or(Status::BadRequest)?;
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Err(Status::BadRequest),
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Status::BadRequest);
    }
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => Method::Other,
    };
    let (mut close, mut keep, mut host, mut has_body) = (false, false, false, false);
    for l in lines {
        if l.is_empty() {
            break;
        }
        if l[0] == b' ' || l[0] == b'\t' {
            return Err(Status::BadRequest); // obsolete line folding
        }
        let colon = l
            .iter()
            .position(|&b| b == b':')
            .ok_or(Status::BadRequest)?;
        let name = &l[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Status::BadRequest);
        }
        let value = l[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            host = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n: u64 = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(Status::BadRequest)?;
            has_body |= n > 0;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            has_body = true;
        }
    }
    if http11 && !host {
        return Err(Status::BadRequest);
    }
    let path = decode_target(target)?;
    Ok(Request {
        method,
        path,
        keep_alive: !close && (http11 || keep),
        has_body,
    })
}

/// A token character (RFC 9110 section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The path of an origin-form target, percent-decoded and made relative; `..` segments and
/// NUL bytes are refused.
fn decode_target(target: &[u8]) -> Result<Vec<u8>, Status> {
    let path = target
        .split(|&b| b == b'?' || b == b'#')
        .next()
        .unwrap_or_default();
    if path.first() != Some(&b'/') {
        return Err(Status::BadRequest);
    }
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            let hex = path.get(i + 1..i + 3).ok_or(Status::BadRequest)?;
            let s = std::str::from_utf8(hex).map_err(|_| Status::BadRequest)?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| Status::BadRequest)?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.contains(&0) || out.split(|&b| b == b'/').any(|seg| seg == b"..") {
        return Err(Status::BadRequest);
    }
    // Relative to the root: no leading slashes, no empty or `.` segments.
    let segs: Vec<&[u8]> = out
        .split(|&b| b == b'/')
        .filter(|s| !s.is_empty() && *s != b".")
        .collect();
    Ok(segs.join(&b'/'))
}

// ---------------------------------------------------------------------------------------
// Responses.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
    ServerError,
}

impl Status {
    fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeadTooLarge => 431,
            Status::ServerError => 500,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeadTooLarge => "Request Header Fields Too Large",
            Status::ServerError => "Internal Server Error",
        }
    }

    /// Whether the connection is closed after this response whatever the request asked.
    fn closes(self) -> bool {
        matches!(self, Status::BadRequest | Status::HeadTooLarge)
    }
}

fn content_type(path: &[u8]) -> &'static str {
    let ext = path.rsplit(|&b| b == b'.').next().unwrap_or_default();
    let ext = ext.to_ascii_lowercase();
    match ext.as_slice() {
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"txt" | b"md" => "text/plain; charset=utf-8",
        b"css" => "text/css",
        b"js" | b"mjs" => "text/javascript",
        b"json" => "application/json",
        b"xml" => "application/xml",
        b"svg" => "image/svg+xml",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"ico" => "image/x-icon",
        b"pdf" => "application/pdf",
        b"wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for seconds since the epoch.
fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The `Date` header's value, formatted once a second.
struct Clock {
    secs: u64,
    text: String,
}

impl Clock {
    fn now(&mut self) -> &str {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if secs != self.secs || self.text.is_empty() {
            self.secs = secs;
            self.text = http_date(secs);
        }
        &self.text
    }
}

fn response_head(status: Status, len: u64, ctype: &str, keep_alive: bool, date: &str) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {} {}\r\nServer: ringsplice-http_file_server\r\nDate: {date}\r\n\
         Content-Type: {ctype}\r\nContent-Length: {len}\r\n",
        status.code(),
        status.reason()
    );
    if status == Status::MethodNotAllowed {
        h.push_str("Allow: GET, HEAD\r\n");
    }
    h.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    h.into_bytes()
}

// ---------------------------------------------------------------------------------------
// Connections.

enum State {
    /// Waiting for (the rest of) a request.
    Reading,
    /// Writing a response head (and an error's short body); then the file, if any.
    Head {
        out: Vec<u8>,
        off: usize,
        body: Option<(File, u64)>,
        close: bool,
    },
    /// The body is a transfer in flight.
    Body { close: bool },
    /// Shut down for writing; reading and discarding until the client closes.
    Closing,
    /// To be closed.
    Dead,
}

struct Conn {
    sock: Arc<OwnedFd>,
    /// The socket as the engine's endpoint, when no transfer holds it: the one the last
    /// completion handed back remembers what the engine learnt about the fd, so the next
    /// response's transfer starts without asking the kernel again.
    endpoint: Option<Endpoint>,
    peer: SocketAddr,
    buf: Box<[u8]>,
    filled: usize,
    /// The client has shut down its side: answer what is buffered, then close.
    eof: bool,
    state: State,
    /// When an idle, blocked or closing connection is given up.
    deadline: Instant,
    /// What the request being answered was, for the log: method, path, status, length.
    log: Option<String>,
}

/// Counters printed on exit.
#[derive(Debug, Default)]
struct Counts {
    accepted: u64,
    refused_full: u64,
    requests: u64,
    responses_ok: u64,
    responses_err: u64,
    body_failures: u64,
    body_bytes: u64,
    closed: u64,
}

struct Server {
    engine: Engine,
    root: File,
    clock: Clock,
    counts: Counts,
    verbose: bool,
    copy_max: u64,
    /// Shutting down: every response closes its connection.
    draining: bool,
    /// Transfers submitted since the engine last ran.
    submitted: bool,
}

impl Server {
    /// Moves a connection as far as it can go without blocking.
    fn advance(&mut self, id: u64, c: &mut Conn) {
        loop {
            match &mut c.state {
                State::Reading => {
                    let (len, req) = match parse(&c.buf[..c.filled]) {
                        Parsed::Head { len, req } => (len, req),
                        Parsed::Incomplete if c.filled == c.buf.len() => {
                            (c.filled, Err(Status::HeadTooLarge))
                        }
                        Parsed::Incomplete => {
                            if c.eof || self.draining {
                                self.begin_close(c);
                            }
                            return;
                        }
                    };
                    c.buf.copy_within(len..c.filled, 0);
                    c.filled -= len;
                    self.counts.requests += 1;
                    self.respond(c, req);
                }
                State::Head {
                    out,
                    off,
                    body,
                    close,
                } => {
                    while *off < out.len() {
                        match send(c.sock.as_raw_fd(), &out[*off..], body.is_some()) {
                            Ok(n) => *off += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                c.deadline = Instant::now() + IDLE;
                                return;
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                if self.verbose {
                                    eprintln!("{}: send: {e}", c.peer);
                                }
                                c.state = State::Dead;
                                return;
                            }
                        }
                    }
                    let close = *close;
                    match body.take() {
                        Some((file, len)) => {
                            let dst = c
                                .endpoint
                                .take()
                                .unwrap_or_else(|| Endpoint::shared(Arc::clone(&c.sock)));
                            let t = Transfer::new(file, dst)
                                .length(Length::Exact(len))
                                .strategy(if len <= self.copy_max {
                                    Strategy::Copy
                                } else {
                                    Strategy::Auto
                                })
                                .source_offset(0)
                                .idle_timeout(BODY_IDLE)
                                .tag(id);
                            match self.engine.submit(t) {
                                Ok(_) => {
                                    self.submitted = true;
                                    c.state = State::Body { close };
                                }
                                Err(r) => {
                                    eprintln!("{}: {r}", c.peer);
                                    c.state = State::Dead;
                                }
                            }
                            return;
                        }
                        None => {
                            self.finish_response(c, close);
                        }
                    }
                }
                State::Body { .. } | State::Dead => return,
                State::Closing => {
                    self.drain_closing(c);
                    return;
                }
            }
        }
    }

    /// After a response: log it, then read the next request or close.
    fn finish_response(&mut self, c: &mut Conn, close: bool) {
        if let Some(line) = c.log.take() {
            println!("{line}");
        }
        if close || self.draining {
            self.begin_close(c);
        } else {
            c.state = State::Reading;
            c.deadline = Instant::now() + IDLE;
        }
    }

    /// Builds the response to a request (or to a refused head) and makes it the state.
    fn respond(&mut self, c: &mut Conn, req: Result<Request, Status>) {
        let (status, keep_alive, head_only, path, body) = match req {
            Err(s) => (s, false, false, Vec::new(), None),
            Ok(r) => {
                let keep = r.keep_alive && !r.has_body && !self.draining;
                let head_only = r.method == Method::Head;
                match r.method {
                    Method::Other => (Status::MethodNotAllowed, keep, false, r.path, None),
                    Method::Get | Method::Head => match self.open(&r.path) {
                        Ok((f, len, path)) => (Status::Ok, keep, head_only, path, Some((f, len))),
                        Err(s) => (s, keep && !s.closes(), head_only, r.path, None),
                    },
                }
            }
        };
        let date = self.clock.now().to_string();
        let (out, body) = match body {
            Some((file, len)) => {
                let head = response_head(status, len, content_type(&path), keep_alive, &date);
                // No transfer for HEAD or an empty file.
                (head, (!head_only && len > 0).then_some((file, len)))
            }
            None => {
                let text = format!("{} {}\n", status.code(), status.reason());
                let mut head = response_head(
                    status,
                    text.len() as u64,
                    "text/plain; charset=utf-8",
                    keep_alive,
                    &date,
                );
                if !head_only {
                    head.extend_from_slice(text.as_bytes());
                }
                (head, None)
            }
        };
        if status == Status::Ok {
            self.counts.responses_ok += 1;
        } else {
            self.counts.responses_err += 1;
        }
        if self.verbose {
            c.log = Some(format!(
                "{} /{} {} {}",
                c.peer,
                String::from_utf8_lossy(&path),
                status.code(),
                body.as_ref().map_or(0, |b| b.1)
            ));
        }
        c.state = State::Head {
            out,
            off: 0,
            body,
            close: !keep_alive,
        };
    }

    /// Opens the file a path names (a directory's `index.html`); the path given back is
    /// the one opened, for the content type.
    fn open(&self, path: &[u8]) -> Result<(File, u64, Vec<u8>), Status> {
        let status_of = |e: io::Error| match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => Status::Forbidden,
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV | libc::ENAMETOOLONG) => {
                Status::NotFound
            }
            _ => Status::ServerError,
        };
        let rel: &[u8] = if path.is_empty() { b"." } else { path };
        let root = self.root.as_raw_fd();
        match open_regular(root, OsStr::from_bytes(rel)).map_err(status_of)? {
            Opened::File(f, len) => Ok((f, len, path.to_vec())),
            Opened::Other => Err(Status::NotFound),
            Opened::Dir => {
                let mut index = path.to_vec();
                if !index.is_empty() {
                    index.push(b'/');
                }
                index.extend_from_slice(b"index.html");
                match open_regular(root, OsStr::from_bytes(&index)).map_err(status_of)? {
                    Opened::File(f, len) => Ok((f, len, index)),
                    _ => Err(Status::NotFound),
                }
            }
        }
    }

    /// Shuts the connection down for writing and drains it until the client closes.
    fn begin_close(&mut self, c: &mut Conn) {
        // SAFETY: shutdown on an fd we hold open; errors (ENOTCONN) change nothing here.
        unsafe { libc::shutdown(c.sock.as_raw_fd(), libc::SHUT_WR) };
        c.state = State::Closing;
        c.deadline = Instant::now() + LINGER;
        self.drain_closing(c);
    }

    fn drain_closing(&mut self, c: &mut Conn) {
        if c.eof {
            c.state = State::Dead;
            return;
        }
        loop {
            match recv(c.sock.as_raw_fd(), &mut c.buf) {
                Ok(0) => {
                    c.state = State::Dead;
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    c.state = State::Dead;
                    return;
                }
            }
        }
    }

    /// Reads what the client sent into the connection's buffer (while it waits for a request).
    fn read_input(&mut self, c: &mut Conn) {
        while c.filled < c.buf.len() {
            match recv(c.sock.as_raw_fd(), &mut c.buf[c.filled..]) {
                Ok(0) => {
                    c.eof = true;
                    return;
                }
                Ok(n) => {
                    let asked = c.buf.len() - c.filled;
                    c.filled += n;
                    c.deadline = Instant::now() + IDLE;
                    if n < asked {
                        // Most likely drained: poll(2) is level-triggered and reports any
                        // more, so no second recv that would only say EAGAIN.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    if self.verbose {
                        eprintln!("{}: recv: {e}", c.peer);
                    }
                    c.state = State::Dead;
                    return;
                }
            }
        }
    }

    /// A body transfer ended.
    fn on_completion(&mut self, conns: &mut HashMap<u64, Conn>, done: Completion) {
        let id = done.tag;
        let Some(c) = conns.get_mut(&id) else {
            return;
        };
        let State::Body { close } = c.state else {
            return;
        };
        self.counts.body_bytes += done.delivered;
        c.endpoint = Some(done.destination);
        match &done.result {
            Ok(()) => {
                self.finish_response(c, close);
                self.advance(id, c); // a pipelined request may be waiting in the buffer
            }
            Err(e) => {
                self.counts.body_failures += 1;
                if self.verbose {
                    eprintln!("{}: body: {e} after {} bytes", c.peer, done.delivered);
                }
                c.log = None;
                c.state = State::Dead;
            }
        }
    }

    /// Runs the engine (after submissions, or when its fd is readable) and handles the
    /// completions, which may submit again (pipelined requests).
    fn run_engine(
        &mut self,
        conns: &mut HashMap<u64, Conn>,
        done: &mut Vec<Completion>,
    ) -> BoxResult<()> {
        loop {
            self.submitted = false;
            self.engine.poll(done)?;
            for c in done.drain(..) {
                self.on_completion(conns, c);
            }
            if !self.submitted {
                return Ok(());
            }
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    conns: &mut HashMap<u64, Conn>,
    next: &mut u64,
    max_conns: usize,
    counts: &mut Counts,
) {
    loop {
        let (sock, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Out of fds, or a connection reset while queued: keep serving the others.
            Err(e) => {
                eprintln!("accept: {e}");
                return;
            }
        };
        counts.accepted += 1;
        if conns.len() >= max_conns {
            counts.refused_full += 1;
            continue; // dropping closes it
        }
        if let Err(e) = sock.set_nonblocking(true).and(sock.set_nodelay(true)) {
            eprintln!("{peer}: {e}");
            continue;
        }
        *next += 1;
        conns.insert(
            *next,
            Conn {
                sock: Arc::new(OwnedFd::from(sock)),
                endpoint: None,
                peer,
                buf: vec![0u8; MAX_HEAD].into_boxed_slice(),
                filled: 0,
                eof: false,
                state: State::Reading,
                deadline: Instant::now() + IDLE,
                log: None,
            },
        );
    }
}

fn main() -> BoxResult<()> {
    let args: Args = argh::from_env();
    signals::handle_signals()?;
    let root =
        File::open(&args.root).map_err(|e| format!("--root {}: {e}", args.root.display()))?;
    if !root.metadata()?.is_dir() {
        return Err(format!("--root {}: not a directory", args.root.display()).into());
    }
    let engine = Engine::builder().max_transfers(args.max_conns).build()?;
    println!(
        "backend: {} ({})",
        engine.backend(),
        engine.backend_reason()
    );
    let listener = listen_wide(args.listen)?;
    listener.set_nonblocking(true)?;
    println!(
        "http_file_server: serving {} on http://{} (Ctrl-C to stop)",
        args.root.display(),
        listener.local_addr()?
    );
    let mut srv = Server {
        engine,
        root,
        clock: Clock {
            secs: 0,
            text: String::new(),
        },
        counts: Counts::default(),
        verbose: args.verbose,
        copy_max: args.copy_max,
        draining: false,
        submitted: false,
    };
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut next = 0u64;
    let mut done = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut ids: Vec<u64> = Vec::new();
    let mut grace_until = None;
    loop {
        if signals::stopping() && !srv.draining {
            srv.draining = true;
            grace_until = Some(Instant::now() + GRACE);
            // Idle connections close now; the others after their response.
            for (&id, c) in conns.iter_mut() {
                if matches!(c.state, State::Reading) {
                    srv.advance(id, c);
                }
            }
        }
        conns.retain(|_, c| {
            let dead = matches!(c.state, State::Dead);
            srv.counts.closed += u64::from(dead);
            !dead
        });
        if let Some(t) = grace_until
            && (conns.is_empty() || Instant::now() >= t)
        {
            break;
        }

        fds.clear();
        ids.clear();
        let accepting = !srv.draining && conns.len() < args.max_conns;
        fds.push(libc::pollfd {
            fd: if accepting { listener.as_raw_fd() } else { -1 },
            events: libc::POLLIN,
            revents: 0,
        });
        fds.push(libc::pollfd {
            fd: srv.engine.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        let mut next_deadline = Instant::now() + Duration::from_millis(500);
        for (&id, c) in &conns {
            let events = match c.state {
                State::Reading | State::Closing => libc::POLLIN,
                State::Head { .. } => libc::POLLOUT,
                State::Body { .. } | State::Dead => continue,
            };
            next_deadline = next_deadline.min(c.deadline);
            fds.push(libc::pollfd {
                fd: c.sock.as_raw_fd(),
                events,
                revents: 0,
            });
            ids.push(id);
        }
        let wait = next_deadline.saturating_duration_since(Instant::now());
        // SAFETY: `fds` holds `fds.len()` valid pollfds for the duration of the call. The
        // timeout (at most 500 ms) bounds how late a signal or a deadline is seen.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                wait.as_millis() as libc::c_int + 1,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            // io_uring task work can interrupt the poll without a signal: retry.
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if fds[0].revents != 0 {
            accept_all(
                &listener,
                &mut conns,
                &mut next,
                args.max_conns,
                &mut srv.counts,
            );
        }
        let now = Instant::now();
        for (pfd, &id) in fds[2..].iter().zip(&ids) {
            let Some(c) = conns.get_mut(&id) else {
                continue;
            };
            if pfd.revents != 0 {
                if matches!(c.state, State::Reading) {
                    srv.read_input(c);
                }
                srv.advance(id, c);
            } else if now >= c.deadline {
                // Idle too long, stuck on a full socket, or done lingering.
                c.state = State::Dead;
            }
        }
        if srv.submitted || fds[1].revents != 0 {
            srv.run_engine(&mut conns, &mut done)?;
        }
    }
    println!(
        "stopping: {} connections open, {} transfers in flight; {:?}",
        conns.len(),
        srv.engine.in_flight(),
        srv.counts
    );
    println!("stats: {:?}", srv.engine.stats());
    // Dropping the engine cancels the transfers still running and waits for the kernel to
    // give back their operations; then the sockets and files close.
    drop(srv);
    drop(conns);
    Ok(())
}
