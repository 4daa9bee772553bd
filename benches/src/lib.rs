//! Benchmarks of rmmap.
//!
//! * `cargo bench -p rmmap-benches` runs the criterion micro-benchmarks:
//!   `codec` (encoding and decoding small and page-data frames) and
//!   `core_ops` (the state machines' CPU cost per cache hit, page fetch,
//!   invalidation and recall, on the in-memory cluster with zero latency).
//! * The end-to-end benchmark against NBD and raw TCP is described in
//!   `docs/BENCHMARKS.md`.
