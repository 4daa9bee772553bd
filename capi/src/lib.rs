//! rmmap for C, and for every language with a C FFI (Python ctypes or
//! cffi, Go cgo, ...): `librmmap.so` and `librmmap.a`.
//!
//! Two headers, generated from this crate by cbindgen and committed in
//! `capi/include/`:
//!
//! * `fmmap.h`, the seed's four calls (`rmmap`, `rmunmap`, `mread`,
//!   `mwrite`) over one connection per process per server, with `errno`
//!   and `rmmap_strerror_last()` for failures;
//! * `rmmap.h`, the whole client: connection options (TLS, tokens,
//!   timeouts), mappings read-only, read-write or created, reads, writes,
//!   `sync`, set length, the remote atomics, memory mappings as plain
//!   pointers, with opaque handles and an error enum that matches the
//!   protocol's error kinds.
//!
//! It is one more adapter over the same client as everything else: every
//! call runs rmmap-tokio's [`Client`](rmmap_tokio::Client) on a
//! process-wide runtime and waits for it on the caller's thread. No panic
//! crosses into C: every exported function runs inside
//! `boundary::guard`.
//!
//! Build and link:
//!
//! ```text
//! cargo build --release -p rmmap-c
//! cc prog.c -I capi/include -L target/release -lrmmap
//! ```

// The C boundary is raw pointers, `extern "C"` functions, `#[no_mangle]`
// and errno: this crate cannot be written without `unsafe`, so it (and only
// it in the workspace) allows it. Each use is small, in the function that
// crosses the boundary or in a helper beside it, with a SAFETY comment.
#![allow(unsafe_code)]
// Types keep their C names (`rmmap_client`, `fileloc_t`), as the headers
// spell them.
#![allow(non_camel_case_types)]

mod boundary;
mod client;
mod error;
mod mapping;
mod runtime;
mod seed;
mod target;

pub use boundary::rmmap_strerror_last;
pub use client::{
    rmmap_client, rmmap_close, rmmap_connect, rmmap_options, rmmap_options_free, rmmap_options_new,
    rmmap_options_set_connect_timeout_ms, rmmap_options_set_give_up_ms,
    rmmap_options_set_tls_ca_file, rmmap_options_set_tls_name, rmmap_options_set_tls_system_roots,
    rmmap_options_set_token_file, rmmap_set_len,
};
pub use error::{rmmap_error, rmmap_error_name};
pub use mapping::{
    RMMAP_MAP_CREATE, RMMAP_MAP_MEMORY, RMMAP_MAP_READ_ONLY, RMMAP_MAP_READ_WRITE,
    rmmap_compare_exchange, rmmap_fetch_add, rmmap_map, rmmap_mapping, rmmap_mapping_file_len,
    rmmap_mapping_len, rmmap_mapping_ptr, rmmap_memory_supported, rmmap_read, rmmap_swap,
    rmmap_sync, rmmap_unmap, rmmap_write,
};
pub use seed::{fileloc, fileloc_t, mread, mwrite, rmmap, rmunmap};
