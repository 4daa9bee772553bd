//! `rmmap cluster ...` in a build without the `cluster` feature: it says how
//! to get one instead of failing to parse.

use std::process::ExitCode;

use clap::Args;

use crate::CliError;

/// `rmmap cluster ...` (not built in).
#[derive(Args, Debug)]
pub(crate) struct ClusterArgs {
    /// Whatever was asked.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub(crate) async fn run(_a: ClusterArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Cluster(
        "this rmmap was built without cluster support: build it with \
         `cargo build --release -p rmmap-cli --features cluster` (needs protoc, \
         Debian: protobuf-compiler)"
            .into(),
    ))
}
