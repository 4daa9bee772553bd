//! The child processes: an rmmap server (either transport), the raw TCP
//! servers and clients that give the physical limit, and the entry that
//! runs a workload's client side. Each prints `ready ADDR` (servers) or one
//! `result ...` line (clients) on stdout; the orchestrator reads them.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::remote::{Mio, Tokio, Transport};
use crate::stats::{Metrics, mib_s, quantile, result_line, us};
use crate::workloads::{self, CHUNK, Params};

/// Which client library or server implementation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    Tokio,
    Mio,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Tokio => "tokio",
            Kind::Mio => "mio",
        }
    }
}

/// The roles a child process can play.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Role {
    /// An rmmap server over `root` on a free loopback port, until stdin closes.
    Serve {
        #[arg(long, value_enum)]
        transport: Kind,
        #[arg(long)]
        root: PathBuf,
    },
    /// A workload's client side.
    Client {
        #[arg(long, value_enum)]
        transport: Kind,
        #[arg(long)]
        workload: String,
        #[command(flatten)]
        params: Params,
    },
    /// Raw TCP: accept one connection and send it `bytes` bytes.
    RawSource {
        #[arg(long)]
        bytes: u64,
    },
    /// Raw TCP: read everything from `addr`; report MiB/s.
    RawSink {
        #[arg(long)]
        addr: String,
    },
    /// Raw TCP: answer each 4-byte request `n` with `n` bytes, until stdin closes.
    RawEcho,
    /// Raw TCP: `count` request/response round trips, small and 4 KiB.
    RawPing {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        count: usize,
    },
    /// The delaying relay in front of `to`, until stdin closes (relay.rs).
    Relay {
        #[arg(long)]
        to: String,
        /// Each byte's delay in each direction, µs.
        #[arg(long)]
        one_way_us: u64,
    },
}

/// Runs a child role; the exit status says whether it worked.
pub(crate) fn run(role: Role) -> Result<(), String> {
    match role {
        Role::Serve { transport, root } => serve(transport, root),
        Role::Client {
            transport,
            workload,
            params,
        } => {
            let m = match transport {
                Kind::Tokio => client::<Tokio>(&workload, params)?,
                Kind::Mio => client::<Mio>(&workload, params)?,
            };
            println!("{}", result_line(&m));
            Ok(())
        }
        Role::RawSource { bytes } => raw_source(bytes),
        Role::RawSink { addr } => raw_sink(&addr),
        Role::RawEcho => raw_echo(),
        Role::RawPing { addr, count } => raw_ping(&addr, count),
        Role::Relay { to, one_way_us } => {
            crate::relay::serve(&to, Duration::from_micros(one_way_us))
        }
    }
}

fn client<T: Transport>(workload: &str, p: Params) -> Result<Metrics, String> {
    match workload {
        "seq-read" => T::block_on(workloads::seq_read::<T>(p)),
        "seq-write" => T::block_on(workloads::seq_write::<T>(p)),
        "rand-read" => T::block_on(workloads::rand_read::<T>(p)),
        "cache-hit" => T::block_on(workloads::cache_hit::<T>(p)),
        "handover" => T::block_on(workloads::handover::<T>(p)),
        "disjoint" => T::block_on(workloads::disjoint::<T>(p)),
        "idle" => workloads::idle(p),
        "big-read" => T::block_on(workloads::big_read::<T>(p)),
        other => Err(format!("no workload {other:?}")),
    }
}

/// Waits until stdin reaches its end (the orchestrator closed it or died).
pub(crate) fn wait_for_stdin_eof() {
    for _ in std::io::stdin().lock().lines() {}
}

fn serve(kind: Kind, root: PathBuf) -> Result<(), String> {
    // A directory no server exported before: no restart grace needed.
    let config = rmmap_tokio::ServerConfig::new(&root).restart_grace(Some(Duration::ZERO));
    let ready = |addr: std::net::SocketAddr| {
        println!("ready {addr}");
        let _ = std::io::stdout().flush();
    };
    match kind {
        Kind::Tokio => {
            let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            rt.block_on(async {
                let server = rmmap_tokio::Server::bind("127.0.0.1:0", config)
                    .await
                    .map_err(|e| e.to_string())?;
                ready(server.local_addr());
                tokio::task::spawn_blocking(wait_for_stdin_eof)
                    .await
                    .map_err(|e| e.to_string())?;
                server.shutdown().await.map_err(|e| e.to_string())
            })
        }
        Kind::Mio => {
            let server =
                rmmap_mio::Server::bind("127.0.0.1:0", config).map_err(|e| e.to_string())?;
            ready(server.local_addr());
            wait_for_stdin_eof();
            server.shutdown().map_err(|e| e.to_string())
        }
    }
}

fn listen() -> Result<TcpListener, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    println!("ready {}", l.local_addr().map_err(|e| e.to_string())?);
    let _ = std::io::stdout().flush();
    Ok(l)
}

fn raw_source(bytes: u64) -> Result<(), String> {
    let l = listen()?;
    let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let chunk = vec![7u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    Ok(())
}

fn raw_sink(addr: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) => return Err(e.to_string()),
        }
    }
    let m = Metrics::from([("mib_s".into(), mib_s(total, start.elapsed()))]);
    println!("{}", result_line(&m));
    Ok(())
}

fn raw_echo() -> Result<(), String> {
    let l = listen()?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let reply = vec![1u8; 1 << 16];
                let mut req = [0u8; 4];
                while s.read_exact(&mut req).is_ok() {
                    let n = (u32::from_be_bytes(req) as usize).min(reply.len());
                    if s.write_all(&reply[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    wait_for_stdin_eof();
    Ok(())
}

fn raw_ping(addr: &str, count: usize) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 16];
    let mut round = |n: u32| -> Result<Vec<f64>, String> {
        let mut lat = Vec::with_capacity(count);
        for i in 0..count + count / 10 {
            let t = Instant::now();
            s.write_all(&n.to_be_bytes()).map_err(|e| e.to_string())?;
            s.read_exact(&mut buf[..n as usize])
                .map_err(|e| e.to_string())?;
            if i >= count / 10 {
                lat.push(us(t.elapsed()));
            }
        }
        Ok(lat)
    };
    let mut small = round(16)?;
    let mut page = round(4096)?;
    let m = Metrics::from([
        ("rtt_p50_us".into(), quantile(&mut small, 0.5)),
        ("rtt_p99_us".into(), quantile(&mut small, 0.99)),
        ("rtt4k_p50_us".into(), quantile(&mut page, 0.5)),
    ]);
    println!("{}", result_line(&m));
    Ok(())
}
