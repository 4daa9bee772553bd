//! Deterministic simulation of rmmap (not built yet).
