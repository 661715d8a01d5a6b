//! The future a send returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::TransportError;

/// The answer to one send: resolves once the socket thread has handed the frame to ZeroMQ (or
/// refused it).
///
/// The frame is queued for the socket thread when `send` returns, so several sends can be started
/// before any is awaited. Dropping this without awaiting it does not cancel the send; it only
/// forgoes learning its outcome (the outcome is still counted in the socket's stats).
#[must_use = "the frame is sent either way; await this to learn whether ZeroMQ accepted it"]
pub struct PendingSend {
    state: State,
}

enum State {
    Waiting(oneshot::Receiver<Result<(), TransportError>>),
    Refused(Option<TransportError>),
}

impl PendingSend {
    pub(crate) fn waiting(receiver: oneshot::Receiver<Result<(), TransportError>>) -> Self {
        Self {
            state: State::Waiting(receiver),
        }
    }

    pub(crate) fn refused(error: TransportError) -> Self {
        Self {
            state: State::Refused(Some(error)),
        }
    }
}

impl Future for PendingSend {
    type Output = Result<(), TransportError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            // The thread dropping the answer means it stopped: the socket is closed.
            State::Waiting(receiver) => Pin::new(receiver)
                .poll(cx)
                .map(|answer| answer.unwrap_or(Err(TransportError::Closed))),
            State::Refused(error) => {
                Poll::Ready(Err(error.take().unwrap_or(TransportError::Closed)))
            }
        }
    }
}

impl fmt::Debug for PendingSend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Waiting(_) => "waiting",
            State::Refused(_) => "refused",
        };
        f.debug_struct("PendingSend")
            .field("state", &state)
            .finish()
    }
}
