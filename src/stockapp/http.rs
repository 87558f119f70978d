//! The one HTTP serving loop behind the API service and the schema
//! registry: bind, serve on a task, stop on drop or on `shutdown`.

use std::net::SocketAddr;

use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A router served on its own task. Dropping it stops serving without
/// waiting; [`HttpServer::shutdown`] waits and reports.
#[derive(Debug)]
pub(crate) struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl HttpServer {
    /// Binds `addr` (port 0: any free port) and serves `app` on the current
    /// Tokio runtime.
    pub(crate) async fn serve(addr: SocketAddr, app: Router) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address served.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits until the server has stopped.
    pub(crate) async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            None => Ok(()),
            Some(task) => task
                .await
                .unwrap_or_else(|join| Err(std::io::Error::other(join))),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // Best effort and non-blocking: the serving task ends by itself.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
