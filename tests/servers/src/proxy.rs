//! A TCP proxy on 127.0.0.1 that a test can switch off and on: "AWS unreachable, then
//! back" for an agent whose `aws.endpoint_url` points here, while moto itself (and the
//! state in it) keeps running. Switched off, it cuts open connections and refuses new ones.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (up, _) = watch::channel(true);
        let state = up.clone();
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
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Proxy { addr, up })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Down: open connections are cut and new ones closed at once.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}
