//! The harness: one [`Client`], the application commands the input gives
//! it, and the drive loop between it and the scripted server.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rmmap_core::Instant;
use rmmap_core::client::{Client, ClientConfig, Completion, Event, MapOptions, MappingId};
use rmmap_core::protocol::*;

use super::script::Script;
use super::{Action, Command, NAME, PATHS, SECRET};

pub(super) struct Harness {
    client: Client,
    pub(super) now: Instant,
    script: Script,
    secret: bool,
    auto_handshake: bool,
    auto_pong: bool,
    reachable: bool,
    open: bool,
    /// Bytes to the client not yet taken (a partial frame).
    to_client: BytesMut,
    mappings: Vec<MappingId>,
}

impl Harness {
    pub(super) fn new(setup: u8) -> Self {
        let secret = setup & 1 != 0;
        let config = ClientConfig {
            name: if secret { NAME.into() } else { String::new() },
            secret: secret.then(|| SECRET.to_vec()),
            max_cached_pages: 24,
            readahead_pages: 4,
            max_pending_ops: 32,
            max_inflight: 8,
            give_up_after: Some(Duration::from_secs(5)),
            ..ClientConfig::default()
        };
        let now = Instant::ZERO;
        let script = Script {
            page_size: if setup & 0x80 != 0 { 4096 } else { 512 },
            epoch: 0x5EED,
            ..Default::default()
        };
        Harness {
            client: Client::new(config, [setup; 32], now),
            now,
            script,
            secret,
            auto_handshake: setup & 0x0e != 0x0e,
            auto_pong: setup & 0x70 != 0x70,
            reachable: true,
            open: false,
            to_client: BytesMut::new(),
            mappings: Vec::new(),
        }
    }

    pub(super) fn act(&mut self, action: &Action) {
        match *action {
            Action::Welcome { status, tweak } => {
                let m = self.script.welcome(status, tweak, self.secret);
                self.deliver(&m);
            }
            Action::Reply { which, how, seed } => {
                let pending: Vec<ReqId> = self.script.pending.keys().copied().collect();
                if !pending.is_empty() {
                    let req = pending[which as usize % pending.len()];
                    let m = self.script.reply(req, how, seed);
                    self.deliver(&m);
                }
            }
            Action::ReplyAll { seed } => {
                let pending: Vec<ReqId> = self.script.pending.keys().copied().collect();
                let mut out = BytesMut::new();
                for req in pending {
                    out.extend_from_slice(&self.script.reply(req, 0, seed));
                }
                self.deliver(&out);
            }
            Action::Revoke {
                recall,
                file,
                first,
                count,
                downgrade,
            } => {
                let handles: Vec<FileHandle> = self.script.handles.values().copied().collect();
                let file = if handles.is_empty() {
                    FileHandle(file as u32)
                } else {
                    handles[file as usize % handles.len()]
                };
                self.script.next_rev += 1;
                let rev = RevId(self.script.next_rev);
                let (first_page, count) = (first as u64 % 24, 1 + count as u32 % 8);
                let m = if recall {
                    Message::Recall(Recall {
                        rev,
                        file,
                        first_page,
                        count,
                        downgrade,
                    })
                } else {
                    Message::Invalidate(Invalidate {
                        rev,
                        file,
                        first_page,
                        count,
                    })
                };
                self.deliver(&m.to_bytes());
            }
            Action::Pong { renewed } => {
                let nonce = self.script.ping.take().unwrap_or(0);
                let m = Message::Pong(Pong {
                    nonce,
                    renewed,
                    rev_acked: RevId(self.script.rev_acked),
                });
                self.deliver(&m.to_bytes());
            }
            Action::Frame { ref message } => self.deliver(&message.to_bytes()),
            Action::Junk { ref bytes } => self.deliver(bytes),
            Action::Command(ref c) => self.command(c),
            Action::Advance { ms } => self.advance(self.now + Duration::from_millis(ms as u64)),
            Action::AdvanceToTimeout => {
                if let Some(t) = self.client.poll_timeout() {
                    self.advance(t.max(self.now));
                }
            }
            Action::Disconnect => {
                if self.open {
                    self.open = false;
                    self.client.handle_disconnected(self.now);
                }
            }
            Action::Reachable { on } => self.reachable = on,
        }
    }

