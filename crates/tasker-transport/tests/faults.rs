//! Bad frames, absent peers, full queues, bad endpoints: each is reported clearly, and the
//! connection keeps working afterwards.

#![allow(clippy::unwrap_used, reason = "a test should fail loudly on any error")]

mod support;

use std::time::Duration;

use support::*;
use tasker_transport::{
    DealerConnection, DealerEvent, DealerOptions, FrameErrorKind, FrameLimits, PeerId,
    RouterEndpoint, RouterOptions, TransportError,
};

/// A raw libzmq DEALER, as a misbehaving or foreign worker would be.
fn raw_dealer(endpoint: &str) -> zmq::Socket {
    let socket = zmq::Context::new().socket(zmq::DEALER).unwrap();
    socket.set_linger(0).unwrap();
    socket.connect(endpoint).unwrap();
    socket
}

fn small_frames(max_frame_bytes: usize) -> FrameLimits {
    FrameLimits {
        max_frame_bytes,
        ..FrameLimits::default()
    }
}

#[tokio::test]
async fn sending_to_an_unknown_peer_is_unreachable() {
    let (router, _router_events) = bind_tcp();
    let stranger = PeerId::from_bytes(b"nobody");
    let result = guarded("send", router.send(&stranger, b"hello?".to_vec())).await;
    match result {
        Err(TransportError::PeerUnreachable { peer }) => assert_eq!(peer, stranger),
        other => panic!("expected PeerUnreachable, got {other:?}"),
    }
    let stats = router.stats();
    assert_eq!(stats.send_failed_unreachable, 1);
    assert_eq!(stats.frames_out, 0);
}

#[tokio::test]
async fn an_oversized_frame_is_reported_and_the_connection_keeps_working() {
    let options = RouterOptions {
        limits: small_frames(1024),
        ..RouterOptions::default()
    };
    let (router, mut router_events) = RouterEndpoint::bind("tcp://127.0.0.1:0", options).unwrap();
    // The worker's own limit is larger, so the frame leaves it and the router has to judge.
    let (dealer, mut dealer_events) = connect(router.endpoint());

    guarded("send", dealer.send(vec![7; 2000])).await.unwrap();
    let rejection = next_rejection(&mut router_events).await;
    assert_eq!(
        rejection.kind,
        FrameErrorKind::TooLarge {
            size: 2000,
            max: 1024
        }
    );
    assert_eq!(router.stats().rejected_too_large, 1);
    assert_eq!(router.stats().frames_in, 0);

    // The same peer is still connected and can be answered (e.g. with a protocol error).
    guarded("send", router.send(&rejection.peer, b"too large".to_vec()))
        .await
        .unwrap();
    assert_eq!(next_dealer_message(&mut dealer_events).await, b"too large");
    let peer = dealer_says(&dealer, &mut router_events, &[1; 1024])
        .await
        .peer;
    assert_eq!(peer, rejection.peer);
}

#[tokio::test]
async fn a_frame_above_the_hard_limit_costs_the_peer_its_connection_only() {
    let options = RouterOptions {
        limits: FrameLimits {
            max_frame_bytes: 1024,
            hard_max_frame_bytes: Some(4096),
            ..FrameLimits::default()
        },
        ..RouterOptions::default()
    };
    let (router, mut router_events) = RouterEndpoint::bind("tcp://127.0.0.1:0", options).unwrap();
    let (dealer, mut dealer_events) = connect(router.endpoint());
    assert_eq!(
        guarded("connected", dealer_events.recv()).await,
        Some(DealerEvent::Connected)
    );

    guarded("send", dealer.send(vec![7; 5000])).await.unwrap();
    // ZeroMQ drops the connection without a word to the router; the worker sees it and
    // reconnects by itself.
    assert_eq!(
        guarded("disconnected", dealer_events.recv()).await,
        Some(DealerEvent::Disconnected)
    );
    assert_eq!(
        guarded("reconnected", dealer_events.recv()).await,
        Some(DealerEvent::Connected)
    );
    dealer_says(&dealer, &mut router_events, b"still here").await;
    assert_eq!(router.stats().rejected_too_large, 0);
}

#[tokio::test]
async fn a_multipart_message_is_reported_and_the_connection_keeps_working() {
    let (router, mut router_events) = bind_tcp();
    let raw = raw_dealer(router.endpoint());
    raw.send_multipart([&b"one"[..], b"two", b"three"], 0)
        .unwrap();

    let rejection = next_rejection(&mut router_events).await;
    assert_eq!(rejection.kind, FrameErrorKind::Multipart { frames: 3 });
    assert_eq!(router.stats().rejected_multipart, 1);

    raw.send(&b"single"[..], 0).unwrap();
    let inbound = next_inbound(&mut router_events).await;
    assert_eq!(inbound.payload, b"single");
    assert_eq!(inbound.peer, rejection.peer);

    guarded("send", router.send(&inbound.peer, b"reply".to_vec()))
        .await
        .unwrap();
    let reply = tokio::task::spawn_blocking(move || raw.recv_multipart(0).unwrap())
        .await
        .unwrap();
    assert_eq!(reply, vec![b"reply".to_vec()]);
}

