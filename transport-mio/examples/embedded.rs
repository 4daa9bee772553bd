//! An rmmap client inside a mio loop that the program owns: the example's
//! own `Poll` drives an [`EmbeddedClient`] that maps a file, writes to it,
//! reads it back and syncs, with no thread or runtime behind the client.
//!
//! ```text
//! cargo run -p rmmap-mio --example embedded            # starts its own server
//! cargo run -p rmmap-mio --example embedded -- HOST:PORT  # uses a running one
//! ```
//!
//! Without an address it starts an [`rmmap_mio::Server`] on 127.0.0.1:0 (on
//! its own thread, over a temporary directory) and talks to that.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Events, Poll, Token};
use rmmap_mio::{
    ClientConfig, ClientEvent, Completion, EmbeddedClient, MapOptions, Mapped, MappingId, OpError,
    OpId, Pending, Server, ServerConfig,
};

/// The token the program chose for the rmmap client's socket.
const RMMAP: Token = Token(42);
const PATH: &str = "embedded-example.bin";

/// What the program does, one step at a time, as completions arrive: each
/// step holds the operation it waits for, which knows its result type.
enum Step {
    Mapping(Pending<Mapped>),
    Writing(Pending<()>, MappingId),
    Reading(Pending<Bytes>, MappingId),
    Syncing(Pending<()>),
    Closing(Pending<()>),
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embedded: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // A server, unless one was named: the example must run on its own.
    let mut _dir = None;
    let mut server = None;
    let addr = match std::env::args().nth(1) {
        Some(a) => a,
        None => {
            let dir = tempfile::tempdir()?;
            let config = ServerConfig::new(dir.path()).restart_grace(Some(Duration::ZERO));
            let s = Server::bind("127.0.0.1:0", config)?;
            let a = s.local_addr().to_string();
            println!("started a server on {a}");
            _dir = Some(dir);
            server = Some(s);
            a
        }
    };

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);
    let mut client = EmbeddedClient::new(&addr, ClientConfig::default(), poll.registry(), RMMAP)?;
    // Commands may be issued before the handshake; create the file if new.
    let opts = MapOptions {
        create: true,
        ..MapOptions::read_write()
    };
    let mut step = Step::Mapping(client.map(PATH, 0..8192, opts)?);
    let message = Bytes::from_static(b"hello from a mio loop, across a page boundary");
    let at = 4096 - 10;
    let give_up = Instant::now() + Duration::from_secs(20);

    loop {
        let timeout = client.timeout().map(|t| t.min(Duration::from_secs(1)));
        poll.poll(&mut events, timeout)?;
        for ev in events.iter() {
            // The program's other sources would be handled here.
            client.handle_event(ev);
        }
        client.handle_timeout();
        while let Some(ev) = client.poll_event() {
            if let ClientEvent::Connected { resumed } = ev {
                println!("connected to {addr} (resumed: {resumed})");
            }
        }
        while let Some((op, result)) = client.poll_completion() {
            match advance(&mut client, step, op, result, &message, at)? {
                Some(next) => step = next,
                None => {
                    println!("closed");
                    return finish(server);
                }
            }
        }
        if Instant::now() > give_up {
            return Err("gave up after 20 s".into());
        }
    }
}

fn finish(server: Option<Server>) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(s) = server {
        s.shutdown()?;
        println!("server shut down");
    }
    Ok(())
}

/// Moves to the next step when the current one's operation completes;
/// `None` once the client is closed.
fn advance(
    client: &mut EmbeddedClient,
    step: Step,
    op: OpId,
    result: Result<Completion, OpError>,
    message: &Bytes,
    at: u64,
) -> Result<Option<Step>, Box<dyn std::error::Error>> {
    Ok(Some(match step {
        Step::Mapping(p) if p == op => {
            let mapped = p.finish(result)?;
            println!("mapped {PATH} (file length {})", mapped.file_len);
            let m = mapped.mapping;
            Step::Writing(client.write(m, at, message.clone())?, m)
        }
        Step::Writing(p, m) if p == op => {
            p.finish(result)?;
            println!("wrote {} bytes at offset {at}", message.len());
            Step::Reading(client.read(m, at, message.len() as u64)?, m)
        }
        Step::Reading(p, m) if p == op => {
            let data = p.finish(result)?;
            println!("read back: {:?}", String::from_utf8_lossy(&data));
            if data != *message {
                return Err("read back something else".into());
            }
            Step::Syncing(client.sync(m)?)
        }
        Step::Syncing(p) if p == op => {
            p.finish(result)?;
            println!("synced");
            Step::Closing(client.close()?)
        }
        Step::Closing(p) if p == op => {
            p.finish(result)?;
            return Ok(None);
        }
        other => other,
    }))
}
