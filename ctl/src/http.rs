//! The one minimal HTTP/1.0 client of the control process, shared by the
//! HTTP health check ([`crate::health`]) and the server-list client
//! ([`crate::serverlist`]).
//!
//! It is made of small blocks so that each caller keeps its own error
//! texts:
//!
//! * [`get_request`] writes a `GET` request (`HTTP/1.0`, `Host`, the
//!   caller's headers, `Connection: close`);
//! * [`send`] writes it before a deadline;
//! * [`read`] is the one deadline-bounded read loop; it stops at EOF, at a
//!   byte limit, or as soon as a stop condition ([`Until`]) holds: the
//!   status line is complete (a health check needs nothing more) or the
//!   whole response has arrived;
//! * [`parse_status_line`] and [`parse_response`] parse what was read;
//! * [`excerpt`] shows received bytes in an error message.
//!
//! Every function returns an [`Error`] saying what failed; nothing panics
//! on any input.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

/// Bytes asked for by one `read` call.
const CHUNK: usize = 8 * 1024;

/// What went wrong in [`send`] or [`read`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Setting the socket's timeout failed.
    #[error("socket: {0}")]
    Socket(io::Error),
    /// The deadline passed, before or during the operation.
    #[error("timed out")]
    TimedOut,
    /// Writing the request failed.
    #[error("sending the request: {0}")]
    Send(io::Error),
    /// Reading the response failed.
    #[error("reading the response: {0}")]
    Read(io::Error),
    /// [`read`] holds its byte limit and the stop condition is not met.
    #[error("response too big")]
    TooBig,
}

/// Why a status line did not parse ([`parse_status_line`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusLineError {
    /// It does not start with `HTTP/1.x ` (or is not UTF-8).
    NotHttp,
    /// `HTTP/1.x` is not followed by a three-digit status code.
    NoStatusCode,
}

/// When [`read`] may stop before the peer closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The status line is complete (a `\n` has arrived).
    StatusLine,
    /// The whole response has arrived: its headers say
    /// `Content-Length: N` and N body bytes followed them. Other responses
    /// (chunked, or without a length) end at EOF.
    WholeResponse,
}

impl Until {
    /// Whether `received` satisfies the condition.
    pub fn reached(self, received: &[u8]) -> bool {
        match self {
            Until::StatusLine => received.contains(&b'\n'),
            Until::WholeResponse => response_complete(received),
        }
    }
}

/// The instant `timeout` from now, or a very distant one when that does not
/// fit in an [`Instant`].
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Time left until `deadline`; [`Error::TimedOut`] when none is left.
pub(crate) fn left(deadline: Instant) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Error::TimedOut)
    } else {
        Ok(left)
    }
}

/// A read or write that ran out of time (blocking sockets with a timeout
/// report either kind).
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `GET {path} HTTP/1.0` with `Host: {host}`, then `headers` in order, then
/// `Connection: close`.
pub fn get_request(path: &str, host: &str, headers: &[(&str, &str)]) -> String {
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (name, value) in headers {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    request
}

/// Writes `request` on `stream`, finishing before `deadline`.
pub fn send(stream: &mut TcpStream, request: &[u8], deadline: Instant) -> Result<(), Error> {
    let left = left(deadline)?;
    stream
        .set_write_timeout(Some(left))
        .map_err(Error::Socket)?;
    stream.write_all(request).map_err(|e| {
        if is_timeout(&e) {
            Error::TimedOut
        } else {
            Error::Send(e)
        }
    })
}

/// Reads from `stream` into `buf` until `until` is reached or the peer
/// closes the connection (both `Ok`; `buf` may then be empty), until
/// `deadline` ([`Error::TimedOut`]), or until `buf` holds `limit` bytes
/// without `until` being reached ([`Error::TooBig`]); never more than
/// `limit` bytes are read. On an error `buf` keeps what was read, for the
/// caller's message.
pub fn read<S: Read + ?Sized>(
    stream: &mut S,
    set_timeout: impl Fn(&mut S, Duration) -> io::Result<()>,
    buf: &mut Vec<u8>,
    deadline: Instant,
    limit: usize,
    until: Until,
) -> Result<(), Error> {
    let mut chunk = vec![0u8; CHUNK.min(limit.max(1))];
    loop {
        if until.reached(buf) {
            return Ok(());
        }
        if buf.len() >= limit {
            return Err(Error::TooBig);
        }
        let left = left(deadline)?;
        set_timeout(stream, left).map_err(Error::Socket)?;
        let want = chunk.len().min(limit - buf.len());
        match stream.read(chunk.get_mut(..want).unwrap_or_default()) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(Error::TimedOut),
            Err(e) => return Err(Error::Read(e)),
        }
    }
}

