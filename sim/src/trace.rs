//! The trace of a run: one line per thing that happened, hashed as it goes
//! so two runs of one seed can be compared without keeping the text.

/// A running FNV-1a hash of the trace, with the lines when asked for.
#[derive(Clone, Debug)]
pub struct Trace {
    hash: u64,
    lines: Option<Vec<String>>,
    count: u64,
    echo: bool,
}

impl Trace {
    /// A trace that keeps its text when `keep` is set.
    pub fn new(keep: bool) -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            lines: keep.then(Vec::new),
            count: 0,
            echo: false,
        }
    }

    /// Also prints every kept line to stderr as it comes (a run that panics
    /// in the core loses the lines it kept).
    pub fn echo(mut self, on: bool) -> Self {
        self.echo = on && self.lines.is_some();
        self
    }

    /// Adds a line.
    pub fn line(&mut self, s: String) {
        for b in s.as_bytes().iter().chain(std::iter::once(&b'\n')) {
            self.hash ^= *b as u64;
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.count += 1;
        self.keep(s);
    }

    fn keep(&mut self, s: String) {
        if self.echo {
            eprintln!("{s}");
        }
        if let Some(l) = &mut self.lines {
            l.push(s);
        }
    }

    /// Adds a line to the text only (not hashed): detail that is there only
    /// when the text is kept, such as every frame.
    pub fn note(&mut self, s: String) {
        self.keep(s);
    }

    /// Whether lines are kept.
    pub fn keeps_text(&self) -> bool {
        self.lines.is_some()
    }

    /// The hash so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Lines so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing was traced.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The kept lines (empty when not kept).
    pub fn lines(&self) -> &[String] {
        self.lines.as_deref().unwrap_or(&[])
    }
}