    fn advance(&mut self, to: Instant) {
        self.now = to;
        if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
            self.client.handle_timeout(self.now);
        }
    }

    /// Bytes from the server arrive.
    fn deliver(&mut self, bytes: &[u8]) {
        if crate::tracing() {
            let mut b = BytesMut::from(bytes);
            while let Ok(Some(m)) = decode_frame(&mut b, HARD_MAX_FRAME) {
                eprintln!("    client <- {}", crate::server::brief(&m));
            }
            if !b.is_empty() {
                eprintln!("    client <- {} more bytes", b.len());
            }
        }
        self.to_client.extend_from_slice(bytes);
        self.client.handle_input(self.now, &mut self.to_client);
    }

    fn mapping(&self, i: u8) -> MappingId {
        if self.mappings.is_empty() {
            MappingId(i as u64)
        } else {
            self.mappings[i as usize % self.mappings.len()]
        }
    }

    /// An `(offset, len)` inside the mapping, unless `offset` has its top
    /// bits set (then out of range on purpose).
    fn range(&self, m: MappingId, offset: u16, len: u16) -> (u64, u64) {
        match self.client.mapping_len(m) {
            Some(ml) if offset < 0xF000 => {
                let off = offset as u64 % (ml + 1);
                (off, len as u64 % (ml - off + 1))
            }
            _ => (offset as u64, len as u64),
        }
    }

    fn command(&mut self, c: &Command) {
        let now = self.now;
        // Errors are answers too: the client refused a bad command.
        let _ = match *c {
            Command::Map {
                path,
                offset,
                len,
                write,
                create,
            } => {
                let access = if write {
                    rmmap_core::client::Access::ReadWrite
                } else {
                    rmmap_core::client::Access::ReadOnly
                };
                let path = PATHS[path as usize % PATHS.len()];
                let offset = offset as u64 % 9000;
                let range = offset..offset + len as u64 % 9000;
                self.client
                    .map(now, path, range, MapOptions { access, create })
                    .map(|p| p.id())
            }
            Command::Read {
                mapping,
                offset,
                len,
            } => {
                let m = self.mapping(mapping);
                let (o, n) = self.range(m, offset, len);
                self.client.read(now, m, o, n).map(|p| p.id())
            }
            Command::Write {
                mapping,
                offset,
                len,
                fill,
            } => {
                let m = self.mapping(mapping);
                let (o, n) = self.range(m, offset, len);
                self.client
                    .write(now, m, o, Bytes::from(vec![fill; n as usize]))
                    .map(|p| p.id())
            }
            Command::TryRead {
                mapping,
                offset,
                len,
            } => {
                let m = self.mapping(mapping);
                let (o, n) = self.range(m, offset, len);
                let mut buf = vec![0u8; n as usize];
                let _ = self.client.try_read(now, m, o, &mut buf);
                return;
            }
            Command::TryWrite {
                mapping,
                offset,
                len,
                fill,
            } => {
                let m = self.mapping(mapping);
                let (o, n) = self.range(m, offset, len);
                let _ = self.client.try_write(now, m, o, &vec![fill; n as usize]);
                return;
            }
            Command::Sync { mapping } => {
                self.client.sync(now, self.mapping(mapping)).map(|p| p.id())
            }
            Command::Unmap { mapping } => self
                .client
                .unmap(now, self.mapping(mapping))
                .map(|p| p.id()),
            Command::SetLen { path, len, create } => self
                .client
                .set_len(now, PATHS[path as usize % PATHS.len()], len as u64, create)
                .map(|p| p.id()),
            Command::Atomic {
                mapping,
                offset,
                op,
            } => {
                let m = self.mapping(mapping);
                let (o, _) = self.range(m, offset, 0);
                self.client.atomic(now, m, o & !7, op).map(|p| p.id())
            }
            Command::Close => self.client.close(now).map(|p| p.id()),
        };
    }

    /// The drive loop: drain events and bytes, let the scripted server
    /// answer what it answers by itself, until nothing moves.
    pub(super) fn pump(&mut self) {
        for _ in 0..64 {
            let mut progress = false;
            while let Some(ev) = self.client.poll_event() {
                progress = true;
                if crate::tracing() {
                    eprintln!("    event {ev:?}");
                }
                match ev {
                    Event::Connect => {
                        if self.reachable {
                            self.open = true;
                            self.to_client.clear();
                            self.script.new_connection();
                            self.client.handle_connected(self.now);
                        } else {
                            let refused = std::io::ErrorKind::ConnectionRefused.into();
                            self.client.handle_connect_failed(self.now, refused);
                        }
                    }
                    Event::Disconnect => {
                        // What the client queued before it goes out first.
                        while let Some(b) = self.client.poll_transmit() {
                            if self.open {
                                self.script.inbox.extend_from_slice(&b);
                            }
                        }
                        self.open = false;
                    }
                    Event::Completed {
                        result: Ok(Completion::Mapped { mapping, .. }),
                        ..
                    } if self.mappings.len() < 32 => self.mappings.push(mapping),
                    _ => {}
                }
            }
            while let Some(b) = self.client.poll_transmit() {
                progress = true;
                if self.open {
                    self.script.inbox.extend_from_slice(&b);
                }
            }
            let answers = self
                .script
                .read(self.secret, self.auto_handshake, self.auto_pong);
            if !answers.is_empty() && self.open {
                progress = true;
                self.deliver(&answers);
            }
            if !progress {
                break;
            }
        }
    }
}
