//! Frames travel DEALER → ROUTER → DEALER over every transport, and reach the right peer.

#![allow(clippy::unwrap_used, reason = "a test should fail loudly on any error")]

mod support;

use support::*;
use tasker_transport::{
    DealerConnection, DealerEvent, DealerOptions, RouterEndpoint, RouterOptions, TransportError,
};

#[tokio::test]
async fn round_trip_over_tcp_with_an_ephemeral_port() {
    let (router, mut router_events) = bind_tcp();
    let endpoint = router.endpoint().to_owned();
    assert!(endpoint.starts_with("tcp://127.0.0.1:"), "{endpoint}");
    assert!(
        !endpoint.ends_with(":0"),
        "the real port is reported: {endpoint}"
    );

    let (dealer, mut dealer_events) = connect(&endpoint);
    round_trip(&router, &mut router_events, &dealer, &mut dealer_events).await;

    let router_stats = router.stats();
    assert_eq!((router_stats.frames_in, router_stats.bytes_in), (1, 4));
    assert_eq!((router_stats.frames_out, router_stats.bytes_out), (1, 4));
    let dealer_stats = dealer.stats();
    assert_eq!((dealer_stats.frames_out, dealer_stats.frames_in), (1, 1));
}

#[tokio::test]
async fn round_trip_over_ipc() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}", dir.path().join("router.sock").display());
    let (router, mut router_events) =
        RouterEndpoint::bind(&endpoint, RouterOptions::default()).expect("bind ipc");
    assert_eq!(router.endpoint(), endpoint);

    let (dealer, mut dealer_events) = connect(&endpoint);
    round_trip(&router, &mut router_events, &dealer, &mut dealer_events).await;
}

#[tokio::test]
async fn round_trip_over_inproc() {
    let endpoint = inproc_endpoint();
    let (router, mut router_events) =
        RouterEndpoint::bind(&endpoint, RouterOptions::default()).expect("bind inproc");
    assert_eq!(router.endpoint(), endpoint);

    let (dealer, mut dealer_events) = connect(&endpoint);
    round_trip(&router, &mut router_events, &dealer, &mut dealer_events).await;
}

#[tokio::test]
async fn a_large_frame_within_the_limit_arrives_intact() {
    let (router, mut router_events) = bind_tcp();
    let (dealer, mut dealer_events) = connect(router.endpoint());
    let payload: Vec<u8> = (0..1_000_000_u32).map(|i| (i % 251) as u8).collect();

    let inbound = dealer_says(&dealer, &mut router_events, &payload).await;
    guarded("router send", router.send(&inbound.peer, payload.clone()))
        .await
        .expect("send back");
    assert_eq!(next_dealer_message(&mut dealer_events).await, payload);
}

#[tokio::test]
async fn the_router_addresses_each_dealer_individually() {
    let (router, mut router_events) = bind_tcp();
    let (first, mut first_events) = connect(router.endpoint());
    let (second, mut second_events) = connect(router.endpoint());

    let first_peer = dealer_says(&first, &mut router_events, b"I am first")
        .await
        .peer;
    let second_peer = dealer_says(&second, &mut router_events, b"I am second")
        .await
        .peer;
    assert_ne!(first_peer, second_peer);

    // Interleave sends so that a message routed to the wrong dealer would show up in the order.
    for round in 0..5 {
        let to_first = format!("for first #{round}").into_bytes();
        let to_second = format!("for second #{round}").into_bytes();
        guarded("send", router.send(&second_peer, to_second))
            .await
            .unwrap();
        guarded("send", router.send(&first_peer, to_first))
            .await
            .unwrap();
    }
    for round in 0..5 {
        assert_eq!(
            next_dealer_message(&mut first_events).await,
            format!("for first #{round}").into_bytes()
        );
        assert_eq!(
            next_dealer_message(&mut second_events).await,
            format!("for second #{round}").into_bytes()
        );
    }
    // A marker proves nothing else was queued for the first dealer before it.
    guarded("send", router.send(&first_peer, b"end".to_vec()))
        .await
        .unwrap();
    assert_eq!(next_dealer_message(&mut first_events).await, b"end");
    assert_eq!(first.stats().frames_in, 6);
    assert_eq!(second.stats().frames_in, 5);
}

