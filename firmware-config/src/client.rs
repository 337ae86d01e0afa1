//! A control-socket client (used by `sluicectl` and the perf runner): one
//! request line, one reply line.

use crate::control::{Command, Request, Response, PROTOCOL_VERSION};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Why a call failed; decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach sluiced at {path}: {reason}. Is sluiced running? (start it with `sluiced --config FILE`, or point --socket / SLUICE_SOCKET at its control socket)")]
    Unreachable { path: String, reason: String },
    #[error("sluiced refused the request: {0}")]
    Refused(String),
    #[error("unexpected reply from sluiced: {0}")]
    Protocol(String),
}

pub struct Client {
    path: PathBuf,
}

impl Client {
    pub fn new(path: PathBuf) -> Client {
        Client { path }
    }

    /// Sends `cmd` and returns the reply's `result`.
    pub fn call(&self, cmd: Command) -> Result<serde_json::Value, CtlError> {
        let unreachable = |e: std::io::Error| CtlError::Unreachable {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let mut s = UnixStream::connect(&self.path).map_err(unreachable)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(unreachable)?;
        let mut line = serde_json::to_string(&Request::new(cmd))
            .map_err(|e| CtlError::Protocol(e.to_string()))?;
        line.push('\n');
        // A peer that closed before taking the whole request (sluiced
        // refusing an unauthorised user) may still have sent its reply.
        let write_failed = match s.write_all(line.as_bytes()) {
            Ok(()) => None,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Some(e),
            Err(e) => return Err(unreachable(e)),
        };
        let mut reply = String::new();
        let read = BufReader::new(&s).read_line(&mut reply);
        if reply.is_empty() {
            if let Some(e) = write_failed {
                return Err(unreachable(e));
            }
        }
        read.map_err(unreachable)?;
        if reply.is_empty() {
            return Err(CtlError::Protocol(
                "connection closed without a reply".into(),
            ));
        }
        let r: Response = serde_json::from_str(&reply)
            .map_err(|e| CtlError::Protocol(format!("{e}: {reply}")))?;
        if r.version != PROTOCOL_VERSION {
            return Err(CtlError::Protocol(format!(
                "sluiced speaks protocol version {}, this sluicectl speaks {PROTOCOL_VERSION}",
                r.version
            )));
        }
        if !r.ok {
            let msg = r
                .error
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .unwrap_or_else(|| "no error message".into());
            return Err(CtlError::Refused(msg));
        }
        r.result
            .ok_or_else(|| CtlError::Protocol("ok reply without a result".into()))
    }
}
