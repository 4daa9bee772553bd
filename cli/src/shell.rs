//! `rmmap shell`: a scriptable client over one connection.
//!
//! One command per line on stdin, exactly one response line per command on
//! stdout, flushed at once, in order. Blank lines and lines starting with
//! `#` get no response. Numbers are decimal, data is lowercase hex:
//!
//! ```text
//! map PATH OFFSET LEN ro|rw  ->  ok ID
//! read ID OFFSET LEN         ->  ok HEX
//! write ID OFFSET HEX        ->  ok
//! sync ID                    ->  ok
//! unmap ID                   ->  ok
//! quit                       ->  ok      (then exit 0; EOF does the same)
//! any failure                ->  err KIND MESSAGE
//! ```
//!
//! PATH is one word (no spaces). A failed command never ends the shell.
//! `--transport mio` runs the same grammar over rmmap-mio's blocking client
//! instead of rmmap-tokio's (see `remote.rs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rmmap_tokio::{Access, MapOptions, OpError};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::CliError;
use crate::remote::{Remote, RemoteMapping, Transport};
use crate::secure::ClientSecurity;

#[derive(Args, Debug)]
pub(crate) struct ShellArgs {
    /// The server, host:port.
    addr: String,
    /// Read-write maps create missing files and extend short ones to cover
    /// the range.
    #[arg(long)]
    create: bool,
    /// The client library to use.
    #[arg(long, value_enum, default_value_t = Transport::Tokio)]
    transport: Transport,
    #[command(flatten)]
    security: ClientSecurity,
}

/// A parsed command.
#[derive(Debug, PartialEq, Eq)]
enum Command<'a> {
    Map {
        path: &'a str,
        offset: u64,
        len: u64,
        access: Access,
    },
    Read {
        id: u64,
        offset: u64,
        len: u64,
    },
    Write {
        id: u64,
        offset: u64,
        data: Vec<u8>,
    },
    Sync {
        id: u64,
    },
    Unmap {
        id: u64,
    },
    Quit,
}

/// A failed command: `err KIND MESSAGE`.
#[derive(Debug, PartialEq, Eq)]
struct Failure {
    kind: &'static str,
    message: String,
}

impl Failure {
    fn bad(message: impl Into<String>) -> Self {
        Failure {
            kind: "bad_command",
            message: message.into(),
        }
    }
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        let message = match &e {
            // Its Display repeats the kind in front of the server's words.
            OpError::Server { message, .. } => message.clone(),
            other => other.to_string(),
        };
        Failure {
            kind: e.kind(),
            message,
        }
    }
}

fn number(word: Option<&str>, what: &str) -> Result<u64, Failure> {
    let w = word.ok_or_else(|| Failure::bad(format!("missing {what}")))?;
    w.parse()
        .map_err(|_| Failure::bad(format!("{what} must be a decimal number, not {w:?}")))
}

const USAGE: &str = "commands: map PATH OFFSET LEN ro|rw, read ID OFFSET LEN, write ID OFFSET HEX, sync ID, unmap ID, quit";

/// Parses one line (not blank, not a comment).
fn parse(line: &str) -> Result<Command<'_>, Failure> {
    let mut w = line.split_ascii_whitespace();
    let verb = w.next().unwrap_or("");
    let cmd = match verb {
        "map" => {
            let path = w.next().ok_or_else(|| Failure::bad("missing PATH"))?;
            let offset = number(w.next(), "OFFSET")?;
            let len = number(w.next(), "LEN")?;
            let access = match w.next() {
                Some("ro") => Access::ReadOnly,
                Some("rw") => Access::ReadWrite,
                Some(other) => {
                    return Err(Failure::bad(format!(
                        "access must be ro or rw, not {other:?}"
                    )));
                }
                None => return Err(Failure::bad("missing ro|rw")),
            };
            Command::Map {
                path,
                offset,
                len,
                access,
            }
        }
        "read" => Command::Read {
            id: number(w.next(), "ID")?,
            offset: number(w.next(), "OFFSET")?,
            len: number(w.next(), "LEN")?,
        },
        "write" => {
            let id = number(w.next(), "ID")?;
            let offset = number(w.next(), "OFFSET")?;
            let hex = w.next().ok_or_else(|| Failure::bad("missing HEX data"))?;
            let data =
                hex::decode(hex).map_err(|e| Failure::bad(format!("HEX data is not hex: {e}")))?;
            Command::Write { id, offset, data }
        }
        "sync" => Command::Sync {
            id: number(w.next(), "ID")?,
        },
        "unmap" => Command::Unmap {
            id: number(w.next(), "ID")?,
        },
        "quit" => Command::Quit,
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(Failure::bad(format!("unknown command {shown:?}; {USAGE}")));
        }
    };
    if let Some(extra) = w.next() {
        let shown: String = extra.chars().take(40).collect();
        return Err(Failure::bad(format!(
            "unexpected {shown:?} after the command; {USAGE}"
        )));
    }
    Ok(cmd)
}

/// The shell's mappings, by the small integers it hands out.
struct Shell {
    client: Remote,
    create: bool,
    mappings: BTreeMap<u64, RemoteMapping>,
    next_id: u64,
}

impl Shell {
    fn mapping(&self, id: u64) -> Result<&RemoteMapping, Failure> {
        self.mappings.get(&id).ok_or_else(|| Failure {
            kind: "unknown_mapping",
            message: format!("there is no mapping with id {id}"),
        })
    }

