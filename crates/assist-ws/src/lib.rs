//! Assist's WebSocket codec: RFC 6455 framing for the WSS signalling (`/v1/signal`) and relay
//! (`/v1/relay`) legs, server side and client side.
//!
//! The decoders work on the caller's read buffer: they unmask client frames **in place** and split the payload
//! off with [`BytesMut::split_to`] + [`BytesMut::freeze`], so an unfragmented message reaches the caller as a
//! [`Bytes`] pointing into the read buffer, with no per-message copy. Only fragmented messages are copied, into
//! one reassembly buffer. The opening handshake's HTTP parsing belongs to the IO side; [`accept_key`] computes the
//! `Sec-WebSocket-Accept` value (RustCrypto's `sha1` and the `base64` crate).
//!
//! It does **no IO**: no sockets, no runtime, no clock, no randomness (clients pass their masks
//! in). Decoders never panic on malformed input; every [`WsError`] maps to a close code.
//!
//! ```
//! use assist_ws::{encode_client_frame, Opcode, ServerDecoder, WsEvent};
//! use bytes::BytesMut;
//!
//! let mut wire = BytesMut::new();
//! encode_client_frame(Opcode::Text, b"hello", [1, 2, 3, 4], &mut wire);
//! let mut decoder = ServerDecoder::new(64 * 1024);
//! match decoder.decode(&mut wire) {
//!     Ok(Some(WsEvent::Text(t))) => assert_eq!(&t[..], b"hello"),
//!     other => panic!("{other:?}"),
//! }
//! ```

#![forbid(unsafe_code)]

use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha1::{Digest as _, Sha1};

/// Maximum payload of a control frame (close, ping, pong).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The GUID appended to `Sec-WebSocket-Key` before hashing (RFC 6455 §1.3).
pub const HANDSHAKE_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A frame opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: a text message (the relay refuses them).
    Text,
    /// 0x2: a binary message (one relay frame each).
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// The opcode with this 4-bit wire value, if defined.
    pub fn from_u8(value: u8) -> Option<Opcode> {
        match value {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// One decoded WebSocket message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete binary message.
    Binary(Bytes),
    /// A complete text message, not checked for UTF-8 (the relay refuses text anyway).
    Text(Bytes),
    /// A ping; answer with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame. `code` is `None` for an empty close payload (then `reason` is empty).
    Close {
        /// The close status code, already validated.
        code: Option<u16>,
        /// The close reason, valid UTF-8.
        reason: String,
    },
}

/// A WebSocket protocol violation by the peer. After any error the connection must be closed (with
/// [`WsError::close_code`]); the decoder's state is then unspecified, though it never panics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsError {
    /// A client frame without the mask bit.
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A server frame with the mask bit.
    #[error("server frame is masked")]
    MaskedFrame,
    /// RSV1-3 set (no extension is negotiated); holds the three bits.
    #[error("reserved bits set: {0:#03b}")]
    ReservedBits(u8),
    /// An undefined opcode.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLong,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A 64-bit payload length with its most significant bit set.
    #[error("invalid 64-bit payload length")]
    InvalidLength,
    /// A message (all its fragments together) over the decoder's maximum.
    #[error("message of at least {len} bytes exceeds the maximum of {max}")]
    MessageTooBig {
        /// The message length known so far (fragments received plus this frame's payload).
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A continuation frame with no fragmented message open.
    #[error("continuation frame without a message to continue")]
    ContinuationWithoutStart,
    /// A new text or binary frame while a fragmented message is still open.
    #[error("new data frame while a fragmented message is open")]
    UnfinishedFragmentedMessage,
    /// A close frame with a one-byte payload.
    #[error("close payload of one byte")]
    InvalidClosePayload,
    /// A close frame with a status code that may not be sent on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close frame whose reason is not UTF-8.
    #[error("close reason is not UTF-8")]
    InvalidCloseReason,
}

impl WsError {
    /// The WebSocket close code to answer with: 1009 for [`WsError::MessageTooBig`], 1007 for
    /// [`WsError::InvalidCloseReason`], 1002 (protocol error) otherwise.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::MessageTooBig { .. } => 1009,
            WsError::InvalidCloseReason => 1007,
            _ => 1002,
        }
    }
}

