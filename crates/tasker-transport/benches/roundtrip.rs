//! The transport's physical limits on this machine: the baseline the engine benchmark compares
//! against.
//!
//! - `round_trip/*`: one ~1 KiB frame DEALER → ROUTER → back to the DEALER, one at a time
//!   (latency). `raw` uses libzmq sockets directly on plain threads; `transport` goes through this
//!   crate's handles, socket threads and channels, so the difference is our overhead.
//! - `one_way/*`: 10 000 frames of ~1 KiB DEALER → ROUTER, as fast as they are taken
//!   (throughput, reported as frames per second).
//!
//! Run: `cargo bench -p tasker-transport --bench roundtrip`.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark should fail loudly on any error"
)]

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tasker_transport::{
    DealerConnection, DealerEvent, DealerOptions, FrameLimits, RouterEndpoint, RouterEvent,
    RouterOptions,
};

const FRAME_BYTES: usize = 1024;
const BATCH: u64 = 10_000;
/// Deep enough queues that a batch never hits a high-water mark, for raw and transport alike.
const HIGH_WATER_MARK: u32 = 2 * BATCH as u32;

/// Endpoints to bind, one per transport. The ipc socket lives in a temporary directory.
fn endpoints(dir: &tempfile::TempDir) -> Vec<(&'static str, String)> {
    vec![
        ("tcp", "tcp://127.0.0.1:0".to_owned()),
        (
            "ipc",
            format!("ipc://{}", dir.path().join("bench.sock").display()),
        ),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn deep_queues() -> FrameLimits {
    FrameLimits {
        send_high_water_mark: HIGH_WATER_MARK,
        receive_high_water_mark: HIGH_WATER_MARK,
        ..FrameLimits::default()
    }
}

/// A raw ROUTER that echoes every message on its own thread until it receives `stop`.
fn raw_echo_router(context: &zmq::Context, endpoint: &str) -> (String, thread::JoinHandle<()>) {
    let router = context.socket(zmq::ROUTER).unwrap();
    router.set_linger(0).unwrap();
    router.bind(endpoint).unwrap();
    let bound = router.get_last_endpoint().unwrap().unwrap();
    let echo = thread::spawn(move || {
        loop {
            let message = router.recv_multipart(0).unwrap();
            if message[1] == b"stop" {
                return;
            }
            router.send_multipart(message, 0).unwrap();
        }
    });
    (bound, echo)
}

fn round_trip(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let payload = vec![0x5a_u8; FRAME_BYTES];
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));

    for (transport, endpoint) in endpoints(&dir) {
        // Raw libzmq on blocking threads.
        let context = zmq::Context::new();
        let (bound, echo) = raw_echo_router(&context, &endpoint);
        let dealer = context.socket(zmq::DEALER).unwrap();
        dealer.set_linger(0).unwrap();
        dealer.connect(&bound).unwrap();
        group.bench_with_input(
            BenchmarkId::new("raw", transport),
            &payload,
            |b, payload| {
                b.iter(|| {
                    dealer.send(&payload[..], 0).unwrap();
                    dealer.recv_bytes(0).unwrap()
                })
            },
        );
        dealer.send(&b"stop"[..], 0).unwrap();
        echo.join().unwrap();
        drop(dealer);
        let _ = std::fs::remove_file(dir.path().join("bench.sock"));

        // Through this crate.
        let runtime = runtime();
        let (router, mut router_events) =
            RouterEndpoint::bind(&endpoint, RouterOptions::default()).unwrap();
        let (dealer, mut dealer_events) =
            DealerConnection::connect(router.endpoint(), DealerOptions::default()).unwrap();
        let echo_router = router.clone();
        runtime.spawn(async move {
            while let Some(event) = router_events.recv().await {
                if let RouterEvent::Message(inbound) = event {
                    let _ = echo_router.send(&inbound.peer, inbound.payload).await;
                }
            }
        });
        group.bench_with_input(
            BenchmarkId::new("transport", transport),
            &payload,
            |b, payload| {
                b.iter_custom(|iterations| {
                    runtime.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iterations {
                            dealer.send(payload.clone()).await.unwrap();
                            loop {
                                match dealer_events.recv().await.unwrap() {
                                    DealerEvent::Message(_) => break,
                                    DealerEvent::Connected | DealerEvent::Disconnected => {}
                                    DealerEvent::Rejected(kind) => panic!("rejected: {kind}"),
                                }
                            }
                        }
                        start.elapsed()
                    })
                })
            },
        );
        runtime.block_on(async {
            dealer.shutdown().await;
            router.shutdown().await;
        });
        let _ = std::fs::remove_file(dir.path().join("bench.sock"));
    }
    group.finish();
}

