#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
//! Our own gzip (RFC 1952) member reader on top of a raw inflater, so that every failure has a
//! precise kind: a cut-short stream is "truncated", a bad CRC or ISIZE trailer is "corrupt".
//!
//! Owns: header parsing (FEXTRA, FNAME, FCOMMENT, FHCRC skipped), raw deflate, the CRC-32 and
//! length trailer of every member, concatenated members, refusing bytes after the last member.
//!
//! Must never: return the final end of stream before the last trailer was verified, buffer more
//! than its fixed input buffer, or accept trailing garbage.

use std::io::Read;

use flate2::{Decompress, FlushDecompress, Status};

use super::ExtractError;

/// PERF: large reads; the file is read once, sequentially.
const IN_BUF: usize = 256 * 1024;

enum State {
    /// Expecting a member header (the first, or another one after a trailer).
    Header,
    /// Inside a member's deflate data.
    Body,
    /// The last member's trailer was verified and the input is exhausted.
    Done,
}

pub(crate) struct GzReader<R> {
    src: R,
    /// For error messages.
    name: String,
    inbuf: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    inflate: Decompress,
    crc: crc32fast::Hasher,
    member_out: u64,
    members: u64,
    state: State,
    /// Compressed bytes consumed so far (headers, deflate data, trailers).
    consumed: u64,
}

impl<R: Read> GzReader<R> {
    pub fn new(src: R, name: String) -> Self {
        GzReader {
            src,
            name,
            inbuf: vec![0u8; IN_BUF].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            inflate: Decompress::new(false),
            crc: crc32fast::Hasher::new(),
            member_out: 0,
            members: 0,
            state: State::Header,
            consumed: 0,
        }
    }

