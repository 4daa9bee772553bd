//! Benchmarks of rmmap (not built yet).