fn one_way(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let payload = vec![0x5a_u8; FRAME_BYTES];
    let mut group = c.benchmark_group("one_way");
    group.throughput(Throughput::Elements(BATCH));

    for (transport, endpoint) in endpoints(&dir) {
        // Raw libzmq: a sender thread pushes a batch on request, this thread receives it.
        let context = zmq::Context::new();
        let router = context.socket(zmq::ROUTER).unwrap();
        router.set_linger(0).unwrap();
        router.set_rcvhwm(HIGH_WATER_MARK as i32).unwrap();
        router.bind(&endpoint).unwrap();
        let bound = router.get_last_endpoint().unwrap().unwrap();
        let dealer = context.socket(zmq::DEALER).unwrap();
        dealer.set_linger(0).unwrap();
        dealer.set_sndhwm(HIGH_WATER_MARK as i32).unwrap();
        dealer.connect(&bound).unwrap();
        let (batches, batch_requests) = mpsc::channel::<u64>();
        let sender_payload = payload.clone();
        let sender = thread::spawn(move || {
            for count in batch_requests {
                for _ in 0..count {
                    dealer.send(&sender_payload[..], 0).unwrap();
                }
            }
        });
        let mut routing_id = zmq::Message::new();
        let mut frame = zmq::Message::new();
        group.bench_function(BenchmarkId::new("raw", transport), |b| {
            b.iter_custom(|iterations| {
                let start = Instant::now();
                for _ in 0..iterations {
                    batches.send(BATCH).unwrap();
                    for _ in 0..BATCH {
                        router.recv(&mut routing_id, 0).unwrap();
                        router.recv(&mut frame, 0).unwrap();
                    }
                }
                start.elapsed()
            })
        });
        drop(batches);
        sender.join().unwrap();
        drop(router);
        let _ = std::fs::remove_file(dir.path().join("bench.sock"));

        // Through this crate: all sends of a batch are queued at once, then received.
        let runtime = runtime();
        let (router, mut router_events) = RouterEndpoint::bind(
            &endpoint,
            RouterOptions {
                limits: deep_queues(),
                ..RouterOptions::default()
            },
        )
        .unwrap();
        let (dealer, _dealer_events) = DealerConnection::connect(
            router.endpoint(),
            DealerOptions {
                limits: deep_queues(),
                ..DealerOptions::default()
            },
        )
        .unwrap();
        group.bench_function(BenchmarkId::new("transport", transport), |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iterations {
                        let sends: Vec<_> =
                            (0..BATCH).map(|_| dealer.send(payload.clone())).collect();
                        for _ in 0..BATCH {
                            match router_events.recv().await.unwrap() {
                                RouterEvent::Message(_) => {}
                                RouterEvent::Rejected(error) => panic!("{error}"),
                            }
                        }
                        for send in sends {
                            send.await.unwrap();
                        }
                    }
                    start.elapsed()
                })
            })
        });
        runtime.block_on(async {
            dealer.shutdown().await;
            router.shutdown().await;
        });
        let _ = std::fs::remove_file(dir.path().join("bench.sock"));
    }
    group.finish();
}

fn configured() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = configured();
    targets = round_trip, one_way
}
criterion_main!(benches);
