//! Relay frames (docs/protocol.md, "Frames"): a 6-byte header (channel, flags, u32 BE payload length) and
//! the payload.
//!
//! A [`Frame`] holds the whole frame (header and payload) in one shared [`Bytes`], so forwarding it to the
//! other leg is a reference-count bump, never a copy.

use bytes::{BufMut, Bytes, BytesMut};

use crate::close::CloseCode;
use crate::control::RelayControl;

/// Length of the frame header: channel (1), flags (1), payload length (4).
pub const HEADER_LEN: usize = 6;

/// Default maximum payload length (`relay.max_frame_bytes`): 4 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// Flag bit 0: a screen frame that does not depend on earlier ones.
pub const FLAG_KEYFRAME: u8 = 0x01;

/// Flag bit 7: a control frame the relay originated. A client frame with it set is a protocol error.
pub const FLAG_FROM_RELAY: u8 = 0x80;

/// Flag bits that must be 0.
pub const RESERVED_FLAGS: u8 = !(FLAG_KEYFRAME | FLAG_FROM_RELAY);

/// The logical channel of a frame.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// 0: JSON control messages, both directions.
    Control = 0,
    /// 1: screen frames, sharer → helper. The only channel dropped under congestion.
    Screen = 1,
    /// 2: input events, helper → sharer.
    Input = 2,
    /// 3: chat text, both directions.
    Chat = 3,
}

impl Channel {
    /// Every channel, in numeric order.
    pub const ALL: [Channel; 4] = [
        Channel::Control,
        Channel::Screen,
        Channel::Input,
        Channel::Chat,
    ];

    /// Lower-case name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Control => "control",
            Channel::Screen => "screen",
            Channel::Input => "input",
            Channel::Chat => "chat",
        }
    }

    /// The channel with this wire value, if any.
    pub fn from_u8(value: u8) -> Option<Channel> {
        match value {
            0 => Some(Channel::Control),
            1 => Some(Channel::Screen),
            2 => Some(Channel::Input),
            3 => Some(Channel::Chat),
            _ => None,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame's channel.
    pub channel: Channel,
    /// Flag bits ([`FLAG_KEYFRAME`], [`FLAG_FROM_RELAY`]); the others are 0 in any parsed header.
    pub flags: u8,
    /// Payload length in bytes (header excluded).
    pub len: u32,
}

impl FrameHeader {
    /// Parses a header from the front of `buf`.
    ///
    /// `Ok(None)` if `buf` holds fewer than [`HEADER_LEN`] bytes. An unknown channel or reserved flag bits
    /// (`0x7E`) are errors. [`FLAG_FROM_RELAY`] is accepted here; whether it is allowed depends on who sent
    /// the frame (see [`Frame::from_client_bytes`]).
    pub fn parse(buf: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let channel = Channel::from_u8(head[0]).ok_or(FrameError::UnknownChannel(head[0]))?;
        let flags = head[1];
        if flags & RESERVED_FLAGS != 0 {
            return Err(FrameError::ReservedFlags(flags));
        }
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
        Ok(Some(FrameHeader {
            channel,
            flags,
            len,
        }))
    }

    /// The header's wire encoding.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let l = self.len.to_be_bytes();
        [self.channel as u8, self.flags, l[0], l[1], l[2], l[3]]
    }

    /// Whether [`FLAG_KEYFRAME`] is set.
    pub fn is_keyframe(&self) -> bool {
        self.flags & FLAG_KEYFRAME != 0
    }

    /// Whether [`FLAG_FROM_RELAY`] is set.
    pub fn is_from_relay(&self) -> bool {
        self.flags & FLAG_FROM_RELAY != 0
    }

    /// Header plus payload length in bytes.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }
}

/// One relay frame: the whole frame bytes (header + payload) shared, never copied.
///
/// Invariant of frames built by this crate: `bytes.len() == HEADER_LEN + header.len` and `bytes[..6]` is
/// `header.encode()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The parsed header.
    pub header: FrameHeader,
    /// The whole frame on the wire: header followed by payload.
    pub bytes: Bytes,
}

impl Frame {
    /// From one WebSocket binary message or one QUIC-delimited frame: validates header,
    /// `len == bytes.len() - 6`, `len <= max_payload`, and that a client frame does not set
    /// [`FLAG_FROM_RELAY`].
    pub fn from_client_bytes(bytes: Bytes, max_payload: usize) -> Result<Frame, FrameError> {
        Frame::from_bytes(bytes, max_payload, true)
    }