/// Whether `code` may appear in a close frame (RFC 6455 §7.4 and the IANA registry): 1000-1003, 1007-1014 and
/// 3000-4999. 1004-1006 and 1015 are reserved for local use and never sent.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `buf` with the 4-byte `mask`, starting at mask offset 0 (masking and unmasking are the same operation).
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    const CHUNK: usize = 64;
    let mut pattern = [0u8; CHUNK];
    for (i, p) in pattern.iter_mut().enumerate() {
        *p = mask[i & 3];
    }
    let (chunks, rest) = buf.as_chunks_mut::<CHUNK>();
    for chunk in chunks {
        // Fixed-size arrays: the compiler turns this into SIMD XORs.
        for (b, m) in chunk.iter_mut().zip(pattern.iter()) {
            *b ^= m;
        }
    }
    // CHUNK is a multiple of 4, so the remainder starts at mask offset 0.
    for (b, m) in rest.iter_mut().zip(pattern.iter()) {
        *b ^= m;
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct Head {
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Fragmented {
    opcode: Opcode,
    buf: BytesMut,
}

/// The decoder shared by [`ServerDecoder`] (`masked == true`) and [`ClientDecoder`].
#[derive(Debug)]
struct Decoder {
    max_message: usize,
    masked: bool,
    fragmented: Option<Fragmented>,
}

impl Decoder {
    fn new(max_message: usize, masked: bool) -> Self {
        Decoder {
            max_message,
            masked,
            fragmented: None,
        }
    }

    /// Parses and validates the header at the front of `buf`; `Ok(None)` if it is not complete yet.
    fn head(&self, buf: &[u8]) -> Result<Option<Head>, WsError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let rsv = (b0 >> 4) & 0x7;
        if rsv != 0 {
            return Err(WsError::ReservedBits(rsv));
        }
        let opcode = Opcode::from_u8(b0 & 0x0F).ok_or(WsError::UnknownOpcode(b0 & 0x0F))?;
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        if masked != self.masked {
            return Err(if self.masked {
                WsError::UnmaskedFrame
            } else {
                WsError::MaskedFrame
            });
        }
        let len7 = b1 & 0x7F;
        // Offset of the received bytes of the message this frame belongs to.
        let already = if opcode.is_control() {
            if !fin {
                return Err(WsError::FragmentedControlFrame);
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(WsError::ControlFrameTooLong);
            }
            0
        } else {
            match (opcode, &self.fragmented) {
                (Opcode::Continuation, None) => return Err(WsError::ContinuationWithoutStart),
                (Opcode::Continuation, Some(f)) => f.buf.len(),
                (_, Some(_)) => return Err(WsError::UnfinishedFragmentedMessage),
                (_, None) => 0,
            }
        };
        let (len, mut header_len): (u64, usize) = match len7 {
            126 => match buf.get(2..4) {
                Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
                _ => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
                Some(l) => (u64::from_be_bytes(l), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if len >> 63 != 0 {
            return Err(WsError::InvalidLength);
        }
        // Control frames (at most 125 bytes) are not messages and do not count against max_message.
        let total = len.saturating_add(already as u64);
        if !opcode.is_control() && total > self.max_message as u64 {
            return Err(WsError::MessageTooBig {
                len: total,
                max: self.max_message,
            });
        }
        // Data: total <= max_message, a usize; control: len <= 125. Either way len fits in usize.
        let payload_len = len as usize;
        let mask = if masked {
            match buf
                .get(header_len..header_len + 4)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
            {
                Some(m) => {
                    header_len += 4;
                    Some(m)
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        Ok(Some(Head {
            fin,
            opcode,
            mask,
            header_len,
            payload_len,
        }))
    }

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<WsEvent>, WsError> {
        loop {
            let Some(head) = self.head(buf)? else {
                return Ok(None);
            };
            let Some(frame_len) = head.header_len.checked_add(head.payload_len) else {
                return Err(WsError::MessageTooBig {
                    len: head.payload_len as u64,
                    max: self.max_message,
                });
            };
            if buf.len() < frame_len {
                return Ok(None);
            }
            let mut payload = buf.split_to(frame_len);
            payload.advance(head.header_len);
            if let Some(mask) = head.mask {
                apply_mask(&mut payload, mask);
            }
            match head.opcode {
                Opcode::Close => return parse_close(&payload).map(Some),
                Opcode::Ping => return Ok(Some(WsEvent::Ping(payload.freeze()))),
                Opcode::Pong => return Ok(Some(WsEvent::Pong(payload.freeze()))),
                Opcode::Text | Opcode::Binary if head.fin => {
                    return Ok(Some(data_event(head.opcode, payload.freeze())));
                }
                Opcode::Text | Opcode::Binary => {
                    self.fragmented = Some(Fragmented {
                        opcode: head.opcode,
                        buf: payload,
                    });
                }
                Opcode::Continuation => {
                    // `head` returned ContinuationWithoutStart if no message was open.
                    let Some(f) = self.fragmented.as_mut() else {
                        return Err(WsError::ContinuationWithoutStart);
                    };
                    f.buf.extend_from_slice(&payload);
                    if head.fin {
                        if let Some(f) = self.fragmented.take() {
                            return Ok(Some(data_event(f.opcode, f.buf.freeze())));
                        }
                    }
                }
            }
        }
    }
}

fn data_event(opcode: Opcode, payload: Bytes) -> WsEvent {
    if opcode == Opcode::Text {
        WsEvent::Text(payload)
    } else {
        WsEvent::Binary(payload)
    }
}

fn parse_close(payload: &[u8]) -> Result<WsEvent, WsError> {
    match payload {
        [] => Ok(WsEvent::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(WsError::InvalidClosePayload),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !is_valid_close_code(code) {
                return Err(WsError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidCloseReason)?;
            Ok(WsEvent::Close {
                code: Some(code),
                reason: reason.to_owned(),
            })
        }
    }
}

/// Incremental decoder of frames sent by a client (must be masked). Reassembles fragmented messages up to
/// `max_message` bytes.
#[derive(Debug)]
pub struct ServerDecoder {
    inner: Decoder,
}

impl ServerDecoder {
    /// A decoder that refuses messages over `max_message` payload bytes (for the relay: the frame limit plus
    /// the 6-byte relay header).
    pub fn new(max_message: usize) -> Self {
        ServerDecoder {
            inner: Decoder::new(max_message, true),
        }
    }

    /// Consumes whole frames from the front of `buf`; unmasks IN PLACE and splits the payload off as
    /// [`Bytes`] ([`BytesMut::split_to`] + [`BytesMut::freeze`]: no copy for unfragmented messages).
    ///
    /// Returns at most one event per call; call again until `Ok(None)`, which means more bytes are needed
    /// (nothing is consumed beyond complete frames). Errors: unmasked client frame, reserved bits (RSV1-3),
    /// unknown opcode, control frame over 125 bytes or fragmented, message over `max_message` (checked from the
    /// header before buffering the payload), continuation without start, new data frame while a fragmented one
    /// is open, invalid close payload (length 1, bad code, non-UTF-8 reason). Text payload is returned as
    /// bytes (the relay refuses text anyway). Non-minimal length encodings are accepted.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<WsEvent>, WsError> {
        self.inner.decode(buf)
    }

    /// Whether a fragmented message is being reassembled.
    pub fn in_fragmented_message(&self) -> bool {
        self.inner.fragmented.is_some()
    }

    /// The whole length (header and payload) of the frame at the front of `buf`, once its header is complete
    /// and valid; `None` while the header is incomplete or when it is invalid ([`ServerDecoder::decode`] then
    /// reports the error). A reader uses it to size its buffer for the frame it is receiving. The length is
    /// what the peer announced, bounded by `max_message` plus the header: cap any allocation made from it.
    pub fn pending_frame_len(&self, buf: &[u8]) -> Option<usize> {
        let head = self.inner.head(buf).ok()??;
        head.header_len.checked_add(head.payload_len)
    }
}

/// Client-side decoder of server frames (must be unmasked), same contract as [`ServerDecoder`].
#[derive(Debug)]
pub struct ClientDecoder {
    inner: Decoder,
}

impl ClientDecoder {
    /// A decoder that refuses messages over `max_message` payload bytes.
    pub fn new(max_message: usize) -> Self {
        ClientDecoder {
            inner: Decoder::new(max_message, false),
        }
    }

    /// Same contract as [`ServerDecoder::decode`], except that frames must be unmasked.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<WsEvent>, WsError> {
        self.inner.decode(buf)
    }

    /// Whether a fragmented message is being reassembled.
    pub fn in_fragmented_message(&self) -> bool {
        self.inner.fragmented.is_some()
    }
}

/// Writes a frame header into `out` and returns its length (2 to 14 bytes).
fn write_header(
    fin: bool,
    opcode: Opcode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
    out: &mut [u8; 14],
) -> usize {
    out[0] = if fin { 0x80 } else { 0 } | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = if payload_len < 126 {
        out[1] = mask_bit | payload_len as u8;
        2
    } else if let Ok(l) = u16::try_from(payload_len) {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&l.to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    };
    if let Some(m) = mask {
        out[n..n + 4].copy_from_slice(&m);
        n += 4;
    }
    n
}

/// Writes a server (unmasked) frame header for a FIN frame of `opcode` with `payload_len`; returns the header
/// length (2, 4 or 10). Control opcodes must have at most 125 bytes of payload (not checked here).
pub fn encode_server_header(opcode: Opcode, payload_len: usize, out: &mut [u8; 10]) -> usize {
    let mut full = [0u8; 14];
    let n = write_header(true, opcode, payload_len, None, &mut full);
    out.copy_from_slice(&full[..10]);
    n
}

/// A complete server frame (FIN, unmasked): for pongs and other control frames. Control opcodes must have at
/// most 125 bytes of payload (not checked here; a peer refuses longer ones).
pub fn server_frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(10 + payload.len());
    encode_frame(true, opcode, payload, None, &mut out);
    out.freeze()
}

/// A complete server close frame: `code`, then `reason` truncated to fit the 125-byte control payload (at most
/// 123 bytes, cut on a char boundary).
pub fn server_close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    server_frame(Opcode::Close, &payload[..2 + end])
}

/// Client side (load generator, tests): appends a complete masked FIN frame to `out`.
pub fn encode_client_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4], out: &mut BytesMut) {
    encode_frame(true, opcode, payload, Some(mask), out);
}

/// Appends any frame to `out`: FIN or not, masked (client) or not (server). For tests and tools that need
/// fragments; the payload is masked in `out` when `mask` is given.
pub fn encode_frame(
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut BytesMut,
) {
    let mut head = [0u8; 14];
    let n = write_header(fin, opcode, payload.len(), mask, &mut head);
    out.reserve(n + payload.len());
    out.put_slice(&head[..n]);
    let start = out.len();
    out.put_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m);
    }
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(sec_websocket_key: &str) -> String {
    let mut input = Vec::with_capacity(sec_websocket_key.len() + HANDSHAKE_GUID.len());
    input.extend_from_slice(sec_websocket_key.as_bytes());
    input.extend_from_slice(HANDSHAKE_GUID.as_bytes());
    let digest = Sha1::digest(&input);
    base64::engine::general_purpose::STANDARD.encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_decode_all(bytes: &[u8], max: usize) -> Result<Vec<WsEvent>, WsError> {
        let mut dec = ServerDecoder::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(ev) = dec.decode(&mut buf)? {
            out.push(ev);
        }
        Ok(out)
    }

    fn client_decode_all(bytes: &[u8], max: usize) -> Result<Vec<WsEvent>, WsError> {
        let mut dec = ClientDecoder::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(ev) = dec.decode(&mut buf)? {
            out.push(ev);
        }
        Ok(out)
    }

    fn masked(fin: bool, op: Opcode, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode_frame(fin, op, payload, Some([1, 2, 3, 4]), &mut out);
        out
    }

    fn first_error(bytes: &[u8]) -> WsError {
        server_decode_all(bytes, 1 << 20).unwrap_err()
    }

    // RFC 6455 §5.7 examples.
    const RFC_MASKED_HELLO: [u8; 11] = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    const RFC_UNMASKED_HELLO: [u8; 7] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];

    #[test]
    fn rfc_masked_hello() {
        assert_eq!(
            server_decode_all(&RFC_MASKED_HELLO, 100),
            Ok(vec![WsEvent::Text(Bytes::from_static(b"Hello"))])
        );
        let mut enc = BytesMut::new();
        encode_client_frame(Opcode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d], &mut enc);
        assert_eq!(&enc[..], &RFC_MASKED_HELLO);
    }

    #[test]
    fn rfc_unmasked_hello_client_side_and_refused_by_server() {
        assert_eq!(
            client_decode_all(&RFC_UNMASKED_HELLO, 100),
            Ok(vec![WsEvent::Text(Bytes::from_static(b"Hello"))])
        );
        assert_eq!(
            &server_frame(Opcode::Text, b"Hello")[..],
            &RFC_UNMASKED_HELLO
        );
        assert_eq!(first_error(&RFC_UNMASKED_HELLO), WsError::UnmaskedFrame);
        assert_eq!(
            client_decode_all(&RFC_MASKED_HELLO, 100),
            Err(WsError::MaskedFrame)
        );
    }

    #[test]
    fn rfc_fragmented_unmasked_text() {
        let bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        assert_eq!(
            client_decode_all(&bytes, 100),
            Ok(vec![WsEvent::Text(Bytes::from_static(b"Hello"))])
        );
    }

    #[test]
    fn rfc_ping_and_masked_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            client_decode_all(&ping, 100),
            Ok(vec![WsEvent::Ping(Bytes::from_static(b"Hello"))])
        );
        assert_eq!(&server_frame(Opcode::Ping, b"Hello")[..], &ping);
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            server_decode_all(&pong, 100),
            Ok(vec![WsEvent::Pong(Bytes::from_static(b"Hello"))])
        );
    }

    #[test]
    fn rfc_16_and_64_bit_lengths() {
        let payload: Vec<u8> = (0..=255u8).collect();
        let mut frame = vec![0x82, 0x7E, 0x01, 0x00];
        frame.extend_from_slice(&payload);
        assert_eq!(
            client_decode_all(&frame, 1 << 20),
            Ok(vec![WsEvent::Binary(Bytes::from(payload.clone()))])
        );
        assert_eq!(&server_frame(Opcode::Binary, &payload)[..], &frame[..]);

        let big = vec![0xA5u8; 65536];
        let mut frame = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
        frame.extend_from_slice(&big);
        assert_eq!(
            client_decode_all(&frame, 1 << 20),
            Ok(vec![WsEvent::Binary(Bytes::from(big.clone()))])
        );
        assert_eq!(&server_frame(Opcode::Binary, &big)[..], &frame[..]);

        // Masked versions through the server decoder.
        let mut enc = BytesMut::new();
        encode_client_frame(Opcode::Binary, &payload, [9, 8, 7, 6], &mut enc);
        assert_eq!(enc.len(), 4 + 4 + 256);
        encode_client_frame(Opcode::Binary, &big, [9, 8, 7, 6], &mut enc);
        assert_eq!(
            server_decode_all(&enc, 1 << 20),
            Ok(vec![
                WsEvent::Binary(Bytes::from(payload)),
                WsEvent::Binary(Bytes::from(big))
            ])
        );
    }

    #[test]
    fn header_lengths() {
        let mut out = [0u8; 10];
        assert_eq!(encode_server_header(Opcode::Binary, 0, &mut out), 2);
        assert_eq!(out[..2], [0x82, 0]);
        assert_eq!(encode_server_header(Opcode::Binary, 125, &mut out), 2);
        assert_eq!(out[..2], [0x82, 125]);
        assert_eq!(encode_server_header(Opcode::Binary, 126, &mut out), 4);
        assert_eq!(out[..4], [0x82, 126, 0, 126]);
        assert_eq!(encode_server_header(Opcode::Binary, 65535, &mut out), 4);
        assert_eq!(out[..4], [0x82, 126, 0xFF, 0xFF]);
        assert_eq!(encode_server_header(Opcode::Pong, 65536, &mut out), 10);
        assert_eq!(out, [0x8A, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn pending_frame_len_is_known_once_the_header_is() {
        let dec = ServerDecoder::new(1 << 20);
        for len in [0usize, 5, 125, 126, 4096, 65535, 65536, 100_000] {
            let mut buf = BytesMut::new();
            encode_client_frame(Opcode::Binary, &vec![1u8; len], [1, 2, 3, 4], &mut buf);
            let header = buf.len() - len;
            assert_eq!(dec.pending_frame_len(&buf), Some(buf.len()), "len {len}");
            // Every prefix that still lacks part of the header (mask included) says nothing.
            for cut in 0..header {
                assert_eq!(
                    dec.pending_frame_len(&buf[..cut]),
                    None,
                    "len {len} cut {cut}"
                );
            }
            // The header alone is enough.
            assert_eq!(dec.pending_frame_len(&buf[..header]), Some(buf.len()));
        }
        // Over the limit, unmasked or reserved bits: no length (decode reports the error).
        let mut big = BytesMut::new();
        encode_client_frame(Opcode::Binary, &[0u8; 2000], [1, 2, 3, 4], &mut big);
        assert_eq!(ServerDecoder::new(1000).pending_frame_len(&big), None);
        assert_eq!(dec.pending_frame_len(&[0x82, 0x05, b'h']), None);
        assert_eq!(dec.pending_frame_len(&[0xC2, 0x80, 0, 0, 0, 0]), None);
    }

    #[test]
    fn unfragmented_payload_is_not_copied() {
        let mut buf = BytesMut::new();
        encode_client_frame(Opcode::Binary, &[7u8; 300], [1, 2, 3, 4], &mut buf);
        let start = buf.as_ptr();
        let mut dec = ServerDecoder::new(1000);
        let Some(WsEvent::Binary(p)) = dec.decode(&mut buf).unwrap() else {
            panic!("expected binary")
        };
        assert_eq!(p.as_ptr(), start.wrapping_add(8)); // 2-byte header + 2-byte length + 4-byte mask
        assert_eq!(&p[..], &[7u8; 300][..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn fragmented_binary_with_ping_and_close_in_between() {
        let mut bytes = masked(false, Opcode::Binary, b"ab");
        bytes.extend_from_slice(&masked(true, Opcode::Ping, b"p"));
        bytes.extend_from_slice(&masked(false, Opcode::Continuation, b""));
        bytes.extend_from_slice(&masked(true, Opcode::Pong, b""));
        bytes.extend_from_slice(&masked(true, Opcode::Continuation, b"cd"));
        bytes.extend_from_slice(&masked(true, Opcode::Binary, b"next"));
        assert_eq!(
            server_decode_all(&bytes, 100),
            Ok(vec![
                WsEvent::Ping(Bytes::from_static(b"p")),
                WsEvent::Pong(Bytes::new()),
                WsEvent::Binary(Bytes::from_static(b"abcd")),
                WsEvent::Binary(Bytes::from_static(b"next")),
            ])
        );
    }

    #[test]
    fn fragmented_state_is_reported() {
        let mut dec = ServerDecoder::new(100);
        let mut buf = masked(false, Opcode::Text, b"a");
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(dec.in_fragmented_message());
        buf.extend_from_slice(&masked(true, Opcode::Continuation, b"b"));
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(WsEvent::Text(Bytes::from_static(b"ab"))))
        );
        assert!(!dec.in_fragmented_message());
    }

    #[test]
    fn partial_input_consumes_nothing_of_an_incomplete_frame() {
        let frame = masked(true, Opcode::Binary, &[5u8; 200]);
        for cut in 0..frame.len() {
            let mut dec = ServerDecoder::new(1000);
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(dec.decode(&mut buf), Ok(None), "cut {cut}");
            assert_eq!(buf.len(), cut);
            buf.extend_from_slice(&frame[cut..]);
            assert_eq!(
                dec.decode(&mut buf),
                Ok(Some(WsEvent::Binary(Bytes::from(vec![5u8; 200]))))
            );
        }
    }

    #[test]
    fn empty_messages() {
        let bytes = masked(true, Opcode::Binary, b"");
        assert_eq!(
            server_decode_all(&bytes, 0),
            Ok(vec![WsEvent::Binary(Bytes::new())])
        );
    }

    #[test]
    fn error_reserved_bits() {
        for rsv in 1..8u8 {
            let mut f = masked(true, Opcode::Binary, b"x");
            f[0] |= rsv << 4;
            assert_eq!(first_error(&f), WsError::ReservedBits(rsv));
        }
    }

    #[test]
    fn error_unknown_opcodes() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(first_error(&[0x80 | op, 0x80]), WsError::UnknownOpcode(op));
            assert_eq!(Opcode::from_u8(op), None);
        }
        for op in [
            Opcode::Continuation,
            Opcode::Text,
            Opcode::Binary,
            Opcode::Close,
            Opcode::Ping,
            Opcode::Pong,
        ] {
            assert_eq!(Opcode::from_u8(op.as_u8()), Some(op));
        }
    }

    #[test]
    fn error_detected_from_two_bytes() {
        // Errors visible in the first two bytes are reported before the rest arrives.
        let mut dec = ServerDecoder::new(100);
        assert_eq!(dec.decode(&mut BytesMut::from(&[0x82u8][..])), Ok(None));
        assert_eq!(
            dec.decode(&mut BytesMut::from(&[0x82u8, 0x05][..])),
            Err(WsError::UnmaskedFrame)
        );
    }

    #[test]
    fn error_control_frame_too_long_or_fragmented() {
        for op in [Opcode::Close, Opcode::Ping, Opcode::Pong] {
            let payload = [0u8; 126];
            assert_eq!(
                first_error(&masked(true, op, &payload)),
                WsError::ControlFrameTooLong
            );
            assert_eq!(
                first_error(&masked(false, op, b"")),
                WsError::FragmentedControlFrame
            );
            // 125 is fine (for close, it needs a valid code).
            let mut ok = [b'a'; 125];
            ok[..2].copy_from_slice(&1000u16.to_be_bytes());
            assert!(server_decode_all(&masked(true, op, &ok), 0).is_ok());
        }
        // Even a short 64-bit-encoded length is too long for a control frame.
        assert_eq!(first_error(&[0x89, 0xFF]), WsError::ControlFrameTooLong);
    }

    #[test]
    fn error_message_too_big_from_header_alone() {
        let mut dec = ServerDecoder::new(10);
        // Header of an 11-byte masked binary frame, no payload yet.
        let mut buf = BytesMut::from(&[0x82u8, 0x80 | 11][..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(WsError::MessageTooBig { len: 11, max: 10 })
        );
        assert_eq!(
            WsError::MessageTooBig { len: 11, max: 10 }.close_code(),
            1009
        );
        // 64-bit length of 2^40 with no payload.
        let mut buf = BytesMut::from(&[0x82u8, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0][..]);
        assert_eq!(
            ServerDecoder::new(10).decode(&mut buf),
            Err(WsError::MessageTooBig {
                len: 1 << 40,
                max: 10
            })
        );
        // Exactly the limit is fine.
        assert!(server_decode_all(&masked(true, Opcode::Binary, &[0; 10]), 10).is_ok());
    }

    #[test]
    fn error_fragmented_message_too_big() {
        let mut bytes = masked(false, Opcode::Binary, &[0; 6]);
        bytes.extend_from_slice(&masked(false, Opcode::Continuation, &[0; 4]));
        bytes.extend_from_slice(&masked(true, Opcode::Continuation, &[0; 1]));
        assert_eq!(
            server_decode_all(&bytes, 10),
            Err(WsError::MessageTooBig { len: 11, max: 10 })
        );
        assert!(server_decode_all(&bytes, 11).is_ok());
    }

    #[test]
    fn error_invalid_64_bit_length() {
        assert_eq!(
            first_error(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            WsError::InvalidLength
        );
    }

    #[test]
    fn error_continuation_without_start() {
        assert_eq!(
            first_error(&masked(true, Opcode::Continuation, b"x")),
            WsError::ContinuationWithoutStart
        );
        // Also after a fragmented message completed.
        let mut bytes = masked(false, Opcode::Binary, b"a");
        bytes.extend_from_slice(&masked(true, Opcode::Continuation, b"b"));
        bytes.extend_from_slice(&masked(false, Opcode::Continuation, b"c"));
        assert_eq!(first_error(&bytes), WsError::ContinuationWithoutStart);
    }

    #[test]
    fn error_new_data_frame_in_fragmented_message() {
        for op in [Opcode::Text, Opcode::Binary] {
            let mut bytes = masked(false, Opcode::Binary, b"a");
            bytes.extend_from_slice(&masked(true, op, b"b"));
            assert_eq!(first_error(&bytes), WsError::UnfinishedFragmentedMessage);
        }
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            server_decode_all(&masked(true, Opcode::Close, b""), 0),
            Ok(vec![WsEvent::Close {
                code: None,
                reason: String::new()
            }])
        );
        let mut p = 1001u16.to_be_bytes().to_vec();
        p.extend_from_slice("bye ✓".as_bytes());
        assert_eq!(
            server_decode_all(&masked(true, Opcode::Close, &p), 0),
            Ok(vec![WsEvent::Close {
                code: Some(1001),
                reason: "bye ✓".into()
            }])
        );
        for code in [1000u16, 1003, 1007, 1011, 1014, 3000, 4006, 4999] {
            assert!(
                server_decode_all(&masked(true, Opcode::Close, &code.to_be_bytes()), 0).is_ok(),
                "{code}"
            );
        }
    }

    #[test]
    fn error_close_payload_of_one_byte() {
        let e = first_error(&masked(true, Opcode::Close, &[3]));
        assert_eq!(e, WsError::InvalidClosePayload);
        assert_eq!(e.close_code(), 1002);
    }

    #[test]
    fn error_bad_close_codes() {
        for code in [
            0u16,
            999,
            1004,
            1005,
            1006,
            1015,
            1016,
            2000,
            2999,
            5000,
            u16::MAX,
        ] {
            assert_eq!(
                first_error(&masked(true, Opcode::Close, &code.to_be_bytes())),
                WsError::InvalidCloseCode(code)
            );
        }
    }

    #[test]
    fn error_close_reason_not_utf8() {
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(&[0xFF, 0xFE]);
        let e = first_error(&masked(true, Opcode::Close, &p));
        assert_eq!(e, WsError::InvalidCloseReason);
        assert_eq!(e.close_code(), 1007);
    }

    #[test]
    fn error_close_codes() {
        assert_eq!(WsError::UnmaskedFrame.close_code(), 1002);
        assert_eq!(WsError::ReservedBits(1).close_code(), 1002);
        assert_eq!(WsError::InvalidCloseCode(5).close_code(), 1002);
    }

    #[test]
    fn server_close_frame_truncates_on_char_boundary() {
        let f = server_close_frame(4006, "protocolError");
        assert_eq!(f[0], 0x88);
        assert_eq!(
            client_decode_all(&f, 0),
            Ok(vec![WsEvent::Close {
                code: Some(4006),
                reason: "protocolError".into()
            }])
        );

        let long = "é".repeat(100); // 200 bytes, 2 bytes per char
        let f = server_close_frame(1000, &long);
        assert_eq!(f[1] as usize, 2 + 122);
        let Ok(evs) = client_decode_all(&f, 0) else {
            panic!("decodes")
        };
        assert_eq!(
            evs,
            vec![WsEvent::Close {
                code: Some(1000),
                reason: "é".repeat(61)
            }]
        );
        assert_eq!(server_close_frame(1000, &"a".repeat(500)).len(), 2 + 125);
    }

    #[test]
    fn mask_matches_bytewise_reference_at_all_lengths() {
        let mask = [0x11, 0x22, 0x44, 0x88];
        for len in 0..300 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut fast = data.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn accept_key_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accept_key_other_keys() {
        // RFC 6455 §4.2.2: base64 of the SHA-1 of the key and the GUID (values from Python's
        // hashlib and base64). The empty key hashes the GUID alone.
        assert_eq!(
            accept_key("x3JJHMbDL1EzLkh9GBhXDw=="),
            "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
        );
        assert_eq!(accept_key(""), "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w=");
    }
}