    /// Compressed bytes consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Refills the input buffer if it is empty; false at end of input.
    fn fill(&mut self) -> Result<bool, ExtractError> {
        if self.pos < self.len {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        loop {
            match self.src.read(&mut self.inbuf) {
                Ok(0) => {
                    self.eof = true;
                    self.pos = 0;
                    self.len = 0;
                    return Ok(false);
                }
                Ok(n) => {
                    self.pos = 0;
                    self.len = n.min(self.inbuf.len());
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ExtractError::io("reading", &self.name, e)),
            }
        }
    }

    fn byte(&mut self, what: &str) -> Result<u8, ExtractError> {
        if !self.fill()? {
            return Err(ExtractError::truncated(format!(
                "the gzip stream ends inside {what}"
            )));
        }
        let b = self.inbuf.get(self.pos).copied().unwrap_or_default();
        self.pos += 1;
        self.consumed += 1;
        Ok(b)
    }

    fn u16(&mut self, what: &str) -> Result<u16, ExtractError> {
        Ok(u16::from_le_bytes([self.byte(what)?, self.byte(what)?]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ExtractError> {
        Ok(u32::from_le_bytes([
            self.byte(what)?,
            self.byte(what)?,
            self.byte(what)?,
            self.byte(what)?,
        ]))
    }

    fn header(&mut self) -> Result<(), ExtractError> {
        const H: &str = "a gzip member header";
        let (id1, id2) = (self.byte(H)?, self.byte(H)?);
        if (id1, id2) != (0x1f, 0x8b) {
            return Err(if self.members == 0 {
                ExtractError::WrongFormat {
                    reason: "not a gzip stream".into(),
                }
            } else {
                ExtractError::corrupt(format!(
                    "unexpected data after gzip member {} (not another gzip member)",
                    self.members
                ))
            });
        }
        let method = self.byte(H)?;
        if method != 8 {
            return Err(ExtractError::corrupt(format!(
                "gzip member uses compression method {method} (only deflate, 8, exists)"
            )));
        }
        let flags = self.byte(H)?;
        if flags & 0xe0 != 0 {
            return Err(ExtractError::corrupt(
                "gzip header has reserved flag bits set",
            ));
        }
        for _ in 0..6 {
            self.byte(H)?; // MTIME, XFL, OS: nothing we need
        }
        if flags & 0x04 != 0 {
            let xlen = self.u16(H)?;
            for _ in 0..xlen {
                self.byte(H)?;
            }
        }
        // FNAME and FCOMMENT: zero-terminated, skipped byte by byte (no allocation).
        for bit in [0x08, 0x10] {
            if flags & bit != 0 {
                while self.byte(H)? != 0 {}
            }
        }
        if flags & 0x02 != 0 {
            self.u16(H)?; // FHCRC: the deflate data and trailer CRC protect what matters
        }
        Ok(())
    }

    fn trailer(&mut self) -> Result<(), ExtractError> {
        const T: &str = "the crc/length trailer of a gzip member";
        let crc = self.u32(T)?;
        let isize = self.u32(T)?;
        let ours = std::mem::take(&mut self.crc).finalize();
        if crc != ours {
            return Err(ExtractError::corrupt(format!(
                "gzip crc-32 mismatch: the trailer says {crc:08x}, the data gives {ours:08x}"
            )));
        }
        // ISIZE is the length modulo 2^32.
        if isize != self.member_out as u32 {
            return Err(ExtractError::corrupt(format!(
                "gzip length mismatch: the trailer says {isize} bytes (mod 2^32), \
                 the data is {} bytes",
                self.member_out
            )));
        }
        self.members += 1;
        Ok(())
    }

    /// Fills `out` with decompressed bytes. Returns 0 only at the verified end of the last
    /// member (never for an empty `out`, which must not be passed).
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize, ExtractError> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Header => {
                    if self.members > 0 && !self.fill()? {
                        self.state = State::Done;
                        return Ok(0);
                    }
                    self.header()?;
                    self.inflate.reset(false);
                    self.member_out = 0;
                    self.state = State::Body;
                }
                State::Body => {
                    let more = self.fill()?;
                    let input = self.inbuf.get(self.pos..self.len).unwrap_or_default();
                    let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
                    let status = self
                        .inflate
                        .decompress(input, out, FlushDecompress::None)
                        .map_err(|e| {
                            ExtractError::corrupt(format!(
                                "invalid deflate data in the gzip stream: {e}"
                            ))
                        })?;
                    let used = (self.inflate.total_in() - in0) as usize;
                    let produced = (self.inflate.total_out() - out0) as usize;
                    self.pos += used;
                    self.consumed += used as u64;
                    let data = out.get(..produced).unwrap_or_default();
                    self.crc.update(data);
                    self.member_out += produced as u64;
                    if status == Status::StreamEnd {
                        self.trailer()?;
                        self.state = State::Header;
                    } else if used == 0 && produced == 0 && !more {
                        return Err(ExtractError::truncated(
                            "the gzip stream ends in the middle of compressed data",
                        ));
                    }
                    if produced > 0 {
                        return Ok(produced);
                    }
                }
            }
        }
    }

    /// Reads until `out` is full or the stream ends; returns how much was filled.
    pub fn read_full(&mut self, out: &mut [u8]) -> Result<usize, ExtractError> {
        let mut filled = 0;
        while let Some(rest) = out.get_mut(filled..) {
            if rest.is_empty() {
                break;
            }
            let n = self.read(rest)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn all(bytes: &[u8]) -> Result<Vec<u8>, ExtractError> {
        let mut r = GzReader::new(bytes, "t".into());
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn round_trip_and_multi_member() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        assert_eq!(all(&gz(&data)).unwrap(), data);
        let mut two = gz(b"hello ");
        two.extend(gz(b"world"));
        assert_eq!(all(&two).unwrap(), b"hello world");
    }

    #[test]
    fn truncation_anywhere_is_truncated() {
        let data: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let z = gz(&data);
        for cut in [3, 10, z.len() / 2, z.len() - 5, z.len() - 1] {
            let e = all(&z[..cut]).unwrap_err();
            assert_eq!(e.kind(), "truncated", "cut at {cut}: {e}");
        }
    }

    #[test]
    fn bad_trailer_is_corrupt() {
        let mut z = gz(b"some data here");
        let n = z.len();
        z[n - 8] ^= 1; // CRC
        let e = all(&z).unwrap_err();
        assert_eq!(e.kind(), "corrupt");
        assert!(e.to_string().contains("crc-32 mismatch"), "{e}");
        let mut z = gz(b"some data here");
        z[n - 1] ^= 1; // ISIZE
        let e = all(&z).unwrap_err();
        assert!(e.to_string().contains("length mismatch"), "{e}");
    }

    #[test]
    fn trailing_garbage_is_corrupt() {
        let mut z = gz(b"x");
        z.extend_from_slice(b"garbage");
        assert_eq!(all(&z).unwrap_err().kind(), "corrupt");
    }
}
