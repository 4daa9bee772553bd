//! rmmap.h: connecting (options, TLS, tokens, timeouts), setting a file's
//! length, closing.

use std::ffi::{CStr, c_char};
use std::path::Path;
use std::time::Duration;

use rmmap_tokio::{
    ClientConfig, ClientTls, ClusterClient as Client, ConnectError, RedirectPolicy, TlsConnector,
    Token,
};

use crate::boundary::status;
use crate::error::{Failure, rmmap_error};
use crate::runtime::{block_on, check_same_process};

/// How to connect: what `rmmap_options_new` sets up and the
/// `rmmap_options_set_*` functions change. Opaque.
#[derive(Clone, Default)]
pub struct rmmap_options {
    config: ClientConfig,
    tls: Option<ClientTls>,
}

impl rmmap_options {
    /// Trusts only the certificate authority in the PEM file at `path`.
    pub(crate) fn tls_ca_file(&mut self, path: &str) -> Result<(), Failure> {
        let tls = ClientTls::from_ca_file(Path::new(path)).map_err(config_failure)?;
        self.tls = Some(tls);
        Ok(())
    }

    /// Checks the server's certificate against `name`.
    pub(crate) fn tls_name(&mut self, name: &str) -> Result<(), Failure> {
        let tls = self.tls.take().ok_or_else(|| {
            Failure::invalid("set a TLS trust (a CA file, or the system's roots) before its name")
        })?;
        self.tls = Some(tls.with_server_name(name).map_err(config_failure)?);
        Ok(())
    }

    /// Authenticates with the token file at `path` (`NAME SECRET_HEX`).
    pub(crate) fn token_file(&mut self, path: &str) -> Result<(), Failure> {
        let token = Token::load(path).map_err(config_failure)?;
        self.config = token.configure(std::mem::take(&mut self.config));
        Ok(())
    }

    /// Connecting plus the handshake must finish within `ms`.
    pub(crate) fn connect_timeout(&mut self, ms: u64) {
        self.config.handshake_timeout = Duration::from_millis(ms);
    }

    /// Operations fail once the client has been disconnected this long
    /// (`0`: never).
    pub(crate) fn give_up(&mut self, ms: u64) {
        self.config.give_up_after = (ms > 0).then(|| Duration::from_millis(ms));
    }

    /// Connects to `addr` (`host:port`, or the members of a cluster
    /// `host:port,host:port,...`: the first that answers, and each file's
    /// owner when a member sends a map on): the first connection and
    /// handshake must succeed within the connect timeout.
    pub(crate) async fn connect(&self, addr: &str) -> Result<Client, Failure> {
        let members: Vec<&str> = addr.split(',').collect();
        let timeout = self.config.handshake_timeout;
        let too_slow = || {
            Failure::new(
                rmmap_error::RMMAP_TIMEOUT,
                format!("cannot connect to {addr}: no handshake within {timeout:?}"),
            )
            .with_errno(libc::ETIMEDOUT)
        };
        let started = std::time::Instant::now();
        let config = self.config.clone();
        let connecting = async {
            match &self.tls {
                Some(tls) => {
                    let tls = TlsConnector::new(tls.clone());
                    Client::connect_with(tls, &members, config, RedirectPolicy::default()).await
                }
                None => Client::connect(&members, config).await,
            }
        };
        // The client gives up on a connection that takes longer than the
        // handshake timeout (and says "did not complete the handshake");
        // this bounds the whole call even so.
        match tokio::time::timeout(timeout + Duration::from_secs(1), connecting).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(ConnectError::Handshake { .. })) if started.elapsed() >= timeout => {
                Err(too_slow())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(too_slow()),
        }
    }
}

fn config_failure(e: impl std::fmt::Display) -> Failure {
    Failure::new(rmmap_error::RMMAP_CONFIG, e.to_string())
}

/// A connection to one rmmap server that carries every mapping made
/// through it. Thread-safe: any number of threads may use one client and
/// its mappings at once. Opaque.
pub struct rmmap_client {
    pub(crate) client: Client,
    pub(crate) pid: u32,
}

impl rmmap_client {
    pub(crate) fn get(&self) -> Result<&Client, Failure> {
        check_same_process(self.pid)?;
        Ok(&self.client)
    }
}

