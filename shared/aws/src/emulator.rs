//! Starts a local AWS emulator (moto server, from the project's `.venv`) on a free loopback
//! port, for the tests and the aws-mode bench. The server stops when this handle is dropped,
//! and also when this process dies: it exits once its standard input closes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub struct LocalEmulator {
    endpoint: String,
    calls: PathBuf,
    child: Child,
    _stdin: ChildStdin,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the local AWS emulator: {0}")]
pub struct EmulatorError(String);

impl LocalEmulator {
    /// Starts moto with the interpreter and launcher script found from `workspace`
    /// (`.venv/bin/python`, `scripts/moto_server.py`), or those named by
    /// `BULKLINK_MOTO_PYTHON` / `BULKLINK_MOTO_SCRIPT`.
    pub fn start(workspace: &Path) -> Result<Self, EmulatorError> {
        let python = std::env::var_os("BULKLINK_MOTO_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join(".venv/bin/python"));
        let script = std::env::var_os("BULKLINK_MOTO_SCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("scripts/moto_server.py"));
        if !python.exists() {
            return Err(EmulatorError(format!(
                "{} not found: run scripts/test.sh (it creates .venv with moto) or set BULKLINK_MOTO_PYTHON",
                python.display()
            )));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| EmulatorError(format!("no free port: {e}")))?
            .port();
        let calls = std::env::temp_dir().join(format!("bulklink-moto-calls-{port}.jsonl"));
        let _ = std::fs::remove_file(&calls);
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(port.to_string())
            .env("BULKLINK_MOTO_CALLS", &calls)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| EmulatorError(format!("{}: {e}", python.display())))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| EmulatorError("no stdin pipe".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| EmulatorError("no stdout pipe".into()))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| EmulatorError(format!("reading its output: {e}")))?;
        if line.trim() != "ready" {
            let _ = child.kill();
            return Err(EmulatorError(format!(
                "it printed {line:?} instead of \"ready\" (is moto installed in {}?)",
                python.display()
            )));
        }
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_accepting(port, Duration::from_secs(10))?;
        Ok(LocalEmulator {
            endpoint,
            calls,
            child,
            _stdin: stdin,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The file the emulator logs calls signed with a `rehearsal-…` access key to: one JSON
    /// line `{"key", "action", "resource"}` per IAM action a call needs.
    pub fn calls_log(&self) -> &Path {
        &self.calls
    }
}

fn wait_accepting(port: u16, timeout: Duration) -> Result<(), EmulatorError> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(EmulatorError(format!(
                "port {port} never accepted connections"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Drop for LocalEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
