//! The workload: which words of which files are read and written, and the
//! random choice of the next operation.
//!
//! Each page has three cells, the words at 0, 8 and `page_size - 8`. Reads
//! and writes cover one cell, the two cells at the start of a page, the last
//! cell of a page and the first of the next (crossing a page boundary), a
//! whole page (a whole-page write takes the "overwrite" path that fetches no
//! data), or (reads only) the whole file.

use bytes::Bytes;

use crate::history::{Cell, encode_value};
use crate::rng::SimRng;

/// The files and their cells.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Page size.
    pub page_size: u64,
    /// Pages per file.
    pub pages: Vec<u64>,
}

/// Where a write falls on a file's pages.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The first cell of this page.
    PageStart(u64),
    /// The last cell of this page and the first of the next (two pages,
    /// which an exclusive fetch locks in order).
    Across(u64),
    /// All of this page (the overwrite path: no data is fetched).
    WholePage(u64),
}

/// An operation about to be issued.
#[derive(Clone, Debug)]
pub enum Planned {
    /// Read `len` bytes at `offset`.
    Read {
        /// File index.
        file: usize,
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// Write `data` at `offset`.
    Write {
        /// File index.
        file: usize,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Bytes,
        /// The cells written and their values.
        cells: Vec<(Cell, u64)>,
    },
    /// Sync the file's mapping.
    Sync {
        /// File index.
        file: usize,
    },
    /// Atomic swap.
    Swap {
        /// The word.
        cell: Cell,
        /// New value.
        new: u64,
    },
    /// Atomic compare-exchange.
    Cas {
        /// The word.
        cell: Cell,
        /// Expected.
        expected: u64,
        /// New value.
        new: u64,
    },
    /// Wait until the word no longer holds `current` (`wait_while`), at
    /// most `timeout`: recorded as a read of the word (the new value it
    /// returns); a timeout observed nothing and is recorded as failed.
    Wait {
        /// The word.
        cell: Cell,
        /// The value to wait out.
        current: u64,
        /// How long at most.
        timeout: std::time::Duration,
    },
}

impl Layout {
    /// The path of file `i`.
    pub fn path(i: usize) -> String {
        format!("f{i}")
    }

    /// Length in bytes of file `i`.
    pub fn len(&self, file: usize) -> u64 {
        self.pages[file] * self.page_size
    }

    /// Cell offsets within a page.
    fn in_page(&self) -> [u64; 3] {
        [0, 8, self.page_size - 8]
    }

    /// Every cell, in order.
    pub fn cells(&self) -> Vec<Cell> {
        let mut out = Vec::new();
        for (file, &n) in self.pages.iter().enumerate() {
            for p in 0..n {
                for o in self.in_page() {
                    out.push(Cell {
                        file,
                        offset: p * self.page_size + o,
                    });
                }
            }
        }
        out
    }

    /// The cells inside `[offset, offset + len)` of `file`.
    pub fn cells_in(&self, file: usize, offset: u64, len: u64) -> Vec<Cell> {
        self.cells()
            .into_iter()
            .filter(|c| c.file == file && c.offset >= offset && c.offset + 8 <= offset + len)
            .collect()
    }

    /// A byte range of `file`: `(offset, len)`.
    fn range(&self, rng: &mut SimRng, file: usize, whole_file: bool) -> (u64, u64) {
        let ps = self.page_size;
        let pages = self.pages[file];
        let p = rng.below(pages);
        match rng.below(if whole_file { 6 } else { 5 }) {
            0 | 1 => (p * ps + self.in_page()[rng.below(3) as usize], 8),
            2 => (p * ps, 16),
            3 if p + 1 < pages => (p * ps + ps - 8, 16),
            3 => (p * ps + ps - 8, 8),
            4 => (p * ps, ps),
            _ => (0, pages * ps),
        }
    }

    /// A write of `len` bytes at `offset` of `file`, each cell in it a new
    /// value of operation `seq` of `client`.
    fn write(&self, client: usize, seq: u64, file: usize, offset: u64, len: u64) -> Planned {
        let mut data = vec![0u8; len as usize];
        let mut cells = Vec::new();
        for (w, c) in self.cells_in(file, offset, len).into_iter().enumerate() {
            let v = encode_value(client, seq, w);
            let at = (c.offset - offset) as usize;
            data[at..at + 8].copy_from_slice(&v.to_le_bytes());
            cells.push((c, v));
        }
        Planned::Write {
            file,
            offset,
            data: Bytes::from(data),
            cells,
        }
    }

    /// A `wait_while` on a random word of one of `files`, for the value the
    /// client last saw there, for up to 400 ms.
    pub fn plan_wait(
        &self,
        rng: &mut SimRng,
        files: &[usize],
        last_seen: impl Fn(Cell) -> u64,
    ) -> Planned {
        let file = files[rng.below(files.len() as u64) as usize];
        let cells = self.cells_in(file, 0, self.len(file));
        let cell = cells[rng.below(cells.len() as u64) as usize];
        Planned::Wait {
            cell,
            current: last_seen(cell),
            timeout: std::time::Duration::from_millis(1 + rng.below(400)),
        }
    }

    /// A write of `shape` on `file`, each cell a new value of operation
    /// `seq` of `client`.
    pub fn plan_shaped_write(&self, client: usize, seq: u64, file: usize, shape: Shape) -> Planned {
        let ps = self.page_size;
        let last = self.pages[file] - 1;
        let (offset, len) = match shape {
            Shape::PageStart(p) => (p.min(last) * ps, 8),
            Shape::Across(p) if p < last => (p * ps + ps - 8, 16),
            Shape::Across(p) => (p.min(last) * ps + ps - 8, 8),
            Shape::WholePage(p) => (p.min(last) * ps, ps),
        };
        self.write(client, seq, file, offset, len)
    }

    /// A write that contends with other clients' for `file`'s pages, of a
    /// random shape.
    pub fn plan_contended_write(
        &self,
        rng: &mut SimRng,
        client: usize,
        seq: u64,
        file: usize,
    ) -> Planned {
        let pages = self.pages[file];
        let shape = match rng.below(3) {
            0 => Shape::PageStart(rng.below(pages)),
            1 => Shape::Across(rng.below(pages.max(2) - 1)),
            _ => Shape::WholePage(rng.below(pages)),
        };
        self.plan_shaped_write(client, seq, file, shape)
    }

    /// Chooses the next operation of `client` on one of `files` (the files
    /// it has a ready mapping of). `seq` numbers the client's operations;
    /// `last_seen` gives the last value it saw of a cell (for
    /// compare-exchange).
    pub fn plan(
        &self,
        rng: &mut SimRng,
        client: usize,
        seq: u64,
        files: &[usize],
        last_seen: impl Fn(Cell) -> u64,
    ) -> Planned {
        let file = files[rng.below(files.len() as u64) as usize];
        let roll = rng.below(100);
        if roll < 42 {
            let (offset, len) = self.range(rng, file, true);
            Planned::Read { file, offset, len }
        } else if roll < 84 {
            let (offset, len) = self.range(rng, file, false);
            self.write(client, seq, file, offset, len)
        } else if roll < 94 {
            Planned::Sync { file }
        } else {
            let cells = self.cells_in(file, 0, self.len(file));
            let cell = cells[rng.below(cells.len() as u64) as usize];
            let new = encode_value(client, seq, 0);
            if roll < 97 {
                Planned::Swap { cell, new }
            } else {
                Planned::Cas {
                    cell,
                    expected: last_seen(cell),
                    new,
                }
            }
        }
    }
}