/// [`read`] on a TCP stream (its read timeout follows the deadline).
pub fn read_tcp(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    limit: usize,
    until: Until,
) -> Result<(), Error> {
    read(
        stream,
        |s, t| s.set_read_timeout(Some(t)),
        buf,
        deadline,
        limit,
        until,
    )
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`; a
/// trailing `\r` is ignored, the reason phrase may be absent).
pub fn parse_status_line(line: &[u8]) -> Result<u16, StatusLineError> {
    let line = std::str::from_utf8(line)
        .map_err(|_| StatusLineError::NotHttp)?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or_default();
    let minor = version
        .strip_prefix("HTTP/1.")
        .ok_or(StatusLineError::NotHttp)?;
    if minor.len() != 1 || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StatusLineError::NotHttp);
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StatusLineError::NoStatusCode);
    }
    code.parse().map_err(|_| StatusLineError::NoStatusCode)
}

/// At most `max` characters of `bytes` (invalid UTF-8 shown as U+FFFD),
/// followed by `...` when cut, escaped (`\n`, `\"`, ...) so that an error
/// message stays on one line.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(max).collect::<String>();
    if text.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out.escape_debug().to_string()
}

/// Where the headers end (the body's first byte) in a response.
fn body_start(response: &[u8]) -> Option<usize> {
    let crlf = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    let lf = response
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> anyhow::Result<Head> {
    let status_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let status = parse_status_line(status_line).map_err(|e| {
        let shown = String::from_utf8_lossy(status_line);
        let shown = shown.trim_end_matches('\r');
        match e {
            StatusLineError::NotHttp => anyhow!("not an HTTP status line: {shown:?}"),
            StatusLineError::NoStatusCode => anyhow!("no status code in {shown:?}"),
        }
    })?;
    let head = String::from_utf8_lossy(head);
    let mut content_length = None;
    let mut chunked = false;
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| anyhow!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    Ok(Head {
        status,
        content_length,
        chunked,
    })
}

/// Whether a Content-Length response has been read whole (so a server that
/// keeps the connection open does not make us wait for the timeout).
fn response_complete(response: &[u8]) -> bool {
    let Some(start) = body_start(response) else {
        return false;
    };
    match parse_head(response.get(..start).unwrap_or_default()) {
        Ok(Head {
            content_length: Some(length),
            chunked: false,
            ..
        }) => response.len().saturating_sub(start) >= length,
        _ => false,
    }
}

/// A whole response: `(status code, body)`, the body cut to its
/// `Content-Length` or de-chunked (`Transfer-Encoding: chunked`).
pub fn parse_response(response: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    if response.is_empty() {
        bail!("empty response");
    }
    let start = body_start(response).ok_or_else(|| anyhow!("incomplete response headers"))?;
    let head = parse_head(response.get(..start).unwrap_or_default())?;
    let body = response.get(start..).unwrap_or_default();
    let body = if head.chunked {
        dechunk(body)?
    } else if let Some(length) = head.content_length {
        match body.get(..length) {
            Some(body) => body.to_vec(),
            None => bail!("truncated body: got {} of {length} bytes", body.len()),
        }
    } else {
        body.to_vec()
    };
    Ok((head.status, body))
}

/// Decodes a `Transfer-Encoding: chunked` body (trailers are ignored).
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let line = String::from_utf8_lossy(body.get(..line_end).unwrap_or_default());
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        body = body.get(line_end + 2..).unwrap_or_default();
        if size == 0 {
            return Ok(out);
        }
        let data = body.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.extend_from_slice(data);
        body = body
            .get(size..)
            .and_then(|rest| rest.strip_prefix(b"\r\n"))
            .ok_or_else(|| anyhow!("chunk not followed by CRLF"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// A stream handing out scripted reads; `Err(kind)` entries fail.
    struct Script {
        reads: VecDeque<Result<Vec<u8>, io::ErrorKind>>,
        calls: usize,
    }

    impl Script {
        fn new(reads: Vec<Result<&[u8], io::ErrorKind>>) -> Self {
            Script {
                reads: reads.into_iter().map(|r| r.map(<[u8]>::to_vec)).collect(),
                calls: 0,
            }
        }
    }

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            match self.reads.pop_front() {
                None => Ok(0),
                Some(Err(kind)) => Err(io::Error::new(kind, "scripted")),
                Some(Ok(mut data)) => {
                    let n = data.len().min(out.len());
                    out[..n].copy_from_slice(&data[..n]);
                    if n < data.len() {
                        self.reads.push_front(Ok(data.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    fn run(script: &mut Script, limit: usize, until: Until) -> (Result<(), Error>, Vec<u8>) {
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let r = read(script, |_, _| Ok(()), &mut buf, deadline, limit, until);
        (r, buf)
    }

    #[test]
    fn request_writer() {
        assert_eq!(
            get_request("/health", "127.0.0.1", &[("User-Agent", "sluice-health")]),
            "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: sluice-health\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            get_request("/", "h", &[]),
            "GET / HTTP/1.0\r\nHost: h\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn read_stops_at_the_status_line() {
        let mut s = Script::new(vec![
            Ok(b"HTTP/1.1 2"),
            Ok(b"00 OK\r\nServer: x\r\n"),
            Ok(b"never read"),
        ]);
        let (r, buf) = run(&mut s, 8192, Until::StatusLine);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(buf, b"HTTP/1.1 200 OK\r\nServer: x\r\n");
        assert_eq!(s.calls, 2);
    }

    #[test]
    fn read_stops_when_the_content_length_arrived() {
        let mut s = Script::new(vec![
            Ok(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"),
            Ok(b"cd"),
            Ok(b"junk after the body"),
        ]);
        let (r, buf) = run(&mut s, 1 << 20, Until::WholeResponse);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(parse_response(&buf).unwrap(), (200, b"abcd".to_vec()));
        assert_eq!(s.calls, 2);
        // Without a length it reads to EOF, Interrupted reads retried.
        let mut s = Script::new(vec![
            Ok(b"HTTP/1.0 200 OK\r\n\r\nab"),
            Err(io::ErrorKind::Interrupted),
            Ok(b"cd"),
        ]);
        let (r, buf) = run(&mut s, 1 << 20, Until::WholeResponse);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(parse_response(&buf).unwrap(), (200, b"abcd".to_vec()));
    }

    #[test]
    fn read_limits_eof_and_errors() {
        // Exactly `limit` bytes without a newline: too big, and no byte
        // beyond the limit is read.
        let mut s = Script::new(vec![Ok(&[b'x'; 100])]);
        let (r, buf) = run(&mut s, 64, Until::StatusLine);
        assert!(matches!(r, Err(Error::TooBig)), "{r:?}");
        assert_eq!(buf.len(), 64);
        // A newline within the limit is enough.
        let mut line = vec![b'x'; 63];
        line.push(b'\n');
        let mut s = Script::new(vec![Ok(&line)]);
        assert!(run(&mut s, 64, Until::StatusLine).0.is_ok());
        // EOF: Ok with what arrived (possibly nothing).
        let mut s = Script::new(vec![Ok(b"HTTP/1.0 200")]);
        let (r, buf) = run(&mut s, 64, Until::StatusLine);
        assert!(r.is_ok());
        assert_eq!(buf, b"HTTP/1.0 200");
        let (r, buf) = run(&mut Script::new(vec![]), 64, Until::StatusLine);
        assert!(r.is_ok() && buf.is_empty());
        // Timeouts and errors.
        let mut s = Script::new(vec![Ok(b"HT"), Err(io::ErrorKind::WouldBlock)]);
        let (r, buf) = run(&mut s, 64, Until::StatusLine);
        assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
        assert_eq!(buf, b"HT");
        let mut s = Script::new(vec![Err(io::ErrorKind::ConnectionReset)]);
        let (r, _) = run(&mut s, 64, Until::StatusLine);
        assert!(matches!(r, Err(Error::Read(_))), "{r:?}");
        // A failing timeout setter, and a deadline already passed.
        let mut buf = Vec::new();
        let later = Instant::now() + Duration::from_secs(5);
        let r = read(
            &mut Script::new(vec![]),
            |_, _| Err(io::Error::other("no")),
            &mut buf,
            later,
            64,
            Until::StatusLine,
        );
        assert!(matches!(r, Err(Error::Socket(_))), "{r:?}");
        let r = read(
            &mut Script::new(vec![Ok(b"x")]),
            |_, _| Ok(()),
            &mut buf,
            Instant::now(),
            64,
            Until::StatusLine,
        );
        assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    }

    #[test]
    fn status_line_parser() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r"), Ok(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable"),
            Ok(503)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204"), Ok(204));
        assert_eq!(
            parse_status_line(b"HTTP/2 200 OK"),
            Err(StatusLineError::NotHttp)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 20 OK"),
            Err(StatusLineError::NoStatusCode)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1"),
            Err(StatusLineError::NoStatusCode)
        );
        assert_eq!(parse_status_line(b"garbage"), Err(StatusLineError::NotHttp));
        assert_eq!(parse_status_line(b""), Err(StatusLineError::NotHttp));
        assert_eq!(
            parse_status_line(&[0xff, 0xfe]),
            Err(StatusLineError::NotHttp)
        );
    }

    #[test]
    fn excerpts() {
        assert_eq!(excerpt(b"abc", 3), "abc");
        assert_eq!(excerpt(b"abcd", 3), "abc...");
        assert_eq!(excerpt(b"a\"b\r\n", 10), "a\\\"b\\r\\n");
        assert_eq!(excerpt(&[b'a', 0xff], 10), "a\u{fffd}");
        assert_eq!(excerpt(b"", 10), "");
    }

    #[test]
    fn response_parsing() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(parse_response(ok).unwrap(), (200, b"{}".to_vec()));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, b"abcde".to_vec()));
        let short = b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n{}";
        assert!(parse_response(short).is_err());
        assert!(parse_response(b"").is_err());
        let e = parse_response(b"garbage\r\n\r\n").unwrap_err().to_string();
        assert_eq!(e, "not an HTTP status line: \"garbage\"");
        let e = parse_response(b"HTTP/1.1 OK\r\n\r\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "no status code in \"HTTP/1.1 OK\"");
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(!response_complete(b"HTTP/1.0 200 OK\r\n\r\n"));
        assert!(response_complete(
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"
        ));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_response(&bytes);
            let _ = dechunk(&bytes);
            let _ = parse_status_line(&bytes);
            let _ = excerpt(&bytes, 10);
            prop_assert_eq!(Until::StatusLine.reached(&bytes), bytes.contains(&b'\n'));
        }
    }
}
