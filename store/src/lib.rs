//! Real file store for rmmap servers: positioned IO confined beneath the export root (not built yet).