    /// Like [`Frame::from_client_bytes`], but [`FLAG_FROM_RELAY`] is allowed when `from_client` is false
    /// (a client reading the relay's frames).
    pub fn from_bytes(
        bytes: Bytes,
        max_payload: usize,
        from_client: bool,
    ) -> Result<Frame, FrameError> {
        let header = FrameHeader::parse(&bytes)?.ok_or(FrameError::Truncated)?;
        check_header(&header, max_payload, from_client)?;
        let actual = bytes.len() - HEADER_LEN; // parse returned Some: at least HEADER_LEN bytes
        if header.len as usize != actual {
            return Err(FrameError::LengthMismatch {
                declared: header.len,
                actual,
            });
        }
        Ok(Frame { header, bytes })
    }

    /// Builds a frame from its parts, copying `payload` after the header (relay control frames, tests).
    ///
    /// # Panics
    /// If `payload` is longer than `u32::MAX` bytes, which no frame can carry.
    pub fn new(channel: Channel, flags: u8, payload: &[u8]) -> Frame {
        let len = u32::try_from(payload.len()).expect("relay frame payload longer than u32::MAX");
        let header = FrameHeader {
            channel,
            flags,
            len,
        };
        let mut buf = BytesMut::with_capacity(HEADER_LEN + payload.len());
        buf.put_slice(&header.encode());
        buf.put_slice(payload);
        Frame {
            header,
            bytes: buf.freeze(),
        }
    }

    /// The payload: a slice of [`Frame::bytes`], no copy.
    pub fn payload(&self) -> Bytes {
        if self.bytes.len() >= HEADER_LEN {
            self.bytes.slice(HEADER_LEN..)
        } else {
            // Only reachable for a hand-built frame that breaks the invariant; never panic on it.
            Bytes::new()
        }
    }

    /// A relay-originated control frame: channel [`Channel::Control`], flags [`FLAG_FROM_RELAY`], JSON payload.
    pub fn relay_control(msg: &RelayControl) -> Frame {
        Frame::new(Channel::Control, FLAG_FROM_RELAY, &msg.to_json())
    }

    /// Length of the whole frame (header + payload): what queues count and writes send.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the frame holds no bytes at all (never true for a valid frame, which has a header).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether this is a screen frame (the only kind dropped under congestion).
    pub fn is_screen(&self) -> bool {
        self.header.channel == Channel::Screen
    }
}

/// Checks a parsed header against the payload limit and, for client frames, the relay flag.
pub(crate) fn check_header(
    header: &FrameHeader,
    max_payload: usize,
    from_client: bool,
) -> Result<(), FrameError> {
    if from_client && header.is_from_relay() {
        return Err(FrameError::FromRelayFlag);
    }
    if header.len as usize > max_payload {
        return Err(FrameError::TooLarge {
            len: header.len as usize,
            max: max_payload,
        });
    }
    Ok(())
}

/// A malformed or refused relay frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The channel byte is not 0..=3.
    #[error("unknown channel {0}")]
    UnknownChannel(u8),
    /// Reserved flag bits (`0x7E`) are set; holds the whole flags byte.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    /// A client frame sets [`FLAG_FROM_RELAY`].
    #[error("client frame sets the from-relay flag")]
    FromRelayFlag,
    /// The header's payload length differs from the message's.
    #[error("declared payload length {declared} but the message holds {actual}")]
    LengthMismatch {
        /// Length in the header.
        declared: u32,
        /// Payload bytes actually present.
        actual: usize,
    },
    /// The payload is over the maximum frame size.
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Declared payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Fewer bytes than a header.
    #[error("frame shorter than its header")]
    Truncated,
}

