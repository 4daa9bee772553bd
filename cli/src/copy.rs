//! `rmmap cat`, `rmmap get` and `rmmap put`: copy bytes between a remote
//! file and stdout or a local file, a chunk at a time.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread::JoinHandle;

use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rmmap_core::protocol::Chunks;
use rmmap_tokio::{Access, ClusterClient, MapOptions, OpError};

use crate::remote::members;
use crate::secure::ClientSecurity;
use crate::{CliError, Context};

/// Bytes moved per read or write.
const CHUNK: u64 = 1 << 20;

/// How many chunks the local file's side of a copy may run ahead of the
/// remote side (reading) or behind it (writing).
const LOCAL_AHEAD: usize = 4;

/// A byte range of a remote file.
#[derive(Args, Debug)]
pub(crate) struct Range {
    /// Start at this byte of the remote file.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Copy this many bytes (default: to the end of the file).
    #[arg(long)]
    len: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct CatArgs {
    /// The server, host:port, or a cluster's members, host:port,host:port,...
    addr: String,
    /// The file, relative to the server's root.
    path: String,
    #[command(flatten)]
    range: Range,
    #[command(flatten)]
    security: ClientSecurity,
}

#[derive(Args, Debug)]
pub(crate) struct GetArgs {
    /// The server, host:port, or a cluster's members, host:port,host:port,...
    addr: String,
    /// The remote file, relative to the server's root.
    path: String,
    /// The local file to write (created or truncated).
    local: PathBuf,
    #[command(flatten)]
    range: Range,
    #[command(flatten)]
    security: ClientSecurity,
}

#[derive(Args, Debug)]
pub(crate) struct PutArgs {
    /// The local file to read.
    local: PathBuf,
    /// The server, host:port, or a cluster's members, host:port,host:port,...
    addr: String,
    /// The remote file, relative to the server's root (created, with its
    /// directories, if missing).
    path: String,
    /// Write at this byte of the remote file and keep the rest of it
    /// (default: replace the whole file).
    #[arg(long)]
    offset: Option<u64>,
    #[command(flatten)]
    security: ClientSecurity,
}

pub(crate) async fn cat(a: CatArgs) -> Result<ExitCode, CliError> {
    let client = a.security.connect_tokio(&members(&a.addr)).await?;
    let mut out = download(
        &client,
        &a.path,
        &a.range,
        (std::io::stdout(), "to stdout"),
        false,
    )
    .await?;
    out.flush().context(|| "writing to stdout".into())?;
    let _ = client.close().await;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn get(a: GetArgs) -> Result<ExitCode, CliError> {
    let client = a.security.connect_tokio(&members(&a.addr)).await?;
    let file =
        std::fs::File::create(&a.local).context(|| format!("creating {}", a.local.display()))?;
    let out = (std::io::BufWriter::new(file), &*a.local.to_string_lossy());
    let mut out = download(&client, &a.path, &a.range, out, true).await?;
    out.flush()
        .context(|| format!("writing {}", a.local.display()))?;
    let _ = client.close().await;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn put(a: PutArgs) -> Result<ExitCode, CliError> {
    let file =
        std::fs::File::open(&a.local).context(|| format!("opening {}", a.local.display()))?;
    let len = file
        .metadata()
        .context(|| format!("reading {}", a.local.display()))?
        .len();
    let client = a.security.connect_tokio(&members(&a.addr)).await?;
    let offset = match a.offset {
        Some(o) => o,
        None => {
            client
                .set_len(&a.path, len, true)
                .await
                .context(|| format!("creating {}", a.path))?;
            0
        }
    };
    if len > 0 {
        let end = offset.checked_add(len).ok_or_else(|| CliError::Op {
            context: format!("writing {}", a.path),
            source: Box::new(OpError::OutOfRange {
                offset,
                len,
                mapping_len: 0,
            }),
        })?;
        let opts = MapOptions {
            access: Access::ReadWrite,
            create: true,
        };
        let m = client
            .map_with(&a.path, offset..end, opts)
            .await
            .context(|| format!("mapping {}", a.path))?;
        let bar = progress(len);
        let mut chunks = spawn_reader(file, len);
        let mut pos = 0;
        while pos < len {
            let chunk = match chunks.recv().await {
                Some(read) => read,
                None => Err(std::io::ErrorKind::BrokenPipe.into()),
            }
            .context(|| format!("reading {}", a.local.display()))?;
            let n = chunk.len() as u64;
            m.write_bytes(pos, chunk)
                .await
                .context(|| format!("writing {}", a.path))?;
            pos += n;
            bar.set_position(pos);
        }
        m.sync().await.context(|| format!("syncing {}", a.path))?;
        bar.finish_and_clear();
        // Synced: the close below ends the mapping with the session.
        // Waiting for an unmap's answer would cost a round trip for
        // nothing.
        drop(m);
    }
    client
        .close()
        .await
        .context(|| "closing the connection".into())?;
    Ok(ExitCode::SUCCESS)
}

/// Copies a range of a remote file to `out` (named `out_name` in an error
/// of it), and gives `out` back to be flushed.
async fn download<W: Write + Send + 'static>(
    client: &ClusterClient,
    path: &str,
    range: &Range,
    (out, out_name): (W, &str),
    show_progress: bool,
) -> Result<W, CliError> {
    let len = match range.len {
        Some(l) => l,
        None => {
            let file_len = remote_len(client, path).await?;
            file_len
                .checked_sub(range.offset)
                .ok_or_else(|| CliError::Op {
                    context: format!("reading {path}"),
                    source: Box::new(OpError::OutOfRange {
                        offset: range.offset,
                        len: 0,
                        mapping_len: file_len,
                    }),
                })?
        }
    };
    if len == 0 {
        return Ok(out);
    }
    let end = range.offset.saturating_add(len);
    let m = client
        .map(path, range.offset..end, Access::ReadOnly)
        .await
        .context(|| format!("mapping {path}"))?;
    let bar = if show_progress {
        progress(len)
    } else {
        ProgressBar::hidden()
    };
    let (chunks, writer) = spawn_writer(out);
    let mut pos = 0;
    while pos < len {
        let n = CHUNK.min(len - pos);
        let slices = m
            .read_slices(pos, n)
            .await
            .context(|| format!("reading {path}"))?;
        if chunks.send(slices).await.is_err() {
            // The writer stopped on an error: reported below.
            break;
        }
        pos += n;
        bar.set_position(pos);
    }
    drop(chunks);
    let out = writer
        .join()
        .expect("the writer thread does not panic")
        .context(|| format!("writing {out_name}"))?;
    bar.finish_and_clear();
    // Read-only: the caller's close ends the mapping with the session (its
    // unmap goes out without anyone waiting a round trip for it).
    drop(m);
    Ok(out)
}

/// The local side of a download on a thread of its own: chunks sent to it
/// are written to `out`, at most [`LOCAL_AHEAD`] behind. A blocking write
/// on the runtime would hold up the connection's driver (a worker blocked
/// in `write` is one that cannot run it), and on a thread the writing of
/// one chunk overlaps the fetching of the next. The thread ends, giving
/// `out` back, when the sender is dropped, or at the first error.
fn spawn_writer<W: Write + Send + 'static>(
    mut out: W,
) -> (
    tokio::sync::mpsc::Sender<Vec<Bytes>>,
    JoinHandle<std::io::Result<W>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(LOCAL_AHEAD);
    let thread = std::thread::spawn(move || {
        while let Some(slices) = rx.blocking_recv() {
            write_all_vectored(&mut out, &slices)?;
        }
        Ok(out)
    });
    (tx, thread)
}

/// The local side of an upload on a thread of its own: `len` bytes of
/// `file` read a chunk at a time, at most [`LOCAL_AHEAD`] ahead of the
/// remote side (for the same reasons as [`spawn_writer`]). A read that
/// fails, or finds the file shorter than `len`, is the last item.
fn spawn_reader(
    mut file: std::fs::File,
    len: u64,
) -> tokio::sync::mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(LOCAL_AHEAD);
    std::thread::spawn(move || {
        // Chunks cut from buffers reused once the client's cache has let
        // go of their pages: fresh memory costs a page fault per 4 KiB.
        let mut chunks = Chunks::default();
        let mut pos = 0;
        while pos < len {
            let n = CHUNK.min(len - pos);
            let read = chunks.fill(n as usize, |buf| file.read_exact(buf));
            let failed = read.is_err();
            if tx.blocking_send(read).is_err() || failed {
                return;
            }
            pos += n;
        }
    });
    rx
}

/// Writes every byte of `parts`, in order, with as few `writev` calls as
/// the output takes (the pages of a read go out without being joined).
fn write_all_vectored(out: &mut impl Write, parts: &[Bytes]) -> std::io::Result<()> {
    const MAX_SLICES: usize = 1024;
    let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(parts.len().min(MAX_SLICES));
    for group in parts.chunks(MAX_SLICES) {
        slices.clear();
        slices.extend(group.iter().map(|p| std::io::IoSlice::new(p)));
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match out.write_vectored(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The length of a remote file, learned by mapping its first byte (an
/// empty file cannot be mapped, which tells as much). The probe's unmap
/// goes out with the next request, not a round trip of its own.
async fn remote_len(client: &ClusterClient, path: &str) -> Result<u64, CliError> {
    match client.map(path, 0..1, Access::ReadOnly).await {
        Ok(m) => Ok(m.file_len()),
        Err(e) if e.kind() == "out_of_range" => Ok(0),
        Err(e) => Err(CliError::Op {
            context: format!("opening {path}"),
            source: Box::new(e),
        }),
    }
}

/// A progress bar on a terminal, nothing otherwise.
fn progress(len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}
