//! The `rmmap` command: serve a directory, copy files in and out, explore
//! from a scriptable shell, and run the demo.

#[cfg(feature = "cluster")]
mod cluster;
#[cfg(not(feature = "cluster"))]
#[path = "cluster_absent.rs"]
mod cluster;
mod copy;
mod demo;
mod limits;
mod remote;
mod secure;
mod serve;
mod shell;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Where `rmmap serve` listens unless told otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// Coherent remote memory mapping of files.
#[derive(Parser, Debug)]
#[command(name = "rmmap", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the files under ROOT until Ctrl-C or SIGTERM (then shut down
    /// gracefully: every dirty page recalled, every file synced).
    Serve(serve::ServeArgs),
    /// Write bytes of a remote file to stdout.
    Cat(copy::CatArgs),
    /// Copy a remote file (or a range of it) to a local file.
    Get(copy::GetArgs),
    /// Copy a local file to a remote path (created if missing).
    Put(copy::PutArgs),
    /// Run a server and several clients on loopback that write and read the
    /// same pages at once, and check that every read saw the latest write.
    Demo(demo::DemoArgs),
    /// A scriptable client over one connection: one command per line on
    /// stdin, one response line per command on stdout.
    Shell(shell::ShellArgs),
    /// Look at an rmmap cluster coordinated by etcd (docs/CLUSTER.md).
    Cluster(cluster::ClusterArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rmmap: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve(a) => serve::run(a).await,
            Command::Cat(a) => copy::cat(a).await,
            Command::Get(a) => copy::get(a).await,
            Command::Put(a) => copy::put(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Shell(a) => shell::run(a).await,
            Command::Cluster(a) => cluster::run(a).await,
        }
    });
    // Background tasks (a client's driver) must not keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rmmap: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What can stop a command.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// Both transports report the core's `ConnectError`.
    #[error(transparent)]
    Connect(#[from] rmmap_tokio::ConnectError),
    #[error(transparent)]
    Serve(#[from] rmmap_tokio::ServeError),
    #[error(transparent)]
    MioServe(#[from] rmmap_mio::ServeError),
    #[error(transparent)]
    Credentials(#[from] rmmap_secure::CredentialError),
    #[error(transparent)]
    Tls(#[from] rmmap_secure::TlsSetupError),
    #[error("{context}: {source}")]
    Op {
        context: String,
        // Boxed: an `OpError` (what was lost, page by page) would make every
        // `Result<_, CliError>` as large as it.
        source: Box<rmmap_tokio::OpError>,
    },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Adds what was being done to an error.
trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError>;
}

impl<T> Context<T> for Result<T, rmmap_tokio::OpError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|source| CliError::Op {
            context: what(),
            source: Box::new(source),
        })
    }
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|source| CliError::Io {
            context: what(),
            source,
        })
    }
}
