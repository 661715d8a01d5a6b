//! The ZeroMQ baseline: round trips of one ~1 KiB frame DEALER → ROUTER → back to the DEALER,
//! one at a time, over the transport kind the engine uses. Measured twice: through
//! `tasker-transport` (its socket threads and channels, as the engine and the Rust worker use
//! them) and through libzmq sockets on plain threads (the physical limit). The difference is our
//! transport's overhead; the engine's step handoff is compared with both.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tasker_transport::{
    DealerConnection, DealerEvent, DealerOptions, RouterEndpoint, RouterEvent, RouterOptions,
};

use super::report::{LatencySummary, micros, per_second};

/// Bytes per frame.
pub(crate) const FRAME_BYTES: usize = 1024;
/// Round trips made before measuring (connection set-up, first allocations).
const WARM_UP: u32 = 200;
/// Longest wait for one echo before the baseline fails.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// Which ZeroMQ transport an endpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportKind {
    /// `tcp://` (loopback here).
    Tcp,
    /// `ipc://` (a Unix domain socket).
    Ipc,
    /// `inproc://` (inside one process).
    Inproc,
}

impl TransportKind {
    /// The kind of `endpoint`, from its scheme.
    pub(crate) fn of_endpoint(endpoint: &str) -> anyhow::Result<Self> {
        match endpoint.split_once("://").map(|(scheme, _)| scheme) {
            Some("tcp") => Ok(Self::Tcp),
            Some("ipc") => Ok(Self::Ipc),
            Some("inproc") => Ok(Self::Inproc),
            _ => bail!(
                "endpoint {endpoint:?} must start with tcp://, ipc:// or inproc:// \
                 (or be one of the words tcp, ipc, inproc)"
            ),
        }
    }

    /// Its scheme.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Ipc => "ipc",
            Self::Inproc => "inproc",
        }
    }

    /// A fresh endpoint of this kind named `label`: a free loopback port, a socket file in
    /// `dir`, or a process-local name.
    pub(crate) fn fresh_endpoint(self, dir: &Path, label: &str) -> String {
        match self {
            Self::Tcp => "tcp://127.0.0.1:0".to_owned(),
            Self::Ipc => format!("ipc://{}", dir.join(format!("{label}.sock")).display()),
            Self::Inproc => format!("inproc://tasker-bench-{label}-{}", std::process::id()),
        }
    }
}

/// The ZeroMQ baseline's figures.
#[derive(Debug, Serialize)]
pub(crate) struct TransportBaseline {
    /// `tcp`, `ipc` or `inproc`.
    pub(crate) transport: &'static str,
    /// Bytes per frame.
    pub(crate) frame_bytes: usize,
    /// Round trips measured (after a warm-up).
    pub(crate) round_trips: u32,
    /// Through `tasker-transport`.
    pub(crate) tasker_transport: RoundTrips,
    /// Through libzmq directly.
    pub(crate) raw_libzmq: RoundTrips,
}

/// Round-trip figures of one way of using ZeroMQ.
#[derive(Debug, Serialize)]
pub(crate) struct RoundTrips {
    /// Per round trip.
    pub(crate) latency: LatencySummary,
    /// Sequential round trips per second (1 / mean).
    pub(crate) round_trips_per_s: f64,
}

impl RoundTrips {
    fn of(samples: Vec<u64>, elapsed: Duration) -> anyhow::Result<Self> {
        let count = samples.len();
        let latency = LatencySummary::of_micros(samples).context("no round trip was measured")?;
        Ok(Self {
            latency,
            round_trips_per_s: per_second(count as f64, elapsed.as_secs_f64()),
        })
    }
}

/// Measures `round_trips` round trips both ways over `kind`, with socket files (ipc) in `dir`.
pub(crate) async fn measure(
    kind: TransportKind,
    dir: &Path,
    round_trips: u32,
) -> anyhow::Result<TransportBaseline> {
    let payload = vec![0x5a_u8; FRAME_BYTES];
    let transport_endpoint = kind.fresh_endpoint(dir, "baseline-transport");
    let tasker_transport = through_tasker_transport(&transport_endpoint, &payload, round_trips)
        .await
        .context("ZeroMQ baseline through tasker-transport")?;
    let raw_endpoint = kind.fresh_endpoint(dir, "baseline-raw");
    let raw_libzmq =
        tokio::task::spawn_blocking(move || through_libzmq(&raw_endpoint, &payload, round_trips))
            .await
            .context("the raw ZeroMQ baseline thread failed")?
            .context("ZeroMQ baseline through libzmq")?;
    Ok(TransportBaseline {
        transport: kind.as_str(),
        frame_bytes: FRAME_BYTES,
        round_trips,
        tasker_transport,
        raw_libzmq,
    })
}

