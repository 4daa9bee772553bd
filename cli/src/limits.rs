//! `rmmap serve`'s limits: the flags that bound what clients can make the
//! server hold (their defaults are the libraries' own, so `--help` stays
//! true), and the process's open-file limit, raised at start so that the
//! connection and open-file limits are reached before `accept` runs out of
//! descriptors.

use std::time::Duration;

use clap::Args;
use rmmap_core::server::ServerConfig as CoreConfig;

/// The core's defaults, for the flags' defaults.
fn core() -> CoreConfig {
    CoreConfig::default()
}

/// The adapters' default connection limit (the same in both).
fn default_max_connections() -> u64 {
    rmmap_tokio::ServeOptions::default().max_connections as u64
}

#[derive(Args, Debug)]
pub(crate) struct LimitArgs {
    /// Most client sessions at once; a client beyond it is refused with
    /// `too_many_sessions`.
    #[arg(long, default_value_t = core().max_sessions, value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions: u32,
    /// Most open connections; further ones wait in the listen backlog until
    /// one closes.
    #[arg(long, default_value_t = default_max_connections(), value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Most connections still in their handshake; one beyond it is closed
    /// with `busy`.
    #[arg(long, default_value_t = core().max_handshaking, value_parser = clap::value_parser!(u32).range(1..))]
    max_handshaking: u32,
    /// A connection must complete its handshake within this many
    /// milliseconds, or it is closed with `timeout`.
    #[arg(long, default_value_t = core().handshake_timeout.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    handshake_timeout_ms: u64,
    /// Largest frame accepted from a client after the handshake, in bytes
    /// (at most 67108864); a larger one closes the connection with
    /// `frame_too_large` before its body is read.
    #[arg(long, default_value_t = core().max_frame)]
    max_frame: u32,
    /// Most requests of one session in progress; more get
    /// `too_many_requests`.
    #[arg(long, default_value_t = core().max_inflight, value_parser = clap::value_parser!(u32).range(1..))]
    max_inflight: u32,
    /// Most mappings per session; more get `too_many_mappings`.
    #[arg(long, default_value_t = core().max_mappings, value_parser = clap::value_parser!(u32).range(1..))]
    max_mappings: u32,
    /// Most pages one session may hold; more get `too_many_pages`.
    #[arg(long, default_value_t = core().max_held_pages)]
    max_held_pages: u64,
    /// Most files kept open at once: past it, the least recently used file
    /// nobody is reading or writing is closed, and opened again when needed.
    #[arg(long, default_value_t = core().max_open_files, value_parser = clap::value_parser!(u32).range(1..))]
    max_open_files: u32,
    /// Close a connection whose client takes none of the bytes sent to it
    /// for this many milliseconds (its session lives on until its lease
    /// ends) [default: one lease]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    write_timeout_ms: Option<u64>,
}

impl LimitArgs {
    /// Sets the core's limits. Call before choosing the page size, which
    /// fits the pages per request to the frame limit.
    pub(crate) fn apply(&self, core: &mut CoreConfig) {
        core.max_sessions = self.max_sessions;
        core.max_handshaking = self.max_handshaking;
        core.handshake_timeout = Duration::from_millis(self.handshake_timeout_ms);
        core.max_frame = self.max_frame;
        core.max_inflight = self.max_inflight;
        core.max_mappings = self.max_mappings;
        core.max_held_pages = self.max_held_pages;
        core.max_open_files = self.max_open_files;
    }

    pub(crate) fn tokio_options(&self) -> rmmap_tokio::ServeOptions {
        rmmap_tokio::ServeOptions {
            max_connections: self.max_connections(),
            write_timeout: self.write_timeout(),
            ..Default::default()
        }
    }

    pub(crate) fn mio_options(&self) -> rmmap_mio::ServeOptions {
        rmmap_mio::ServeOptions {
            max_connections: self.max_connections(),
            write_timeout: self.write_timeout(),
            ..Default::default()
        }
    }

    fn max_connections(&self) -> usize {
        usize::try_from(self.max_connections).unwrap_or(usize::MAX)
    }

    fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout_ms.map(Duration::from_millis)
    }

    /// Descriptors the server may need at its limits: a socket per
    /// connection, a descriptor per open file, and some for itself.
    fn descriptors_needed(&self) -> u64 {
        self.max_connections
            .saturating_add(u64::from(self.max_open_files))
            .saturating_add(64)
    }

    /// Raises the open-file limit and says in the log what it is, and
    /// whether it is below what the limits above may need (then `accept`
    /// fails with EMFILE first; the server backs off and keeps serving).
    pub(crate) fn raise_open_file_limit(&self) {
        match raise_nofile() {
            Ok((before, now)) => {
                if now > before {
                    tracing::info!(from = before, to = now, "raised the open-file limit");
                } else {
                    tracing::info!(limit = now, "open-file limit (already the hard limit)");
                }
                let need = self.descriptors_needed();
                if now < need {
                    tracing::warn!(
                        limit = now,
                        need,
                        "the open-file limit is below --max-connections + --max-open-files + 64: \
                         past it, accepting connections and opening files fail until \
                         descriptors are freed (the server backs off and keeps serving); \
                         raise the hard limit (`ulimit -Hn`) or lower the flags"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
}

/// Sets the soft RLIMIT_NOFILE to the hard one (or, when the hard one is
/// unlimited, to the kernel's `nr_open`). Returns the soft limit before and
/// after. (`rlim_t` is `u64` on Linux and macOS.)
#[allow(unsafe_code)]
fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we pass, which
    // lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = r.rlim_cur;
    let target = if r.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        r.rlim_max
    };
    if before >= target {
        return Ok((before, before));
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: r.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((before, target))
}
