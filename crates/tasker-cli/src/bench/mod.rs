//! The measuring parts of `tasker bench` (the command itself, its arguments and its output live
//! in `bench_command`):
//!
//! - [`transport_baseline`]: raw ZeroMQ round trips DEALER → ROUTER → DEALER, through
//!   `tasker-transport` and through libzmq directly: the network's physical limit.
//! - [`store_baseline`]: raw database commits through the `Store`, one row per commit and many
//!   rows per commit: the disk's physical limit.
//! - [`workload`]: the engine with workers running many tasks of one template, timed, with
//!   every task and step checked afterwards.
//! - [`fleet`]: the workers of a run — Rust SDK workers in this process, or `tasker worker`
//!   child processes — and how many times each step ran on them.
//! - [`http_load`]: `--http`, the engine behind the HTTP API with clients creating tasks and
//!   waiting for them (the latency and throughput a user of `tasker serve` gets).
//! - [`soak`]: `--soak`, a long steady run against a `tasker serve` child process, its memory
//!   and speed sampled at every tenth.
//! - [`store_calls`]: the store with every operation counted and timed, to show where the
//!   database time of a run goes.
//! - [`report`]: the figures ([`report::BenchReport`]), latency percentiles, and the text
//!   rendering.

pub(crate) mod fleet;
pub(crate) mod http_load;
pub(crate) mod report;
pub(crate) mod soak;
pub(crate) mod store_baseline;
pub(crate) mod store_calls;
pub(crate) mod transport_baseline;
pub(crate) mod workload;
