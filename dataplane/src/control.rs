//! The control socket: a Unix stream socket (mode 0600) speaking the
//! line-delimited JSON protocol of `firmware_config::control`. Runs on its
//! own threads, never on a worker.

use firmware_config::control::{Command, ErrorCode, Request, Response, PROTOCOL_VERSION};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the control thread waits for a connection before it looks at
/// its stop flag again. It waits in poll(2), so an idle control socket
/// never wakes the CPU: where the main lcore shares a CPU with a worker,
/// each wake-up would preempt the worker.
const ACCEPT_WAIT: Duration = Duration::from_millis(250);

/// Sleeps until `listener` has a connection waiting, or [`ACCEPT_WAIT`].
fn wait_for_connection(listener: &UnixListener) {
    use std::os::fd::AsRawFd;
    let mut fds = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for a descriptor the listener owns, alive
    // for the call.
    let _ = unsafe { libc::poll(&mut fds, 1, ACCEPT_WAIT.as_millis() as libc::c_int) };
}

/// Longest request line accepted.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// Answers commands. Implemented by the daemon.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, cmd: &Command) -> Result<serde_json::Value, String>;
}

/// Parses one request line and produces the reply line's value. A bad
/// request gets an error reply and reaches no handler.
pub fn handle_line(line: &str, handler: &dyn Handler) -> Response {
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Response::error(ErrorCode::BadRequest, format!("request is not JSON: {e}"))
        }
    };
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Response::error(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {v} is not supported; this sluiced speaks version {PROTOCOL_VERSION}"),
            )
        }
        None => {
            return Response::error(
                ErrorCode::BadRequest,
                format!("request has no numeric \"version\" (this sluiced speaks version {PROTOCOL_VERSION})"),
            )
        }
    }
    let req: Request = match Request::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            return Response::error(
                ErrorCode::BadRequest,
                format!("unknown command or bad arguments: {e}"),
            )
        }
    };
    match handler.handle(&req.command) {
        Ok(v) => Response::ok(v),
        Err(e) => Response::error(ErrorCode::Failed, e),
    }
}

/// A bound control socket; the file is removed when this is dropped.
pub struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ControlSocket {
    /// Binds `path` with mode 0600. A stale socket file (nobody answers on
    /// it) is replaced; a live one is an error (another sluiced runs).
    pub fn bind(path: &Path) -> std::io::Result<ControlSocket> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use: is another sluiced running?", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
            listener,
        })
    }

    /// Accepts connections until `stop` is set; each connection gets its
    /// own thread and may send several requests.
    pub fn serve(self, handler: Arc<dyn Handler>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        std::thread::Builder::new()
            .name("sluice-control".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match self.listener.accept() {
                        Ok((stream, _)) => {
                            let h = Arc::clone(&handler);
                            let _ = std::thread::Builder::new()
                                .name("sluice-control-conn".into())
                                .spawn(move || serve_connection(stream, &*h));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            wait_for_connection(&self.listener);
                        }
                        // Out of descriptors and the like: try again later.
                        Err(_) => std::thread::sleep(ACCEPT_WAIT),
                    }
                }
                drop(self);
            })
            .expect("spawning the control thread")
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a peer with user id `peer` may send requests: root, or the user
/// sluiced runs as (`own`). The socket's mode 0600 already keeps others
/// out; this also refuses them if the file's mode was widened.
pub fn authorised(peer: Option<u32>, own: u32) -> bool {
    peer.is_some_and(|uid| uid == 0 || uid == own)
}

