//! SFTP v3 framing and the hot-path codecs.
//!
//! Owns: cutting the byte stream into length-prefixed packets (with a hard size limit), the
//! zero-copy decoding of `SSH_FXP_WRITE` (the bulk of an upload) and the direct encoding of
//! `SSH_FXP_DATA`/`SSH_FXP_STATUS`; everything else goes through russh-sftp's codec.
//!
//! Must never: trust a length field (every read is bounds-checked), or copy write payloads
//! more than once.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use russh_sftp::protocol::StatusCode;

/// Largest SFTP packet we accept from a client. OpenSSH's own limit is 256 KiB; other clients
/// ignoring `limits@openssh.com` stay far below 1 MiB.
pub const MAX_FRAME: usize = 1 << 20;
/// What we advertise in `limits@openssh.com`: OpenSSH's values, which its client uses as is.
pub const ADVERTISED_MAX_PACKET: u64 = 262_144;
pub const ADVERTISED_MAX_READ: u64 = 262_144 - 1024;
pub const ADVERTISED_MAX_WRITE: u64 = 262_144 - 1024;

pub const SSH_FXP_WRITE: u8 = 6;
const SSH_FXP_STATUS: u8 = 101;
const SSH_FXP_DATA: u8 = 103;

/// A stream that cannot be trusted any more: the session ends.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("sftp packet of {0} bytes exceeds the {MAX_FRAME} byte limit")]
    TooLarge(usize),
    #[error("empty sftp packet")]
    Empty,
}

/// Takes the next complete packet (type byte + payload, length prefix removed) off `buf`.
pub fn next_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(header);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if buf.len() < 4 + len {
        // Reserve once for the whole packet so a 256 KiB write does not regrow repeatedly.
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The request id of a packet whose body we could not decode (type byte then u32 id), so the
/// client still gets an answer.
pub fn peek_request_id(frame: &[u8]) -> Option<u32> {
    let b = frame.get(1..5)?;
    Some(u32::from_be_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

/// A decoded `SSH_FXP_WRITE`, its data a slice of the received frame.
pub struct WriteRequest {
    pub id: u32,
    pub handle: Bytes,
    pub offset: u64,
    pub data: Bytes,
}

fn take_u32(b: &mut Bytes) -> Option<u32> {
    (b.remaining() >= 4).then(|| b.get_u32())
}

fn take_string(b: &mut Bytes) -> Option<Bytes> {
    let n = take_u32(b)? as usize;
    (b.remaining() >= n).then(|| b.split_to(n))
}

/// Decodes a WRITE frame (type byte included) without copying its payload.
pub fn decode_write(mut frame: Bytes) -> Option<WriteRequest> {
    if frame.remaining() < 1 || frame.get_u8() != SSH_FXP_WRITE {
        return None;
    }
    let id = take_u32(&mut frame)?;
    let handle = take_string(&mut frame)?;
    if frame.remaining() < 8 {
        return None;
    }
    let offset = frame.get_u64();
    let data = take_string(&mut frame)?;
    Some(WriteRequest {
        id,
        handle,
        offset,
        data,
    })
}

/// Encodes an `SSH_FXP_STATUS` packet.
pub fn status(id: u32, code: StatusCode, message: &str) -> Bytes {
    let msg = message.as_bytes();
    let lang = b"en";
    let body = 1 + 4 + 4 + 4 + msg.len() + 4 + lang.len();
    let mut b = BytesMut::with_capacity(4 + body);
    b.put_u32(body as u32);
    b.put_u8(SSH_FXP_STATUS);
    b.put_u32(id);
    b.put_u32(code as u32);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.put_u32(lang.len() as u32);
    b.put_slice(lang);
    b.freeze()
}

/// Builds an `SSH_FXP_DATA` packet by letting `fill` read straight into it (no extra copy).
/// `fill` returns how many bytes it wrote (0 = end of file: `None` is returned).
pub fn data_with<E>(
    id: u32,
    max_len: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
) -> Result<Option<Bytes>, E> {
    const HEAD: usize = 4 + 1 + 4 + 4;
    let mut b = BytesMut::zeroed(HEAD + max_len);
    let n = match b.get_mut(HEAD..) {
        Some(dst) => fill(dst)?,
        None => 0,
    };
    if n == 0 {
        return Ok(None);
    }
    let n = n.min(max_len);
    b.truncate(HEAD + n);
    if let Some(mut head) = b.get_mut(..HEAD) {
        head.put_u32((1 + 4 + 4 + n) as u32);
        head.put_u8(SSH_FXP_DATA);
        head.put_u32(id);
        head.put_u32(n as u32);
    }
    Ok(Some(b.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_only_when_complete() {
        let mut buf = BytesMut::new();
        buf.put_u32(5);
        buf.put_slice(&[1, 0, 0]);
        assert!(next_frame(&mut buf).unwrap().is_none());
        buf.put_slice(&[0, 3, 9]);
        let f = next_frame(&mut buf).unwrap().unwrap();
        assert_eq!(&f[..], &[1, 0, 0, 0, 3]);
        assert_eq!(&buf[..], &[9]);
    }

    #[test]
    fn oversized_and_empty_frames_end_the_stream() {
        let mut buf = BytesMut::new();
        buf.put_u32(MAX_FRAME as u32 + 1);
        assert!(matches!(next_frame(&mut buf), Err(FrameError::TooLarge(_))));
        let mut buf = BytesMut::new();
        buf.put_u32(0);
        assert!(matches!(next_frame(&mut buf), Err(FrameError::Empty)));
    }

    #[test]
    fn write_decodes_and_lies_are_rejected() {
        let mut b = BytesMut::new();
        b.put_u8(SSH_FXP_WRITE);
        b.put_u32(7);
        b.put_u32(2);
        b.put_slice(b"12");
        b.put_u64(99);
        b.put_u32(3);
        b.put_slice(b"abc");
        let w = decode_write(b.clone().freeze()).unwrap();
        assert_eq!(
            (w.id, &w.handle[..], w.offset, &w.data[..]),
            (7, &b"12"[..], 99, &b"abc"[..])
        );
        // A data length longer than the packet.
        let mut bad = b.clone();
        bad.truncate(bad.len() - 1);
        assert!(decode_write(bad.freeze()).is_none());
        assert!(decode_write(Bytes::from_static(&[SSH_FXP_WRITE, 0, 0])).is_none());
    }

    #[test]
    fn data_packet_is_framed() {
        let p = data_with::<()>(9, 8, |dst| {
            dst[..3].copy_from_slice(b"xyz");
            Ok(3)
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            &p[..],
            &[0, 0, 0, 12, 103, 0, 0, 0, 9, 0, 0, 0, 3, b'x', b'y', b'z']
        );
        assert!(data_with::<()>(9, 8, |_| Ok(0)).unwrap().is_none());
    }

    #[test]
    fn status_roundtrips_through_russh_sftp() {
        let mut p = status(4, StatusCode::PermissionDenied, "nope");
        p.advance(4);
        match russh_sftp::protocol::Packet::try_from(&mut p).unwrap() {
            russh_sftp::protocol::Packet::Status(s) => {
                assert_eq!(s.id, 4);
                assert_eq!(s.status_code, StatusCode::PermissionDenied);
                assert_eq!(s.error_message, "nope");
            }
            other => panic!("{other:?}"),
        }
    }
}