impl FrameError {
    /// The close code for a leg that sent this: [`CloseCode::FrameTooLarge`] for
    /// [`FrameError::TooLarge`], [`CloseCode::ProtocolError`] otherwise.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::TooLarge { .. } => CloseCode::FrameTooLarge,
            _ => CloseCode::ProtocolError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_values_and_names() {
        for (i, c) in Channel::ALL.into_iter().enumerate() {
            assert_eq!(c as u8 as usize, i);
            assert_eq!(Channel::from_u8(i as u8), Some(c));
        }
        let names: Vec<_> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["control", "screen", "input", "chat"]);
        assert_eq!(Channel::from_u8(4), None);
        assert_eq!(Channel::from_u8(255), None);
    }

    #[test]
    fn header_round_trip_and_layout() {
        let h = FrameHeader {
            channel: Channel::Screen,
            flags: FLAG_KEYFRAME,
            len: 0x0102_0304,
        };
        assert_eq!(h.encode(), [1, 1, 1, 2, 3, 4]);
        assert_eq!(FrameHeader::parse(&h.encode()), Ok(Some(h)));
        assert!(h.is_keyframe());
        assert!(!h.is_from_relay());
        assert_eq!(h.frame_len(), 6 + 0x0102_0304);
    }

    #[test]
    fn header_needs_six_bytes() {
        for n in 0..HEADER_LEN {
            // Even an invalid channel byte is not looked at before the header is complete.
            assert_eq!(FrameHeader::parse(&[9u8; 6][..n]), Ok(None));
        }
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            FrameHeader::parse(&[4, 0, 0, 0, 0, 0]),
            Err(FrameError::UnknownChannel(4))
        );
        assert_eq!(
            FrameHeader::parse(&[0xFF, 0, 0, 0, 0, 0]),
            Err(FrameError::UnknownChannel(0xFF))
        );
        for bit in 1..7 {
            let flags = 1u8 << bit;
            assert_eq!(
                FrameHeader::parse(&[1, flags, 0, 0, 0, 0]),
                Err(FrameError::ReservedFlags(flags))
            );
        }
        let relay = FrameHeader::parse(&[0, 0x81, 0, 0, 0, 0]).unwrap().unwrap();
        assert!(relay.is_from_relay() && relay.is_keyframe());
    }

    #[test]
    fn from_client_bytes_accepts_valid_frames_without_copying() {
        let f = Frame::new(Channel::Input, 0, b"abc");
        let ptr = f.bytes.as_ptr();
        let parsed = Frame::from_client_bytes(f.bytes.clone(), 16).unwrap();
        assert_eq!(parsed, f);
        assert_eq!(parsed.bytes.as_ptr(), ptr);
        assert_eq!(&parsed.payload()[..], b"abc");
        assert_eq!(parsed.payload().as_ptr(), ptr.wrapping_add(HEADER_LEN));
        assert_eq!(parsed.len(), 9);
        assert!(!parsed.is_empty());
        // An empty payload is a valid frame.
        let empty = Frame::from_client_bytes(Bytes::from_static(&[3, 0, 0, 0, 0, 0]), 0).unwrap();
        assert_eq!(empty.header.len, 0);
        assert!(empty.payload().is_empty());
    }

    #[test]
    fn from_client_bytes_errors() {
        let max = 8;
        let cases: [(&[u8], FrameError); 8] = [
            (&[], FrameError::Truncated),
            (&[1, 0, 0, 0, 0], FrameError::Truncated),
            (&[7, 0, 0, 0, 0, 0], FrameError::UnknownChannel(7)),
            (&[1, 0x02, 0, 0, 0, 0], FrameError::ReservedFlags(0x02)),
            (&[0, FLAG_FROM_RELAY, 0, 0, 0, 0], FrameError::FromRelayFlag),
            (
                &[2, 0, 0, 0, 0, 2, 1],
                FrameError::LengthMismatch {
                    declared: 2,
                    actual: 1,
                },
            ),
            (
                &[2, 0, 0, 0, 0, 0, 1],
                FrameError::LengthMismatch {
                    declared: 0,
                    actual: 1,
                },
            ),
            (
                &[1, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                FrameError::TooLarge { len: 9, max },
            ),
        ];
        for (bytes, err) in cases {
            assert_eq!(
                Frame::from_client_bytes(Bytes::copy_from_slice(bytes), max),
                Err(err),
                "{bytes:?}"
            );
        }
        // Declared length over the limit is TooLarge even when the message is short.
        assert_eq!(
            Frame::from_client_bytes(Bytes::from_static(&[1, 0, 0xFF, 0xFF, 0xFF, 0xFF]), max),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max
            })
        );
    }

    #[test]
    fn relay_flag_allowed_from_the_relay() {
        let f = Frame::relay_control(&RelayControl::KeyframeRequest {
            reason: "dropped".into(),
        });
        assert_eq!(f.header.channel, Channel::Control);
        assert_eq!(f.header.flags, FLAG_FROM_RELAY);
        assert_eq!(
            Frame::from_bytes(f.bytes.clone(), 1024, false),
            Ok(f.clone())
        );
        assert_eq!(
            Frame::from_client_bytes(f.bytes.clone(), 1024),
            Err(FrameError::FromRelayFlag)
        );
        assert_eq!(
            RelayControl::from_json(&f.payload()).unwrap(),
            RelayControl::KeyframeRequest {
                reason: "dropped".into()
            }
        );
    }

    #[test]
    fn payload_of_a_broken_hand_built_frame_is_empty() {
        let header = FrameHeader {
            channel: Channel::Chat,
            flags: 0,
            len: 3,
        };
        let f = Frame {
            header,
            bytes: Bytes::from_static(b"ab"),
        };
        assert!(f.payload().is_empty());
    }

    #[test]
    fn error_close_codes() {
        assert_eq!(
            FrameError::TooLarge { len: 1, max: 0 }.close_code(),
            CloseCode::FrameTooLarge
        );
        for e in [
            FrameError::UnknownChannel(9),
            FrameError::ReservedFlags(2),
            FrameError::FromRelayFlag,
            FrameError::LengthMismatch {
                declared: 1,
                actual: 0,
            },
            FrameError::Truncated,
        ] {
            assert_eq!(e.close_code(), CloseCode::ProtocolError, "{e}");
        }
    }
}
