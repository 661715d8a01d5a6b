//! Shared helpers for the transport's socket tests. Every wait is bounded by a timeout that only
//! guards against a hang; the tests wait on events, never on the clock.

#![allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#![allow(clippy::unwrap_used, reason = "a test should fail loudly on any error")]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tasker_transport::{
    DealerConnection, DealerEvent, DealerEvents, DealerHandle, DealerOptions, FrameError, Inbound,
    RouterEndpoint, RouterEvent, RouterEvents, RouterHandle, RouterOptions,
};

/// Upper bound on any single wait; reaching it means the test failed.
pub const GUARD: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`GUARD`].
pub async fn guarded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A fresh inproc endpoint name, unique within the test process.
pub fn inproc_endpoint() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "inproc://transport-test-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Binds a router on an ephemeral loopback tcp port with default options.
pub fn bind_tcp() -> (RouterHandle, RouterEvents) {
    RouterEndpoint::bind("tcp://127.0.0.1:0", RouterOptions::default()).expect("bind tcp")
}

/// Connects a dealer to `endpoint` with default options.
pub fn connect(endpoint: &str) -> (DealerHandle, DealerEvents) {
    DealerConnection::connect(endpoint, DealerOptions::default()).expect("connect dealer")
}

/// The next router event, whatever it is.
pub async fn next_router_event(events: &mut RouterEvents) -> RouterEvent {
    guarded("a router event", events.recv())
        .await
        .expect("router receiver closed")
}

/// The next well-formed frame the router receives; fails on a rejection.
pub async fn next_inbound(events: &mut RouterEvents) -> Inbound {
    match next_router_event(events).await {
        RouterEvent::Message(inbound) => inbound,
        RouterEvent::Rejected(error) => panic!("unexpected rejection: {error}"),
    }
}

/// The next rejection the router reports; fails on a well-formed frame.
pub async fn next_rejection(events: &mut RouterEvents) -> FrameError {
    match next_router_event(events).await {
        RouterEvent::Rejected(error) => error,
        RouterEvent::Message(inbound) => panic!("unexpected frame: {inbound:?}"),
    }
}

/// The next dealer event that is not a connection event.
pub async fn next_dealer_event(events: &mut DealerEvents) -> DealerEvent {
    loop {
        let event = guarded("a dealer event", events.recv())
            .await
            .expect("dealer receiver closed");
        if !matches!(event, DealerEvent::Connected | DealerEvent::Disconnected) {
            return event;
        }
    }
}

/// The next frame the dealer receives, skipping connection events; fails on a rejection.
pub async fn next_dealer_message(events: &mut DealerEvents) -> Vec<u8> {
    match next_dealer_event(events).await {
        DealerEvent::Message(payload) => payload,
        other => panic!("unexpected dealer event: {other:?}"),
    }
}

/// Sends `payload` from the dealer and returns the router's view of it.
pub async fn dealer_says(
    dealer: &DealerHandle,
    router_events: &mut RouterEvents,
    payload: &[u8],
) -> Inbound {
    guarded("dealer send", dealer.send(payload.to_vec()))
        .await
        .expect("dealer send");
    let inbound = next_inbound(router_events).await;
    assert_eq!(inbound.payload, payload);
    inbound
}

/// A full request/reply exchange; returns the routing id the router saw.
pub async fn round_trip(
    router: &RouterHandle,
    router_events: &mut RouterEvents,
    dealer: &DealerHandle,
    dealer_events: &mut DealerEvents,
) -> tasker_transport::PeerId {
    let inbound = dealer_says(dealer, router_events, b"ping").await;
    guarded("router send", router.send(&inbound.peer, b"pong".to_vec()))
        .await
        .expect("router send");
    assert_eq!(next_dealer_message(dealer_events).await, b"pong");
    inbound.peer
}
