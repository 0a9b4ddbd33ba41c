//! A TCP proxy on 127.0.0.1 that a test can switch off and on: "AWS unreachable, then
//! back" for an agent whose `aws.endpoint_url` points here, while moto itself (and the
//! state in it) keeps running. Switched off, it cuts open connections and refuses new ones.
//! It also keeps what clients sent (plain HTTP to moto), so a test can tell which AWS
//! calls the agent made.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (up, _) = watch::channel(true);
        let sent: Arc<Mutex<Vec<u8>>> = Arc::default();
        let state = up.clone();
        let log = sent.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut rx = state.subscribe();
                if !*rx.borrow() {
                    drop(client);
                    continue;
                }
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upstream = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match client_read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if let Ok(mut l) = log.lock() {
                                l.extend_from_slice(&buf[..n]);
                            }
                            if server_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = server_write.shutdown().await;
                    };
                    let downstream = async {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                        let _ = client_write.shutdown().await;
                    };
                    tokio::select! {
                        _ = async { tokio::join!(upstream, downstream) } => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Proxy { addr, up, sent })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Down: open connections are cut and new ones closed at once.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// What clients sent since the last call (requests to moto, as text), and forgets it.
    pub fn take_sent(&self) -> String {
        let bytes = self
            .sent
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
