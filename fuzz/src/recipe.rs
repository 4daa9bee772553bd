//! Writing fuzz inputs on purpose: the inverse of `arbitrary`'s decoding,
//! for the seed corpus (`make_corpus`) of the structure-aware targets.
//!
//! It mirrors the byte format of `arbitrary` 1.x: integers little-endian,
//! `bool` one byte, an enum variant a `u32` scaled onto the variant count,
//! a collection one `true` byte before each element and a `false` byte
//! after the last. The unit tests of each target parse every seed back and
//! compare, so a change of format or of an enum shows up there, not as
//! seeds that silently mean something else.

/// A value that can be written as the bytes `arbitrary` reads it from.
pub(crate) trait Unparse {
    /// Appends the bytes that make `arbitrary` produce `self`.
    fn unparse(&self, out: &mut Vec<u8>);
}

/// The bytes that `arbitrary` decodes into variant `i` of an enum with
/// `n` variants (`(u32 * n) >> 32 == i`).
pub(crate) fn variant(out: &mut Vec<u8>, i: u32, n: u32) {
    debug_assert!(i < n);
    let v = ((i as u64) << 32).div_ceil(n as u64) as u32;
    out.extend_from_slice(&v.to_le_bytes());
}

macro_rules! ints {
    ($($t:ty),*) => {$(
        impl Unparse for $t {
            fn unparse(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
ints!(u8, u16, u32, u64);

impl Unparse for bool {
    fn unparse(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
}

impl<A: Unparse, B: Unparse> Unparse for (A, B) {
    fn unparse(&self, out: &mut Vec<u8>) {
        self.0.unparse(out);
        self.1.unparse(out);
    }
}

impl<T: Unparse> Unparse for Vec<T> {
    fn unparse(&self, out: &mut Vec<u8>) {
        for x in self {
            out.push(1);
            x.unparse(out);
        }
        out.push(0);
    }
}

impl Unparse for rmmap_core::protocol::AtomicOp {
    fn unparse(&self, out: &mut Vec<u8>) {
        use rmmap_core::protocol::AtomicOp;
        // `int_in_range(0..=2u8)` reads one byte, modulo 3.
        match *self {
            AtomicOp::FetchAdd(v) => (0u8, v).unparse(out),
            AtomicOp::Swap(v) => (1u8, v).unparse(out),
            AtomicOp::CompareExchange { expected, new } => (2u8, (expected, new)).unparse(out),
        }
    }
}

/// Writes a whole input: fields in order, the last `Vec` without its
/// closing `false` (`arbitrary_take_rest` stops where the data ends).
pub(crate) fn input<T: Unparse>(head: u8, actions: &[T]) -> Vec<u8> {
    let mut out = vec![head];
    for a in actions {
        out.push(1);
        a.unparse(&mut out);
    }
    out
}
