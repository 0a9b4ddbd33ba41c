//! The accept loop and per-connection HTTP/1.1, with the limits that keep one bad client
//! from hurting the others: a bounded number of connections, an 8 KiB request head, a 5 s
//! deadline for the head, a cap on a connection's life, and a bounded drain at shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::{watch, Semaphore};

use super::api::{self, Handled};
use super::peer::Peer;
use super::{
    DRAIN, FIRST_REQUEST_GRACE, HEAD_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECTION_AGE, MAX_READ,
};
use crate::agent::Agent;

pub async fn serve(listener: UnixListener, agent: Arc<Agent>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed on the socket");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                gid: c.gid(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the peer's credentials; closing");
                continue;
            }
        };
        let agent = agent.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection(stream, peer, agent, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit: getting them all back means all answers are out.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown drain; closing them");
    }
}

async fn connection(
    stream: tokio::net::UnixStream,
    peer: Peer,
    agent: Arc<Agent>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Set when the first request head has been read. hyper's graceful shutdown closes a
    // connection it has read nothing from, even when the client's request already sits
    // in the socket buffer: during a restart (upgrade, certificate renewal) that would
    // fail a client that connected a moment before SIGTERM.
    let first = Arc::new(FirstRequest::default());
    let seen = first.clone();
    // A cached token is answered inside the call, as a ready future: no per-request
    // task state, reference count or allocation beyond the answer. Only the waiting
    // requests (a token being exchanged, a reload) get an async block.
    let service = service_fn(move |req| {
        seen.mark();
        match api::handle(&agent, &peer, &req) {
            Handled::Now(answer) => Either::Left(std::future::ready(Ok::<_, Infallible>(answer))),
            Handled::Later(later) => {
                let agent = agent.clone();
                Either::Right(async move { Ok(api::finish(agent, later).await) })
            }
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_READ)
        // A head and a small body in one buffer, one write(2): cheaper than a writev(2)
        // of two pieces for answers this size.
        .writev(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            log_end(r, &peer);
            return;
        }
        _ = shutdown.changed() => {}
        _ = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
    }
    if !first.seen() {
        tokio::select! {
            r = conn.as_mut() => {
                log_end(r, &peer);
                return;
            }
            _ = first.notify.notified() => {}
            _ = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(DRAIN, conn).await;
}

fn log_end(r: Result<(), hyper::Error>, peer: &Peer) {
    if let Err(e) = r {
        tracing::debug!(error = %e, uid = peer.uid, "connection ended with an error");
    }
}

/// Whether a connection has sent a request yet; costs one relaxed load per request
/// after the first.
#[derive(Default)]
struct FirstRequest {
    seen: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl FirstRequest {
    fn mark(&self) {
        use std::sync::atomic::Ordering;
        if !self.seen.load(Ordering::Relaxed) {
            self.seen.store(true, Ordering::Relaxed);
            // A stored permit: a shutdown that starts waiting later returns at once.
            self.notify.notify_one();
        }
    }

    fn seen(&self) -> bool {
        self.seen.load(std::sync::atomic::Ordering::Relaxed)
    }
}
