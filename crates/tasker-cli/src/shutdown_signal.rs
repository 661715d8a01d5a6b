//! Waiting for SIGINT or SIGTERM, for the long-running commands.

use std::future::Future;
use std::io::{self, Write};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

/// A future that completes on the first SIGINT or SIGTERM, saying so on stderr as `WHO: SIGNAL
/// received, shutting down`. Must be called inside a tokio runtime; the signal handlers are
/// installed at once, so a signal arriving before the future is polled is not lost.
///
/// # Errors
///
/// When the signal handlers cannot be installed.
pub(crate) fn shutdown_signal(who: &'static str) -> anyhow::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down");
        let _ = writeln!(io::stderr(), "{who}: {name} received, shutting down");
    })
}