    /// Runs one command; `Ok` holds what follows `ok`.
    async fn execute(&mut self, cmd: Command<'_>) -> Result<String, Failure> {
        match cmd {
            Command::Map {
                path,
                offset,
                len,
                access,
            } => {
                let end = offset.checked_add(len).ok_or_else(|| Failure {
                    kind: "out_of_range",
                    message: format!("{offset} + {len} overflows"),
                })?;
                let opts = MapOptions {
                    access,
                    create: self.create && access == Access::ReadWrite,
                };
                let m = self.client.map_with(path, offset..end, opts).await?;
                self.next_id += 1;
                self.mappings.insert(self.next_id, m);
                Ok(self.next_id.to_string())
            }
            Command::Read { id, offset, len } => {
                let b = self.mapping(id)?.read_bytes(offset, len).await?;
                Ok(hex::encode(b))
            }
            Command::Write { id, offset, data } => {
                self.mapping(id)?.write_bytes(offset, data.into()).await?;
                Ok(String::new())
            }
            Command::Sync { id } => {
                self.mapping(id)?.sync().await?;
                Ok(String::new())
            }
            Command::Unmap { id } => {
                let m = self.mapping(id)?.clone();
                let r = m.unmap().await;
                // Gone either way: a failed unmap leaves nothing to retry.
                self.mappings.remove(&id);
                r?;
                Ok(String::new())
            }
            Command::Quit => Ok(String::new()),
        }
    }
}

/// The response line for a command's outcome.
fn response(r: &Result<String, Failure>, is_read: bool) -> String {
    match r {
        Ok(s) if is_read || !s.is_empty() => format!("ok {s}"),
        Ok(_) => "ok".to_owned(),
        Err(f) => format!("err {} {}", f.kind, f.message.replace(['\n', '\r'], " ")),
    }
}

pub(crate) async fn run(a: ShellArgs) -> Result<ExitCode, CliError> {
    let client = Remote::connect(a.transport, &a.addr, &a.security).await?;
    let mut shell = Shell {
        client,
        create: a.create,
        mappings: BTreeMap::new(),
        next_id: 0,
    };
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let n = match stdin.read_until(b'\n', &mut raw).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("rmmap: reading stdin: {e}");
                break;
            }
        };
        if n == 0 {
            break;
        }
        let (line, outcome, is_read, quit) = match std::str::from_utf8(&raw) {
            Err(_) => (
                "",
                Err(Failure::bad("the line is not valid UTF-8")),
                false,
                false,
            ),
            Ok(s) => {
                let line = s.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match parse(line) {
                    Err(f) => (line, Err(f), false, false),
                    Ok(cmd) => {
                        let (is_read, quit) =
                            (matches!(cmd, Command::Read { .. }), cmd == Command::Quit);
                        (line, shell.execute(cmd).await, is_read, quit)
                    }
                }
            }
        };
        tracing::debug!(%line, "shell command");
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{}", response(&outcome, is_read))
            .and_then(|_| out.flush())
            .is_err()
        {
            // Nobody is listening any more.
            return Ok(ExitCode::SUCCESS);
        }
        if quit {
            break;
        }
    }
    // Write back what is dirty and end the session, but never hang on a
    // server that is gone.
    shell.mappings.clear();
    shell.client.close_within(Duration::from_secs(5)).await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_parses_exactly() {
        assert_eq!(
            parse("map dir/f.bin 0 8192 rw").unwrap(),
            Command::Map {
                path: "dir/f.bin",
                offset: 0,
                len: 8192,
                access: Access::ReadWrite
            }
        );
        assert_eq!(
            parse("read 1 10 4").unwrap(),
            Command::Read {
                id: 1,
                offset: 10,
                len: 4
            }
        );
        assert_eq!(
            parse("write 2 0 00ff").unwrap(),
            Command::Write {
                id: 2,
                offset: 0,
                data: vec![0, 255]
            }
        );
        assert_eq!(parse("sync 3").unwrap(), Command::Sync { id: 3 });
        assert_eq!(parse("unmap 3").unwrap(), Command::Unmap { id: 3 });
        assert_eq!(parse("quit").unwrap(), Command::Quit);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (line, needle) in [
            ("frobnicate", "unknown command"),
            ("map f 0 10", "missing ro|rw"),
            ("map f 0 10 wr", "ro or rw"),
            ("map f -1 10 ro", "decimal"),
            ("read 1 0", "missing LEN"),
            ("write 1 0 abc", "not hex"),
            ("write 1 0 zz", "not hex"),
            ("sync", "missing ID"),
            ("quit now", "unexpected"),
        ] {
            let f = parse(line).unwrap_err();
            assert_eq!(f.kind, "bad_command");
            assert!(f.message.contains(needle), "{line}: {}", f.message);
        }
    }

    #[test]
    fn responses_are_one_line() {
        assert_eq!(response(&Ok("3".into()), false), "ok 3");
        assert_eq!(response(&Ok(String::new()), false), "ok");
        assert_eq!(response(&Ok(String::new()), true), "ok ");
        let f = Failure {
            kind: "session_lost",
            message: "a\nb".into(),
        };
        assert_eq!(response(&Err(f), false), "err session_lost a b");
    }
}
