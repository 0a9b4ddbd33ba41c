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
    pub fn start() -> Moto {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Moto {
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
        let moto = Moto { child, port };
        moto.wait_ready();
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "moto_server did not listen on port {} within 30s",
            self.port
        );
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
