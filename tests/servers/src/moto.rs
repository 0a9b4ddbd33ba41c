//! A real `moto_server` process on 127.0.0.1 for SSM, KMS, SNS and SQS. The binary comes
//! from `$MOTO_SERVER`, else the project's venv (`tests/setup` creates it); a missing
//! binary fails the test with the command that installs it, never a skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
}

/// Where the venv's moto_server is, relative to this crate (tests/servers).
fn default_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server")
}

pub fn binary() -> PathBuf {
    match std::env::var_os("MOTO_SERVER") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => default_binary(),
    }
}

/// A free loopback port (bound and released; good enough for a test).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Moto {
    /// moto on a free port. The port is picked before moto binds it (Python takes a second
    /// or two to start), so another test's server may take it meanwhile: then moto is
    /// started again on another port.
    pub fn start() -> Moto {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start_on(free_port()) {
                Ok(m) => return m,
                Err(e) => last = e,
            }
        }
        panic!("moto_server did not start on any of 5 free ports: {last}");
    }

    /// moto on exactly `port` (a test that configured the agent with it before moto ran).
    pub fn start_on(port: u16) -> Moto {
        Self::try_start_on(port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on(port: u16) -> Result<Moto, String> {
        let bin = binary();
        assert!(
            bin.exists(),
            "moto_server not found at {}: run `tests/setup` (creates .venv with the pinned \
             moto[server] from tests/requirements.txt) or set MOTO_SERVER",
            bin.display()
        );
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut moto = Moto { child, port };
        moto.wait_ready()?;
        Ok(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Ready when moto itself answers on the port: something else listening there (a
    /// test server that took the port first) or moto exiting (it could not bind) is an
    /// error, not a ready moto.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "moto_server exited ({status}) instead of listening on port {}",
                    self.port
                ));
            }
            match self.identify() {
                Some(true) => return Ok(()),
                Some(false) => {
                    self.stop();
                    return Err(format!("another server answers on port {}", self.port));
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        self.stop();
        Err(format!(
            "moto_server did not listen on port {} within 30s",
            self.port
        ))
    }

    /// `Some(true)`: moto answers; `Some(false)`: something else does; `None`: nothing yet.
    fn identify(&self) -> Option<bool> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /moto-api/data.json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        Some(text.starts_with("HTTP/1.1 200") && text.contains("Werkzeug"))
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
