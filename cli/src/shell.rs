//! `rmmap shell`: a scriptable client over one connection (one per member
//! of a cluster).
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
//! unmap ID                   ->  ok      (syncs what it wrote first)
//! quit                       ->  ok      (syncs and closes, then exit 0;
//!                                         EOF does the same; a failed
//!                                         sync: err ..., then exit 1)
//! any failure                ->  err KIND MESSAGE
//! ```
//!
//! When the server lost writes of a mapping (a crash before they were
//! synced, a lease that ran out), the next command on that mapping answers
//! `err session_lost MESSAGE`, naming the file pages lost, once; the
//! mapping then goes on with the server's bytes (`read` shows them, `write`
//! and `sync` work). If no command heard it, `unmap ID` (or `quit`) answers
//! with that error instead of `ok`.
//!
//! PATH is one word (no spaces). A failed command never ends the shell:
//! whatever the numbers, a range is checked (by the client library) before
//! anything is allocated for it, and a line longer than [`MAX_LINE`] bytes
//! is answered `err bad_command` without being kept. `--transport mio` runs
//! the same grammar over rmmap-mio's blocking client instead of
//! rmmap-tokio's (see `remote.rs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rmmap_tokio::{Access, MapOptions, OpError};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::CliError;
use crate::remote::{Remote, RemoteMapping, Transport};
use crate::secure::ClientSecurity;

#[derive(Args, Debug)]
pub(crate) struct ShellArgs {
    /// The server, host:port, or a cluster's members, host:port,host:port,...
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

/// The longest line the shell reads: 16 MiB, a write of 8 MiB of hex. A
/// longer one is answered `err bad_command` and skipped, never kept.
pub(crate) const MAX_LINE: usize = 16 << 20;

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (its newline included) is in the buffer.
    Read,
    /// The line was longer than the limit; it was skipped to its end.
    TooLong,
    /// End of input.
    End,
}

/// Reads one line into `buf` (cleared first), keeping at most `max` bytes
/// of it: a longer line is consumed to its newline and dropped.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::End,
                (false, false) => Line::Read,
            });
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long && buf.len() + take <= max {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            too_long = true;
            buf.clear();
        }
        r.consume(take);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Read });
        }
    }
}

/// The longest `quit` (or the end of input) waits for the close.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

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
                // A mapping whose data the server's disk refused stays, to
                // be unmapped again once it has room; one whose loss no
                // command had heard yet is gone (the error says what was
                // lost).
                if !matches!(r, Err(OpError::Server { .. })) {
                    self.mappings.remove(&id);
                }
                r?;
                Ok(String::new())
            }
            Command::Quit => {
                self.mappings.clear();
                self.client.close_within(CLOSE_LIMIT).await?;
                Ok(String::new())
            }
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
    let (mut quit_done, mut quit_failed) = (false, false);
    loop {
        let too_long = match read_line(&mut stdin, &mut raw, MAX_LINE).await {
            Ok(Line::Read) => false,
            Ok(Line::TooLong) => true,
            Ok(Line::End) => break,
            Err(e) => {
                eprintln!("rmmap: reading stdin: {e}");
                break;
            }
        };
        let (line, outcome, is_read, quit) = match std::str::from_utf8(&raw) {
            _ if too_long => (
                "",
                Err(Failure::bad(format!(
                    "the line is longer than {MAX_LINE} bytes; write less at a time"
                ))),
                false,
                false,
            ),
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
            quit_done = true;
            quit_failed = outcome.is_err();
            break;
        }
    }
    if quit_failed {
        return Ok(ExitCode::FAILURE);
    }
    // End of input: write back and sync what was written and end the
    // session, but never hang on a server that is gone.
    shell.mappings.clear();
    if !quit_done && let Err(e) = shell.client.close_within(CLOSE_LIMIT).await {
        eprintln!("rmmap: {e}");
        return Ok(ExitCode::FAILURE);
    }
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

    use proptest::prelude::*;

    /// Numbers a hostile or careless user types: small ones, ones just
    /// past 32 bits, and ones at the very top of u64.
    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..10_000,
            (1u64 << 32) - 2..(1u64 << 32) + 2,
            Just(1_000_000_000_000u64),
            u64::MAX - 10..=u64::MAX,
            any::<u64>(),
        ]
    }

    proptest! {
        /// Whatever a line says, parsing it answers (a command or a
        /// `bad_command`), and never panics.
        #[test]
        fn parsing_any_line_never_panics(line in "\\PC{0,80}") {
            let _ = parse(&line);
        }

        /// Numbers up to u64::MAX are taken exactly, wherever they stand.
        #[test]
        fn numbers_near_u64_max_parse_exactly(id in number(), offset in number(), len in number()) {
            let (read, map, write) = (
                format!("read {id} {offset} {len}"),
                format!("map f {offset} {len} rw"),
                format!("write {id} {offset} 00ff"),
            );
            prop_assert_eq!(parse(&read).unwrap(), Command::Read { id, offset, len });
            prop_assert_eq!(
                parse(&map).unwrap(),
                Command::Map { path: "f", offset, len, access: Access::ReadWrite }
            );
            prop_assert_eq!(
                parse(&write).unwrap(),
                Command::Write { id, offset, data: vec![0, 255] }
            );
        }

        /// One past u64::MAX, or a sign, is a `bad_command` that says so.
        #[test]
        fn numbers_past_u64_are_refused(extra in 0u64..1000) {
            let too_big = format!("{}{}", u64::MAX, extra);
            let line = format!("read 1 {too_big} 1");
            let f = parse(&line).unwrap_err();
            prop_assert_eq!(f.kind, "bad_command");
            prop_assert!(f.message.contains("decimal"), "{}", f.message);
        }

        /// Every answer is exactly one line.
        #[test]
        fn every_answer_is_one_line(message in "\\PC{0,40}", ok in any::<bool>()) {
            let r = if ok { Ok(message.clone()) } else { Err(Failure::bad(message.clone())) };
            prop_assert!(!response(&r, true).contains('\n'));
            prop_assert!(!response(&r, true).contains('\r'));
        }

        /// Lines up to the limit are read whole; a longer one is skipped to
        /// its end and reported, and the buffer never holds more than the
        /// limit.
        #[test]
        fn lines_longer_than_the_limit_are_skipped_not_kept(
            lens in proptest::collection::vec(0usize..200, 1..8),
            max in 1usize..120,
        ) {
            let mut input = Vec::new();
            for (i, n) in lens.iter().enumerate() {
                input.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, *n));
                input.push(b'\n');
            }
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut reader = &input[..];
            let mut buf = Vec::new();
            for (i, n) in lens.iter().enumerate() {
                let got = rt.block_on(read_line(&mut reader, &mut buf, max)).unwrap();
                prop_assert!(buf.len() <= max);
                if *n < max {
                    prop_assert_eq!(got, Line::Read);
                    prop_assert_eq!(buf.len(), n + 1);
                    prop_assert!(buf[..*n].iter().all(|b| *b == b'a' + (i % 26) as u8));
                } else {
                    prop_assert_eq!(got, Line::TooLong);
                }
            }
            prop_assert_eq!(rt.block_on(read_line(&mut reader, &mut buf, max)).unwrap(), Line::End);
        }
    }
}
