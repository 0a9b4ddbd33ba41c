//! What the loopback test servers share: the [`Harness`] each keeps (its address, the
//! settings a test may change while it runs, its log of what it received), [`start`]
//! to bind and serve one, and the accept loop: HTTP/1.1 on a TCP listener, one task per
//! connection, each request answered by a handler.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A test server's address, settings and log. Clones share the settings and the log, so
/// the test's handle and the serving tasks see the same ones.
pub struct Harness<S, L> {
    pub addr: SocketAddr,
    settings: Arc<Mutex<S>>,
    log: Arc<Mutex<L>>,
}

impl<S, L> Clone for Harness<S, L> {
    fn clone(&self) -> Self {
        Harness {
            addr: self.addr,
            settings: self.settings.clone(),
            log: self.log.clone(),
        }
    }
}

/// A lock a panicking test thread poisoned still holds what the others need.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<S: Clone, L> Harness<S, L> {
    /// The settings now (a request is answered with one consistent copy).
    pub fn settings(&self) -> S {
        lock(&self.settings).clone()
    }

    /// Changes the settings for the requests that follow.
    pub fn update(&self, f: impl FnOnce(&mut S)) {
        f(&mut lock(&self.settings));
    }

    /// The log, to read or to add to.
    pub fn log(&self) -> MutexGuard<'_, L> {
        lock(&self.log)
    }
}

/// Binds `addr` (port 0: any free one), makes the server around its harness, and serves
/// every request with `answer`, on the current tokio runtime.
pub async fn start<S, L, T, F, Fut>(
    addr: &str,
    settings: S,
    make: impl FnOnce(Harness<S, L>) -> T,
    answer: F,
) -> std::io::Result<T>
where
    L: Default,
    T: Clone + Send + Sync + 'static,
    F: Fn(T, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let harness = Harness {
        addr: listener.local_addr()?,
        settings: Arc::new(Mutex::new(settings)),
        log: Arc::new(Mutex::new(L::default())),
    };
    let server = make(harness);
    let handle = server.clone();
    spawn(listener, move |req| answer(handle.clone(), req));
    Ok(server)
}

/// Declares a test server around its [`Harness`]: the struct (the harness and any
/// `field: Type` given), the harness's `settings`, `update`, `log` and `addr` on it
/// (Deref), and `bind(addr, settings, fields…)`, which [`start`]s it with its
/// `async fn answer(&self, Request) -> Response`.
macro_rules! test_server {
    ($name:ident, $settings:ty, $log:ty $(, $field:ident: $ty:ty)*) => {
        #[derive(Clone)]
        pub struct $name {
            h: $crate::serve::Harness<$settings, $log>,
            $($field: $ty,)*
        }

        impl std::ops::Deref for $name {
            type Target = $crate::serve::Harness<$settings, $log>;

            fn deref(&self) -> &Self::Target {
                &self.h
            }
        }

        impl $name {
            async fn bind(
                addr: &str,
                settings: $settings,
                $($field: $ty,)*
            ) -> std::io::Result<$name> {
                $crate::serve::start(
                    addr,
                    settings,
                    |h| $name { h, $($field,)* },
                    |s: $name, req| async move { s.answer(req).await },
                )
                .await
            }
        }
    };
}
pub(crate) use test_server;

/// Serves `listener` on the current tokio runtime until the runtime stops.
pub fn spawn<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// A request header as text ("" when absent or not text).
pub fn header<B>(req: &Request<B>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The whole request body (empty when it cannot be read).
pub async fn body(req: Request<Incoming>) -> Bytes {
    use http_body_util::BodyExt;
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

/// A random number for names and tokens (no extra crate for it).
pub fn random() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