/// A `RouterEndpoint` echoing every frame on a tokio task; a `DealerConnection` sending one
/// frame at a time and awaiting its echo.
async fn through_tasker_transport(
    endpoint: &str,
    payload: &[u8],
    round_trips: u32,
) -> anyhow::Result<RoundTrips> {
    let (router, mut router_events) = RouterEndpoint::bind(endpoint, RouterOptions::default())?;
    let (dealer, mut dealer_events) =
        DealerConnection::connect(router.endpoint(), DealerOptions::default())?;
    let echo_router = router.clone();
    let echo = tokio::spawn(async move {
        while let Some(event) = router_events.recv().await {
            if let RouterEvent::Message(inbound) = event
                && echo_router
                    .send(&inbound.peer, inbound.payload)
                    .await
                    .is_err()
            {
                break;
            }
        }
    });
    let outcome = async {
        let mut samples = Vec::with_capacity(round_trips as usize);
        let mut measured_from = Instant::now();
        for i in 0..WARM_UP + round_trips {
            if i == WARM_UP {
                measured_from = Instant::now();
            }
            let start = Instant::now();
            dealer.send(payload.to_vec()).await?;
            loop {
                match tokio::time::timeout(ECHO_TIMEOUT, dealer_events.recv()).await {
                    Ok(Some(DealerEvent::Message(_))) => break,
                    Ok(Some(DealerEvent::Connected | DealerEvent::Disconnected)) => {}
                    Ok(Some(DealerEvent::Rejected(kind))) => bail!("the echo was rejected: {kind}"),
                    Ok(None) => bail!("the DEALER closed"),
                    Err(_) => bail!("no echo within {} s", ECHO_TIMEOUT.as_secs()),
                }
            }
            if i >= WARM_UP {
                samples.push(micros(start.elapsed()));
            }
        }
        RoundTrips::of(samples, measured_from.elapsed())
    }
    .await;
    dealer.shutdown().await;
    router.shutdown().await;
    echo.abort();
    let _ = echo.await;
    outcome
}

/// A libzmq ROUTER echoing on its own thread; a libzmq DEALER on this (blocking) thread.
fn through_libzmq(endpoint: &str, payload: &[u8], round_trips: u32) -> anyhow::Result<RoundTrips> {
    let context = zmq::Context::new();
    let router = context.socket(zmq::ROUTER)?;
    router.set_linger(0)?;
    router.bind(endpoint)?;
    let bound = router
        .get_last_endpoint()?
        .ok()
        .filter(|bound| !bound.is_empty())
        .unwrap_or_else(|| endpoint.to_owned());
    let echo = std::thread::Builder::new()
        .name("bench-raw-echo".to_owned())
        .spawn(move || -> Result<(), zmq::Error> {
            loop {
                let message = router.recv_multipart(0)?;
                // An empty frame is the signal to stop.
                if message.get(1).is_none_or(Vec::is_empty) {
                    return Ok(());
                }
                router.send_multipart(message, 0)?;
            }
        })?;
    let dealer = context.socket(zmq::DEALER)?;
    dealer.set_linger(0)?;
    dealer.set_rcvtimeo(i32::try_from(ECHO_TIMEOUT.as_millis()).unwrap_or(i32::MAX))?;
    dealer.connect(&bound)?;
    let outcome = raw_round_trips(&dealer, payload, round_trips);
    dealer.send(&b""[..], 0)?;
    match echo.join() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => bail!("the raw echo thread failed: {error}"),
        Err(_) => bail!("the raw echo thread panicked"),
    }
    outcome
}

/// Sends `payload` and waits for its echo, `WARM_UP + round_trips` times.
fn raw_round_trips(
    dealer: &zmq::Socket,
    payload: &[u8],
    round_trips: u32,
) -> anyhow::Result<RoundTrips> {
    let mut samples = Vec::with_capacity(round_trips as usize);
    let mut measured_from = Instant::now();
    for i in 0..WARM_UP + round_trips {
        if i == WARM_UP {
            measured_from = Instant::now();
        }
        let start = Instant::now();
        dealer.send(payload, 0)?;
        dealer
            .recv_bytes(0)
            .context("no echo from the raw ROUTER")?;
        if i >= WARM_UP {
            samples.push(micros(start.elapsed()));
        }
    }
    RoundTrips::of(samples, measured_from.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_scheme() {
        assert_eq!(
            TransportKind::of_endpoint("tcp://127.0.0.1:0").expect("tcp"),
            TransportKind::Tcp
        );
        assert_eq!(
            TransportKind::of_endpoint("ipc:///tmp/x.sock").expect("ipc"),
            TransportKind::Ipc
        );
        assert_eq!(
            TransportKind::of_endpoint("inproc://x").expect("inproc"),
            TransportKind::Inproc
        );
        assert!(TransportKind::of_endpoint("udp://x").is_err());
        let dir = Path::new("/tmp/bench");
        assert_eq!(
            TransportKind::Ipc.fresh_endpoint(dir, "engine"),
            "ipc:///tmp/bench/engine.sock"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn measures_both_ways_over_ipc() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let baseline = measure(TransportKind::Ipc, dir.path(), 50)
            .await
            .expect("baseline");
        assert_eq!(baseline.transport, "ipc");
        assert_eq!(baseline.tasker_transport.latency.samples, 50);
        assert_eq!(baseline.raw_libzmq.latency.samples, 50);
        assert!(baseline.raw_libzmq.latency.p50_us <= baseline.raw_libzmq.latency.max_us);
    }
}