/// Reads a C string argument.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string valid for reads.
pub(crate) unsafe fn c_str<'a>(s: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if s.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and the caller vouches for the rest.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|_| Failure::invalid(format!("{what} is not UTF-8")))
}

/// Borrows a handle argument.
///
/// # Safety
/// `p` is NULL or points to a live `T` made by this library.
pub(crate) unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller vouches that a non-NULL `p` is a live handle.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::invalid(format!("{what} is NULL")))
}

/// Writes an output argument.
///
/// # Safety
/// `p` is NULL or valid for writing a `T`.
pub(crate) unsafe fn put<T>(p: *mut T, value: T, what: &str) -> Result<(), Failure> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and the caller vouches that it is writable.
    unsafe { p.write(value) };
    Ok(())
}

/// New connection options with the defaults: plaintext, no token, 10 s to
/// connect, operations fail after 30 s disconnected.
///
/// Ownership: the caller owns the result and frees it with
/// `rmmap_options_free` (`rmmap_connect` does not take it). Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn rmmap_options_new() -> *mut rmmap_options {
    crate::boundary::guard(std::ptr::null_mut(), || Box::into_raw(Box::default()))
}

/// Frees options made by `rmmap_options_new`. NULL is ignored.
///
/// # Safety
/// `options` is NULL or came from `rmmap_options_new` and was not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_options_free(options: *mut rmmap_options) {
    crate::boundary::guard((), || {
        if !options.is_null() {
            // SAFETY: made by Box::into_raw in rmmap_options_new, freed once.
            drop(unsafe { Box::from_raw(options) });
        }
    })
}

/// Connects over TLS, trusting only the certificate authority in the PEM
/// file at `ca_file` (read now). The server's certificate must name the
/// host of the address (see `rmmap_options_set_tls_name`).
///
/// Ownership: `ca_file` is only read during the call.
///
/// # Safety
/// `options` comes from `rmmap_options_new`; `ca_file` is a NUL-terminated
/// string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_options_set_tls_ca_file(
    options: *mut rmmap_options,
    ca_file: *const c_char,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        let (o, path) = unsafe { (options_mut(options)?, c_str(ca_file, "ca_file")?) };
        o.tls_ca_file(path)
    })
}

/// Connects over TLS, trusting the operating system's certificate
/// authorities.
///
/// # Safety
/// `options` comes from `rmmap_options_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_options_set_tls_system_roots(
    options: *mut rmmap_options,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        let o = unsafe { options_mut(options)? };
        o.tls = Some(ClientTls::from_system_roots().map_err(config_failure)?);
        Ok(())
    })
}

/// Checks the server's certificate against `name` instead of the host
/// part of the address. Set the trust (CA file or system roots) first.
///
/// Ownership: `name` is only read during the call.
///
/// # Safety
/// `options` comes from `rmmap_options_new`; `name` is a NUL-terminated
/// string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_options_set_tls_name(
    options: *mut rmmap_options,
    name: *const c_char,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        let (o, name) = unsafe { (options_mut(options)?, c_str(name, "name")?) };
        o.tls_name(name)
    })
}

/// Authenticates with the token file at `token_file` (one line,
/// `NAME SECRET_HEX`; read now). Use it with TLS: see the README's
/// "Secure deployment".
///
/// Ownership: `token_file` is only read during the call.
///
/// # Safety
/// `options` comes from `rmmap_options_new`; `token_file` is a
/// NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_options_set_token_file(
    options: *mut rmmap_options,
    token_file: *const c_char,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        let (o, path) = unsafe { (options_mut(options)?, c_str(token_file, "token_file")?) };
        o.token_file(path)
    })
}

/// Connecting plus the handshake must finish within `ms` milliseconds
/// (default 10,000), else `rmmap_connect` fails.
///
/// # Safety
/// `options` comes from `rmmap_options_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_options_set_connect_timeout_ms(
    options: *mut rmmap_options,
    ms: u64,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        unsafe { options_mut(options)? }.connect_timeout(ms);
        Ok(())
    })
}