/// The user id of the process at the other end of `stream` (SO_PEERCRED).
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a valid
    // ucred; the descriptor is owned by `stream` for the whole call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn serve_connection(stream: UnixStream, handler: &dyn Handler) {
    let _ = stream.set_nonblocking(false);
    // SAFETY: geteuid has no preconditions.
    let own = unsafe { libc::geteuid() };
    if !authorised(peer_uid(&stream), own) {
        // The request is read (never parsed or run) before the refusal is
        // sent, so that a client still writing it gets the reply rather
        // than a closed connection.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut ignored = String::new();
        let _ = BufReader::new(&stream)
            .take(MAX_REQUEST_BYTES + 1)
            .read_line(&mut ignored);
        let reply = Response::error(
            ErrorCode::Unauthorised,
            "this user may not control sluiced (root or the user it runs as only)",
        );
        if let Ok(mut line) = serde_json::to_string(&reply) {
            line.push('\n');
            let mut w = &stream;
            let _ = w.write_all(line.as_bytes());
        }
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let mut limited = (&mut reader).take(MAX_REQUEST_BYTES + 1);
        match limited.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => return,
        }
        let reply = if line.len() as u64 > MAX_REQUEST_BYTES {
            Response::error(
                ErrorCode::BadRequest,
                format!("request longer than {MAX_REQUEST_BYTES} bytes"),
            )
        } else if line.trim().is_empty() {
            continue;
        } else {
            handle_line(line.trim(), handler)
        };
        let mut out = serde_json::to_string(&reply).unwrap_or_else(|_| {
            String::from(r#"{"version":1,"ok":false,"error":{"code":"failed","message":"reply not serialisable"}}"#)
        });
        out.push('\n');
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
        if line.len() as u64 > MAX_REQUEST_BYTES {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counting(AtomicUsize);
    impl Handler for Counting {
        fn handle(&self, cmd: &Command) -> Result<serde_json::Value, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            match cmd {
                Command::Status => Ok(serde_json::json!({"up": true})),
                _ => Err("not here".into()),
            }
        }
    }

    #[test]
    fn bad_requests_reach_no_handler() {
        let h = Counting(AtomicUsize::new(0));
        for line in [
            "not json",
            r#"{"command":"status"}"#,
            r#"{"version":99,"command":"status"}"#,
            r#"{"version":1,"command":"format_disk"}"#,
            r#"{"version":1,"command":"status","force":true}"#,
            r#"[1,2]"#,
        ] {
            let r = handle_line(line, &h);
            assert!(!r.ok, "{line} accepted");
            assert!(r.error.is_some());
        }
        assert_eq!(h.0.load(Ordering::SeqCst), 0);
        let r = handle_line(r#"{"version":99,"command":"status"}"#, &h);
        assert_eq!(r.error.unwrap().code, ErrorCode::UnsupportedVersion);
    }

    #[test]
    fn good_request_is_answered_and_failures_are_reported() {
        let h = Counting(AtomicUsize::new(0));
        let r = handle_line(r#"{"version":1,"command":"status"}"#, &h);
        assert!(r.ok);
        assert_eq!(r.result.unwrap()["up"], true);
        let r = handle_line(r#"{"version":1,"command":"stats"}"#, &h);
        assert_eq!(r.error.unwrap().code, ErrorCode::Failed);
    }

    #[test]
    fn only_root_and_the_owner_are_authorised() {
        assert!(authorised(Some(0), 1000));
        assert!(authorised(Some(1000), 1000));
        assert!(!authorised(Some(1001), 1000));
        assert!(!authorised(None, 0), "unknown peer refused");
    }

    #[test]
    fn socket_round_trip_with_0600_mode() {
        let dir = std::env::temp_dir().join(format!("sluice-ctl-test-{}", std::process::id()));
        let path = dir.join("s.sock");
        let sock = ControlSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let stop = Arc::new(AtomicBool::new(false));
        let t = sock.serve(Arc::new(Counting(AtomicUsize::new(0))), Arc::clone(&stop));
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"{\"version\":1,\"command\":\"status\"}\ngarbage\n")
            .unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut l1 = String::new();
        let mut l2 = String::new();
        r.read_line(&mut l1).unwrap();
        r.read_line(&mut l2).unwrap();
        assert!(l1.contains("\"ok\":true"), "{l1}");
        assert!(l2.contains("bad_request"), "{l2}");
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap();
        assert!(!path.exists(), "socket file removed on shutdown");
        let _ = std::fs::remove_dir_all(dir);
    }
}