#[tokio::test]
async fn many_frames_arrive_in_order_both_ways() {
    let endpoint = inproc_endpoint();
    let (router, mut router_events) =
        RouterEndpoint::bind(&endpoint, RouterOptions::default()).unwrap();
    let (dealer, mut dealer_events) = connect(&endpoint);

    let count = 500_u32;
    let sends: Vec<_> = (0..count)
        .map(|i| dealer.send(i.to_be_bytes().to_vec()))
        .collect();
    for send in sends {
        guarded("send", send).await.unwrap();
    }
    let mut peer = None;
    for i in 0..count {
        let inbound = next_inbound(&mut router_events).await;
        assert_eq!(inbound.payload, i.to_be_bytes());
        peer = Some(inbound.peer);
    }
    let peer = peer.unwrap();
    for i in 0..count {
        guarded("send", router.send(&peer, i.to_be_bytes().to_vec()))
            .await
            .unwrap();
        assert_eq!(
            next_dealer_message(&mut dealer_events).await,
            i.to_be_bytes()
        );
    }
}

#[tokio::test]
async fn a_dealer_reports_its_connection_and_its_loss() {
    let (router, mut router_events) = bind_tcp();
    let (dealer, mut dealer_events) = connect(router.endpoint());
    assert_eq!(
        guarded("connected", dealer_events.recv()).await,
        Some(DealerEvent::Connected)
    );
    dealer_says(&dealer, &mut router_events, b"hello").await;

    router.shutdown().await;
    assert_eq!(
        guarded("disconnected", dealer_events.recv()).await,
        Some(DealerEvent::Disconnected)
    );
}

#[tokio::test]
async fn a_chosen_routing_id_is_what_the_router_sees() {
    let (router, mut router_events) = bind_tcp();
    let options = DealerOptions {
        routing_id: Some(b"worker-7".to_vec()),
        ..DealerOptions::default()
    };
    let (dealer, mut dealer_events) =
        DealerConnection::connect(router.endpoint(), options).unwrap();
    let peer = round_trip(&router, &mut router_events, &dealer, &mut dealer_events).await;
    assert_eq!(peer.as_bytes(), b"worker-7");
    assert_eq!(peer.to_string(), "776f726b65722d37");
}

#[tokio::test]
async fn reconnect_gives_a_fresh_or_a_chosen_routing_id() {
    let (router, mut router_events) = bind_tcp();
    let (dealer, mut dealer_events) = connect(router.endpoint());
    let original = round_trip(&router, &mut router_events, &dealer, &mut dealer_events).await;

    guarded("reconnect", dealer.reconnect(None))
        .await
        .expect("reconnect with a fresh id");
    let fresh = round_trip(&router, &mut router_events, &dealer, &mut dealer_events).await;
    assert_ne!(fresh, original);

    guarded("reconnect", dealer.reconnect(Some(b"chosen".to_vec())))
        .await
        .expect("reconnect with a chosen id");
    let chosen = round_trip(&router, &mut router_events, &dealer, &mut dealer_events).await;
    assert_eq!(chosen.as_bytes(), b"chosen");

    let refused = guarded("reconnect", dealer.reconnect(Some(vec![0, 1]))).await;
    assert!(
        matches!(refused, Err(TransportError::InvalidOptions(_))),
        "{refused:?}"
    );
    // The refused reconnect left the working connection in place.
    let again = round_trip(&router, &mut router_events, &dealer, &mut dealer_events).await;
    assert_eq!(again.as_bytes(), b"chosen");
}
