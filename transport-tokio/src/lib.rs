//! rmmap over Tokio (not built yet).