#[tokio::test]
async fn an_empty_frame_is_reported() {
    let (router, mut router_events) = bind_tcp();
    let raw = raw_dealer(router.endpoint());
    raw.send(&b""[..], 0).unwrap();
    raw.send(&b"after"[..], 0).unwrap();

    assert_eq!(
        next_rejection(&mut router_events).await.kind,
        FrameErrorKind::Empty
    );
    assert_eq!(next_inbound(&mut router_events).await.payload, b"after");
    assert_eq!(router.stats().rejected_empty, 1);
}

#[tokio::test]
async fn the_dealer_rejects_bad_frames_from_the_orchestrator_side_too() {
    // A raw ROUTER stands in for a misbehaving orchestrator.
    let raw = zmq::Context::new().socket(zmq::ROUTER).unwrap();
    raw.set_linger(0).unwrap();
    raw.bind("tcp://127.0.0.1:0").unwrap();
    let endpoint = raw.get_last_endpoint().unwrap().unwrap();
    let options = DealerOptions {
        limits: small_frames(16),
        ..DealerOptions::default()
    };
    let (dealer, mut dealer_events) = DealerConnection::connect(&endpoint, options).unwrap();
    guarded("send", dealer.send(b"hello".to_vec()))
        .await
        .unwrap();
    let raw = tokio::task::spawn_blocking(move || {
        let hello = raw.recv_multipart(0).unwrap();
        let id = hello[0].clone();
        raw.send_multipart([&id[..], b"a", b"b"], 0).unwrap();
        raw.send_multipart([&id[..], &[9_u8; 17][..]], 0).unwrap();
        raw.send_multipart([&id[..], b""], 0).unwrap();
        raw.send_multipart([&id[..], b"fine"], 0).unwrap();
        raw
    })
    .await
    .unwrap();

    assert_eq!(
        next_dealer_event(&mut dealer_events).await,
        DealerEvent::Rejected(FrameErrorKind::Multipart { frames: 2 })
    );
    assert_eq!(
        next_dealer_event(&mut dealer_events).await,
        DealerEvent::Rejected(FrameErrorKind::TooLarge { size: 17, max: 16 })
    );
    assert_eq!(
        next_dealer_event(&mut dealer_events).await,
        DealerEvent::Rejected(FrameErrorKind::Empty)
    );
    assert_eq!(next_dealer_message(&mut dealer_events).await, b"fine");
    let stats = dealer.stats();
    assert_eq!(
        (
            stats.rejected_multipart,
            stats.rejected_too_large,
            stats.rejected_empty,
            stats.frames_in
        ),
        (1, 1, 1, 1)
    );
    drop(raw);
}

#[tokio::test]
async fn frames_the_peer_would_reject_are_refused_before_sending() {
    let options = RouterOptions {
        limits: small_frames(8),
        ..RouterOptions::default()
    };
    let (router, _events) = RouterEndpoint::bind(&inproc_endpoint(), options).unwrap();
    let peer = PeerId::from_bytes(b"anyone");
    assert!(matches!(
        router.send(&peer, vec![0; 9]).await,
        Err(TransportError::FrameTooLarge { size: 9, max: 8 })
    ));
    assert!(matches!(
        router.send(&peer, Vec::new()).await,
        Err(TransportError::EmptyFrame)
    ));

    let (dealer, _dealer_events) = DealerConnection::connect(
        router.endpoint(),
        DealerOptions {
            limits: small_frames(8),
            ..DealerOptions::default()
        },
    )
    .unwrap();
    assert!(matches!(
        dealer.send(vec![0; 9]).await,
        Err(TransportError::FrameTooLarge { size: 9, max: 8 })
    ));
    assert_eq!(router.stats().send_failed_invalid_frame, 2);
    assert_eq!(dealer.stats().send_failed_invalid_frame, 1);
}

