//! The orchestrator process's parts started together — store, engine, HTTP API — and stopped
//! together. Used by `tasker serve` and `tasker demo`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tasker_engine::{Engine, EngineError, EngineHandle, EngineOptions, TemplateRegistry};
use tasker_store::Store;
use tasker_transport::TransportError;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running store + engine + HTTP API.
#[derive(Debug)]
pub(crate) struct Orchestrator {
    engine: EngineHandle,
    store: Arc<dyn Store>,
    http_addr: SocketAddr,
    stop_http: Option<oneshot::Sender<()>>,
    http: JoinHandle<std::io::Result<()>>,
}

impl Orchestrator {
    /// Binds the HTTP listener on `http_addr`, opens the store at `database_url`, starts the
    /// engine (binding its ZeroMQ endpoint) and serves the API. Call inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// One clear message each: the HTTP address is taken or invalid, the database URL is bad or
    /// the database unreachable, the worker endpoint is taken or invalid.
    pub(crate) async fn start(
        options: EngineOptions,
        database_url: &str,
        templates: TemplateRegistry,
        http_addr: &str,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(http_addr)
            .await
            .map_err(|error| {
                let hint = if error.kind() == std::io::ErrorKind::AddrInUse {
                    " (is another tasker serve running? choose another address with --http-addr)"
                } else {
                    ""
                };
                anyhow::anyhow!("cannot listen for HTTP on {http_addr}: {error}{hint}")
            })?;
        let http_addr = listener
            .local_addr()
            .context("reading the HTTP listener's address")?;
        let store = tasker_store::connect(database_url)
            .await
            .context("cannot open the database")?;
        let endpoint = options.endpoint.clone();
        let engine = match Engine::start(options, Arc::clone(&store), templates).await {
            Ok(engine) => engine,
            Err(error) => {
                store.close().await;
                let hint = match &error {
                    EngineError::Transport(TransportError::AddressInUse { .. }) => {
                        " (is another tasker serve running? choose another with --endpoint)"
                    }
                    _ => "",
                };
                anyhow::bail!("cannot start the engine on {endpoint}: {error}{hint}");
            }
        };
        let (stop_http, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(tasker_api::serve(listener, engine.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            engine,
            store,
            http_addr,
            stop_http: Some(stop_http),
            http,
        })
    }

    /// The running engine.
    pub(crate) fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    /// The address the HTTP API listens on (with the real port when port 0 was asked for).
    pub(crate) fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops accepting HTTP requests (letting those in progress finish), shuts the engine down
    /// (releasing its task claims) and closes the store.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        match (&mut self.http).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the HTTP API stopped with an error"),
            Err(error) => tracing::warn!(%error, "the HTTP API task failed"),
        }
        self.engine.shutdown().await;
        self.store.close().await;
    }
}
