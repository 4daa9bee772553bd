//! `rmmap serve`: export a directory, over rmmap-tokio (the default) or
//! rmmap-mio (`--transport mio`); both print the same lines and shut down
//! the same way on Ctrl-C or SIGTERM. With `--cluster` (feature `cluster`,
//! Tokio only) the server is a member of a cluster coordinated by etcd, and
//! a shutdown first hands its shards over.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rmmap_tokio::ServerConfig;

use crate::cluster::ServeClusterArgs;
use crate::limits::LimitArgs;
use crate::remote::Transport;
use crate::secure::ServerSecurity;
use crate::{CliError, Context, DEFAULT_LISTEN};

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// The directory to export; clients name files relative to it.
    root: PathBuf,
    /// The address to listen on (port 0 picks a free port; the chosen
    /// address is printed on stdout).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,
    /// Refuse every write and every read-write mapping.
    #[arg(long)]
    read_only: bool,
    /// Page size in bytes: a power of two from 512 to 1048576.
    #[arg(long, default_value_t = 4096)]
    page_size: u32,
    /// How long a client's session lives without renewal, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    lease_ms: u64,
    /// After starting, grant no write ownership for this long, so that
    /// clients of a previous run have stopped trusting their caches.
    /// Default: what the previous run recorded in the export's
    /// .rmmap-state (nothing for a directory never exported or after a
    /// clean shutdown whose clients confirmed; its longest lease after a
    /// crash). Setting it overrides that record.
    #[arg(long)]
    restart_grace_ms: Option<u64>,
    /// The server implementation: a Tokio runtime, or one mio event loop.
    #[arg(long, value_enum, default_value_t = Transport::Tokio)]
    transport: Transport,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    security: ServerSecurity,
    #[command(flatten)]
    cluster: ServeClusterArgs,
}

pub(crate) async fn run(a: ServeArgs) -> Result<ExitCode, CliError> {
    if a.cluster.requested() && a.transport == Transport::Mio {
        return Err(CliError::Cluster(
            "the mio server cannot be a cluster member (the etcd client needs Tokio): \
             drop --transport mio"
                .into(),
        ));
    }
    a.limits.raise_open_file_limit();
    let mut config = ServerConfig::new(&a.root);
    // Before the page size, which fits the pages per request to the frame.
    a.limits.apply(&mut config.core);
    let config = config
        .read_only(a.read_only)
        .page_size(a.page_size)
        .lease(Duration::from_millis(a.lease_ms))
        .restart_grace(a.restart_grace_ms.map(Duration::from_millis));
    let mut config = config;
    config.core.access = a.security.access_list()?;
    let tls = a.security.server_tls()?;
    let clients = config.core.access.as_ref().map(|l| l.clients.len());
    let read_only = if a.read_only { " read-only" } else { "" };
    let mode = format!("{read_only}{}", a.security.describe(clients));
    let announce = |addr: std::net::SocketAddr| {
        println!("rmmap: serving {}{mode} on {addr}", a.root.display());
        let _ = std::io::stdout().flush();
    };
    match a.transport {
        Transport::Tokio => {
            let mut options = rmmap_tokio::ServeOptions {
                tls,
                ..a.limits.tokio_options()
            };
            // Bound here rather than by `Server::bind_with`: a cluster
            // member advertises the address bound (port 0 included).
            let store = config.open_store().map_err(rmmap_tokio::ServeError::from)?;
            config
                .core
                .validate()
                .map_err(rmmap_tokio::ServeError::from)?;
            let listener = tokio::net::TcpListener::bind(&a.listen)
                .await
                .map_err(|source| rmmap_tokio::ServeError::Bind {
                    addr: a.listen.clone(),
                    source,
                })?;
            let bound = listener
                .local_addr()
                .context(|| format!("cannot read the address bound for {}", a.listen))?;
            if let Some(member) = a.cluster.member(bound, config.core.lease).await? {
                member.apply(&mut config.core, &mut options);
            }
            let server = rmmap_tokio::Server::serve(listener, config.core, store, options)?;
            announce(server.local_addr());
            stop_signal().await;
            shutting_down(a.cluster.requested());
            server.shutdown().await?;
        }
        Transport::Mio => {
            let options = rmmap_mio::ServeOptions {
                tls,
                ..a.limits.mio_options()
            };
            let server = rmmap_mio::Server::bind_with(&a.listen, config, options)?;
            announce(server.local_addr());
            stop_signal().await;
            shutting_down(false);
            // Blocks this (main) thread only; the server has its own.
            server.shutdown()?;
        }
    }
    eprintln!("rmmap: stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

fn shutting_down(member: bool) {
    let leave = if member {
        "handing every shard over, then "
    } else {
        ""
    };
    eprintln!("rmmap: shutting down ({leave}recalling dirty pages, syncing files)");
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