/// Operations fail with `RMMAP_DISCONNECTED` once the client has been
/// disconnected for `ms` milliseconds (default 30,000); the client keeps
/// reconnecting. `0` waits forever.
///
/// # Safety
/// `options` comes from `rmmap_options_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_options_set_give_up_ms(
    options: *mut rmmap_options,
    ms: u64,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        unsafe { options_mut(options)? }.give_up(ms);
        Ok(())
    })
}

/// # Safety
/// `p` is NULL or a live `rmmap_options` not used by another thread.
unsafe fn options_mut<'a>(p: *mut rmmap_options) -> Result<&'a mut rmmap_options, Failure> {
    // SAFETY: the caller's contract.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::invalid("options is NULL"))
}

/// Connects to the server at `addr` (`"host:port"`) and completes the
/// handshake; later losses of the connection are repaired in the
/// background (sessions resume, requests apply exactly once). `options`
/// may be NULL for the defaults.
///
/// `addr` may also list the members of a cluster, `"host:port,host:port"`
/// (docs/CLUSTER.md): the client connects to the first that answers, and a
/// map or set-length that a member sends on (`moved`) goes to the member
/// that owns the file, on one connection per member. A byte mapping
/// follows its file when the cluster moves it: after a planned move
/// nothing is reported; after its member died, one call on the mapping
/// fails with `RMMAP_SESSION_LOST` naming the writes that member had not
/// synced, and the next ones go to the new owner. A memory mapping
/// (`RMMAP_MAP_MEMORY`) moves the same way, at the same address: after a
/// member died, one access raises SIGBUS (`SI_QUEUE`) for the lost writes,
/// and retried it reads the new owner's bytes.
///
/// On success `*client` is a new client. Ownership: the caller owns it and
/// must end it with `rmmap_close`; `addr` and `options` are only read
/// during the call (free the options when you like).
///
/// # Safety
/// `addr` is a NUL-terminated string; `options` is NULL or from
/// `rmmap_options_new`; `client` is valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_connect(
    addr: *const c_char,
    options: *const rmmap_options,
    client: *mut *mut rmmap_client,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        let addr = unsafe { c_str(addr, "addr")? };
        // SAFETY: the caller's contract.
        let defaults = rmmap_options::default();
        let options = match unsafe { options.as_ref() } {
            Some(o) => o,
            None => &defaults,
        };
        if client.is_null() {
            return Err(Failure::invalid("client is NULL"));
        }
        let c = block_on(options.connect(addr))??;
        let handle = Box::into_raw(Box::new(rmmap_client {
            client: c,
            pid: std::process::id(),
        }));
        // SAFETY: checked not NULL; the caller vouches it is writable.
        unsafe { put(client, handle, "client") }
    })
}

/// Writes back everything dirty, ends the session, closes the connection
/// and frees `client`. Mappings made through it stay allocated (their
/// operations fail with `RMMAP_CLOSED`) until `rmmap_unmap` frees them.
///
/// Ownership: takes `client`, which is freed even when an error is
/// returned (the error says the write-back or the goodbye failed). NULL is
/// ignored.
///
/// # Safety
/// `client` is NULL or from `rmmap_connect`, not yet closed, and no other
/// thread uses it during or after the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_close(client: *mut rmmap_client) -> rmmap_error {
    status(|| {
        if client.is_null() {
            return Ok(());
        }
        // SAFETY: made by Box::into_raw in rmmap_connect, freed once.
        let c = unsafe { Box::from_raw(client) };
        if let Err(e) = check_same_process(c.pid) {
            // The parent's driver is not here: leave it all be.
            std::mem::forget(c);
            return Err(e);
        }
        Ok(block_on(c.client.close())??)
    })
}

/// Sets the length of the file at `path` (relative to the export root) to
/// `len` bytes, truncating it or extending it with zeros; with `create`
/// true, creates it if missing.
///
/// Ownership: `path` is only read during the call.
///
/// # Safety
/// `client` is from `rmmap_connect`; `path` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_set_len(
    client: *const rmmap_client,
    path: *const c_char,
    len: u64,
    create: bool,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        let (c, path) = unsafe { (handle(client, "client")?.get()?, c_str(path, "path")?) };
        block_on(c.set_len(path, len, create))??;
        Ok(())
    })
}
