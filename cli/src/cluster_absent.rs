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

/// `rmmap serve --cluster ...` (not built in): the flags are accepted, to
/// be refused with a way out.
#[derive(Args, Debug)]
pub(crate) struct ServeClusterArgs {
    /// Not in this build: serving as a cluster member needs
    /// `--features cluster`. (Every flag of a member, in one.)
    #[arg(
        long,
        hide = true,
        aliases = [
            "advertise",
            "node-id",
            "shards",
            "cluster-prefix",
            "cluster-lease-ms",
            "cluster-margin-ms",
        ],
    )]
    cluster: Vec<String>,
}

/// A cluster member: none in this build.
pub(crate) enum Member {}

impl ServeClusterArgs {
    pub(crate) fn requested(&self) -> bool {
        !self.cluster.is_empty()
    }

    pub(crate) async fn member(
        &self,
        _bound: std::net::SocketAddr,
        _client_lease: std::time::Duration,
    ) -> Result<Option<Member>, CliError> {
        if self.requested() {
            return Err(not_built_in());
        }
        Ok(None)
    }
}

impl Member {
    pub(crate) fn apply(
        self,
        _core: &mut rmmap_core::server::ServerConfig,
        _options: &mut rmmap_tokio::ServeOptions,
    ) {
        match self {}
    }
}

pub(crate) async fn run(_a: ClusterArgs) -> Result<ExitCode, CliError> {
    Err(not_built_in())
}

fn not_built_in() -> CliError {
    CliError::Cluster(
        "this rmmap was built without cluster support: build it with \
         `cargo build --release -p rmmap-cli --features cluster` (needs protoc, \
         Debian: protobuf-compiler)"
            .into(),
    )
}
