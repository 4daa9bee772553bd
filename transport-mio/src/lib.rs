//! rmmap over mio (not built yet).
