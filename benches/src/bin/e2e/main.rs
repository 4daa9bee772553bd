//! The end-to-end benchmark of rmmap against the NBD peer and the raw TCP
//! limit (issue 8). One command runs everything and regenerates
//! `docs/BENCHMARKS.md` and `docs/bench/*.png`:
//!
//! ```text
//! cargo run --release -p rmmap-benches --bin e2e             # full run, writes the docs
//! cargo run --release -p rmmap-benches --bin e2e -- --quick  # small sizes, seconds (CI)
//! ```
//!
//! Server and clients are separate processes on loopback: this binary
//! re-executes itself as `e2e role ...` (an rmmap server of either
//! transport, a workload's client, the raw TCP source, sink, echo and ping);
//! the NBD peer is `qemu-nbd` with `nbdcopy` and `nbdsh`. Every client run
//! is a new process, so its cache starts empty; the server's files are in
//! the OS page cache (written just before). `docs/BENCHMARKS.md` says what
//! each workload measures exactly.

mod cli;
mod nbd;
mod plan;
mod plot;
mod proc;
mod relay;
mod remote;
mod report;
mod roles;
mod stats;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of the orchestrator (and, hidden, of the child roles).
#[derive(Debug, Parser)]
#[command(about = "End-to-end benchmark of rmmap against NBD and raw TCP")]
struct Cli {
    #[command(subcommand)]
    child: Option<Child>,
    /// Small sizes and one run: seconds, only to check the harness works.
    #[arg(long)]
    quick: bool,
    /// Print the results; do not write docs/BENCHMARKS.md or the plots.
    #[arg(long)]
    no_write: bool,
    /// Runs of each measurement (the median is reported). Default 3, or 1 with --quick.
    #[arg(long)]
    runs: Option<usize>,
    /// Only these parts, comma-separated: raw, nbd, w1 ... w7, cli (rmmap
    /// cat/get/put against nbdcopy), relay (the same through the delaying
    /// relay at each RTT).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these transports, comma-separated: tokio, mio.
    #[arg(long, value_delimiter = ',', default_value = "tokio,mio")]
    transports: Vec<String>,
    /// Where BENCHMARKS.md and bench/ go. Default: the workspace's docs/.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Work directory for the exported files. Default: a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Child {
    /// A child process's role (used by the orchestrator itself).
    #[command(hide = true)]
    Role {
        #[command(subcommand)]
        role: roles::Role,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Child::Role { role }) = cli.child {
        return match roles::run(role) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("e2e role: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let out = cli
        .out
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs"));
    let settings = plan::Settings::new(cli.quick, cli.runs, cli.only, cli.transports);
    if let Some(part) = settings.unknown_part() {
        eprintln!(
            "e2e: no part named {part:?}; --only takes {}",
            plan::PARTS.join(", ")
        );
        return ExitCode::FAILURE;
    }
    match plan::run(&settings, cli.dir) {
        Ok(results) => {
            let md = report::render(&settings, &results);
            println!("{}", report::summary(&results));
            if !cli.no_write {
                if let Err(e) = report::write(&out, &md).and_then(|()| plot::all(&out, &results)) {
                    eprintln!("e2e: cannot write the report: {e}");
                    return ExitCode::FAILURE;
                }
                println!("e2e: wrote {}", out.join("BENCHMARKS.md").display());
            }
            if results.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                for f in &results.failures {
                    eprintln!("e2e: FAILED: {f}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("e2e: {e}");
            ExitCode::FAILURE
        }
    }
}