#[tokio::test]
async fn sending_to_a_dealer_that_went_away_eventually_fails() {
    let (router, mut router_events) = bind_tcp();
    let (dealer, _dealer_events) = connect(router.endpoint());
    let peer = dealer_says(&dealer, &mut router_events, b"hello")
        .await
        .peer;
    assert!(
        router
            .send(&peer, b"while connected".to_vec())
            .await
            .is_ok()
    );

    dealer.shutdown().await;
    // The router learns of the closed connection asynchronously; keep trying until it has.
    // Sends in between succeed (queued for a peer ZeroMQ still lists) or hit the high-water mark.
    let outcome = guarded("the peer to be forgotten", async {
        let mut pace = tokio::time::interval(Duration::from_millis(1));
        for _ in 0..5_000 {
            match router.send(&peer, b"anyone there?".to_vec()).await {
                Ok(()) | Err(TransportError::PeerBusy { .. }) => {}
                Err(error) => return Some(error),
            }
            pace.tick().await;
        }
        None
    })
    .await;
    match outcome {
        Some(TransportError::PeerUnreachable { peer: gone }) => assert_eq!(gone, peer),
        other => panic!("expected PeerUnreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_full_queue_makes_sends_fail_and_draining_resumes_delivery_in_order() {
    // inproc has no kernel buffers, so the high-water marks alone bound the queue; the dealer's
    // receiver is tiny and unread, so its socket thread stalls and stops reading.
    let tight = FrameLimits {
        send_high_water_mark: 2,
        receive_high_water_mark: 2,
        inbound_capacity: 1,
        ..FrameLimits::default()
    };
    let endpoint = inproc_endpoint();
    let (router, mut router_events) = RouterEndpoint::bind(
        &endpoint,
        RouterOptions {
            limits: tight.clone(),
            ..RouterOptions::default()
        },
    )
    .unwrap();
    let (dealer, mut dealer_events) = DealerConnection::connect(
        &endpoint,
        DealerOptions {
            limits: tight,
            ..DealerOptions::default()
        },
    )
    .unwrap();
    let peer = dealer_says(&dealer, &mut router_events, b"hello")
        .await
        .peer;

    let mut accepted = 0_u32;
    let busy = guarded("the queue to fill", async {
        for _ in 0..10_000 {
            match router.send(&peer, accepted.to_be_bytes().to_vec()).await {
                Ok(()) => accepted += 1,
                Err(error) => return Some(error),
            }
        }
        None
    })
    .await;
    assert!(
        matches!(&busy, Some(TransportError::PeerBusy { peer: Some(p) }) if *p == peer),
        "expected PeerBusy, got {busy:?}"
    );
    assert!(accepted >= 2, "accepted {accepted}");
    assert_eq!(router.stats().send_failed_busy, 1);

    // Every accepted frame arrives, in order, though the receiver held one at a time.
    for i in 0..accepted {
        assert_eq!(
            next_dealer_message(&mut dealer_events).await,
            i.to_be_bytes()
        );
    }
    guarded("send", router.send(&peer, b"after".to_vec()))
        .await
        .unwrap();
    assert_eq!(next_dealer_message(&mut dealer_events).await, b"after");
    assert_eq!(dealer.stats().frames_in, u64::from(accepted) + 1);
}

#[tokio::test]
async fn invalid_endpoints_are_named_in_the_error() {
    for endpoint in [
        "nonsense",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:notaport",
        "carrier-pigeon://coop",
    ] {
        match RouterEndpoint::bind(endpoint, RouterOptions::default()) {
            Err(TransportError::InvalidEndpoint {
                endpoint: named,
                reason,
            }) => {
                assert_eq!(named, endpoint);
                assert!(!reason.is_empty());
            }
            other => panic!("bind {endpoint:?}: expected InvalidEndpoint, got {other:?}"),
        }
        match DealerConnection::connect(endpoint, DealerOptions::default()) {
            Err(TransportError::InvalidEndpoint {
                endpoint: named, ..
            }) => {
                assert_eq!(named, endpoint)
            }
            other => panic!("connect {endpoint:?}: expected InvalidEndpoint, got {other:?}"),
        }
    }
    let message = RouterEndpoint::bind("carrier-pigeon://coop", RouterOptions::default())
        .unwrap_err()
        .to_string();
    assert!(message.contains("carrier-pigeon://coop"), "{message}");
    assert!(
        message.contains("tcp://"),
        "the fix is suggested: {message}"
    );
}

#[tokio::test]
async fn binding_a_tcp_address_in_use_is_refused() {
    let (router, _events) = bind_tcp();
    let endpoint = router.endpoint().to_owned();
    match RouterEndpoint::bind(&endpoint, RouterOptions::default()) {
        Err(TransportError::AddressInUse { endpoint: named }) => assert_eq!(named, endpoint),
        other => panic!("expected AddressInUse, got {other:?}"),
    }
}

#[tokio::test]
async fn binding_a_live_ipc_path_is_refused_but_a_stale_one_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}", dir.path().join("router.sock").display());
    let (router, _events) = RouterEndpoint::bind(&endpoint, RouterOptions::default()).unwrap();
    assert!(matches!(
        RouterEndpoint::bind(&endpoint, RouterOptions::default()),
        Err(TransportError::AddressInUse { .. })
    ));
    router.shutdown().await;

    // A socket file nobody listens on (as a crashed orchestrator leaves) does not block a bind.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let endpoint = format!("ipc://{}", stale.display());
    let (router, mut router_events) =
        RouterEndpoint::bind(&endpoint, RouterOptions::default()).unwrap();
    let (dealer, mut dealer_events) = connect(&endpoint);
    round_trip(&router, &mut router_events, &dealer, &mut dealer_events).await;
}

