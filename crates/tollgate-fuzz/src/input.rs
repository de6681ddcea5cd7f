//! The framing of structured inputs: scalars and length-prefixed fields read
//! from the front of the fuzz bytes, and [`Output`], which writes the same
//! framing for the seed corpus. Reading never fails: past the end, scalars
//! are 0 and fields are empty, so every input is some well-formed value.

use arbitrary::Unstructured;

/// Reads a structured input.
pub struct Input<'a> {
    u: Unstructured<'a>,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input {
            u: Unstructured::new(data),
        }
    }

    fn fixed<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.u.len());
        if let Ok(bytes) = self.u.bytes(n) {
            out[..n].copy_from_slice(bytes);
        }
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.fixed::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.fixed())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.fixed())
    }

    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.fixed())
    }

    /// A field: a big-endian `u16` length, then that many bytes (fewer at
    /// the end of the input).
    pub fn field(&mut self) -> &'a [u8] {
        let len = usize::from(self.u16()).min(self.u.len());
        self.u.bytes(len).unwrap_or_default()
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.u.take_rest()
    }

    /// The rest, for targets that build values with `arbitrary`.
    pub fn unstructured(self) -> Unstructured<'a> {
        self.u
    }
}

/// Writes a structured input (the seed corpus).
#[derive(Default)]
pub struct Output(Vec<u8>);

impl Output {
    pub fn u8(mut self, v: u8) -> Output {
        self.0.push(v);
        self
    }

    pub fn u16(mut self, v: u16) -> Output {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Output {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i32(mut self, v: i32) -> Output {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn field(self, bytes: &[u8]) -> Output {
        let len = u16::try_from(bytes.len()).expect("a seed field is at most 64 KiB");
        let mut out = self.u16(len);
        out.0.extend_from_slice(bytes);
        out
    }

    pub fn rest(mut self, bytes: &[u8]) -> Output {
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}