#[tokio::test]
async fn inconsistent_options_are_refused() {
    let options = RouterOptions {
        limits: FrameLimits {
            max_frame_bytes: 100,
            hard_max_frame_bytes: Some(10),
            ..FrameLimits::default()
        },
        ..RouterOptions::default()
    };
    assert!(matches!(
        RouterEndpoint::bind(&inproc_endpoint(), options),
        Err(TransportError::InvalidOptions(_))
    ));
    let options = DealerOptions {
        routing_id: Some(Vec::new()),
        ..DealerOptions::default()
    };
    assert!(matches!(
        DealerConnection::connect(&inproc_endpoint(), options),
        Err(TransportError::InvalidOptions(_))
    ));
}

#[tokio::test]
async fn after_shutdown_sends_fail_and_receivers_end() {
    let endpoint = inproc_endpoint();
    let (router, mut router_events) =
        RouterEndpoint::bind(&endpoint, RouterOptions::default()).unwrap();
    let (dealer, mut dealer_events) = connect(&endpoint);
    let peer = dealer_says(&dealer, &mut router_events, b"hello")
        .await
        .peer;

    let clone = router.clone();
    router.shutdown().await;
    assert!(clone.is_closed());
    assert!(matches!(
        clone.send(&peer, b"late".to_vec()).await,
        Err(TransportError::Closed)
    ));
    assert_eq!(
        guarded("router receiver end", router_events.recv()).await,
        None
    );
    router.shutdown().await; // idempotent

    dealer.shutdown().await;
    assert!(matches!(
        dealer.send(b"late".to_vec()).await,
        Err(TransportError::Closed)
    ));
    assert!(matches!(
        dealer.reconnect(None).await,
        Err(TransportError::Closed)
    ));
    assert_eq!(
        guarded("dealer receiver end", dealer_events.recv()).await,
        None
    );
    assert_eq!(dealer.stats().send_failed_other, 1);
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_socket() {
    let endpoint = inproc_endpoint();
    let (router, mut router_events) =
        RouterEndpoint::bind(&endpoint, RouterOptions::default()).unwrap();
    drop(router);
    assert_eq!(guarded("receiver end", router_events.recv()).await, None);
}

#[tokio::test]
async fn dropping_a_full_receiver_unblocks_the_socket() {
    let tight = FrameLimits {
        send_high_water_mark: 2,
        receive_high_water_mark: 2,
        inbound_capacity: 1,
        ..FrameLimits::default()
    };
    let endpoint = inproc_endpoint();
    let (router, mut router_events) = RouterEndpoint::bind(
        &endpoint,
        RouterOptions {
            limits: tight.clone(),
            ..RouterOptions::default()
        },
    )
    .unwrap();
    let (dealer, dealer_events) = DealerConnection::connect(
        &endpoint,
        DealerOptions {
            limits: tight,
            ..DealerOptions::default()
        },
    )
    .unwrap();
    let peer = dealer_says(&dealer, &mut router_events, b"hello")
        .await
        .peer;
    let filled = guarded("the queue to fill", async {
        for _ in 0..10_000 {
            if router.send(&peer, b"x".to_vec()).await.is_err() {
                return true;
            }
        }
        false
    })
    .await;
    assert!(filled, "the dealer's queue never filled");

    // Nobody will read the dealer's frames any more: its thread must discard them, not stall.
    drop(dealer_events);
    let delivered_again = guarded("sends to succeed again", async {
        let mut pace = tokio::time::interval(Duration::from_millis(1));
        for _ in 0..5_000 {
            match router.send(&peer, b"x".to_vec()).await {
                Ok(()) => return true,
                Err(TransportError::PeerBusy { .. }) => pace.tick().await,
                Err(error) => panic!("unexpected {error}"),
            };
        }
        false
    })
    .await;
    assert!(delivered_again);
    // The dealer can still send.
    dealer_says(&dealer, &mut router_events, b"still sending").await;
}
