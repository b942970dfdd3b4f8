//! The relay's QUIC mapping (docs/protocol.md, "Joining over QUIC"): the ALPN, the ticket prelude on the first
//! bidirectional stream, and the decoder of length-delimited relay frames on QUIC streams.

use bytes::{BufMut, Bytes, BytesMut};

use crate::close::CloseCode;
use crate::frame::{check_header, Frame, FrameError, FrameHeader, HEADER_LEN};

/// The ALPN protocol id of relay QUIC connections.
pub const ALPN: &[u8] = b"assist-relay/1";

/// The largest UDP payload a relay QUIC endpoint (the relay's and a client's) sends or accepts:
/// the upper bound of its path MTU discovery and its `max_udp_payload_size` transport parameter
/// (section "Joining over QUIC" in docs/protocol.md).
///
/// Every connection starts at 1,200-byte datagrams, as QUIC requires; MTU discovery (RFC 9000
/// §14.3, DPLPMTUD) then probes up to the smaller of this bound and what the path carries (about
/// 1,450 bytes across the internet, more on a LAN with jumbo frames or on loopback). Fewer, larger
/// datagrams per screen frame is most of QUIC's cost per byte: each one is encrypted, header-protected,
/// acknowledged and tracked on its own.
///
/// Why 6,550 and not 65,527 (the largest UDP payload): quinn hands the kernel up to 10 datagrams in
/// one segmentation-offload (GSO) send, and Linux takes at most 65,507 bytes of UDP payload in one
/// such send over IPv4. With larger datagrams whole batches fail with `EMSGSIZE`, which quinn-udp
/// drops silently (as it would an oversized MTU probe); the losses read as MTU black holes and the
/// connection falls back to 1,200 bytes for a minute. Measured on loopback with 100 QUIC pairs
/// (docs/benchmarks.md): a bound of 8,952 gave 93 black holes, 6,144 none. 10 × 6,550 = 65,500.
pub const MAX_UDP_PAYLOAD: u16 = 6_550;

/// Maximum ticket length in the prelude.
pub const MAX_TICKET_LEN: usize = 4096;

/// Length of the prelude's length prefix.
pub const PRELUDE_LEN_BYTES: usize = 2;

/// A malformed ticket prelude.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreludeError {
    /// The declared ticket length is over [`MAX_TICKET_LEN`] (or over `u16::MAX` when encoding).
    #[error("ticket of {len} bytes exceeds the maximum of {max}")]
    TooLong {
        /// Declared (or given) length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A zero-length ticket.
    #[error("empty ticket")]
    Empty,
    /// The ticket is not UTF-8.
    #[error("ticket is not UTF-8")]
    NotUtf8,
}

impl PreludeError {
    /// The close code for a connection that sent this: [`CloseCode::BadTicket`].
    pub fn close_code(&self) -> CloseCode {
        CloseCode::BadTicket
    }
}

/// The ticket prelude: `u16` BE length, then the ticket bytes.
///
/// # Panics
/// If `ticket` is longer than `u16::MAX` bytes, which the prelude cannot express; use
/// [`try_encode_ticket_prelude`] for tickets from untrusted sources.
pub fn encode_ticket_prelude(ticket: &str) -> Bytes {
    match try_encode_ticket_prelude_max(ticket, usize::from(u16::MAX)) {
        Ok(b) => b,
        Err(e) => panic!("cannot encode ticket prelude: {e}"),
    }
}

/// Like [`encode_ticket_prelude`], but refuses empty tickets and tickets over [`MAX_TICKET_LEN`] (which the
/// relay would refuse) instead of encoding them.
pub fn try_encode_ticket_prelude(ticket: &str) -> Result<Bytes, PreludeError> {
    if ticket.is_empty() {
        return Err(PreludeError::Empty);
    }
    try_encode_ticket_prelude_max(ticket, MAX_TICKET_LEN)
}

fn try_encode_ticket_prelude_max(ticket: &str, max: usize) -> Result<Bytes, PreludeError> {
    let len = u16::try_from(ticket.len())
        .ok()
        .filter(|&l| usize::from(l) <= max)
        .ok_or(PreludeError::TooLong {
            len: ticket.len(),
            max,
        })?;
    let mut out = BytesMut::with_capacity(PRELUDE_LEN_BYTES + ticket.len());
    out.put_u16(len);
    out.put_slice(ticket.as_bytes());
    Ok(out.freeze())
}

/// Parses the ticket prelude from the front of `buf`.
///
/// `Ok(None)` means more bytes are needed; otherwise the ticket and the number of bytes it took (the length
/// prefix included). A declared length over [`MAX_TICKET_LEN`] is refused as soon as the prefix is read.
pub fn parse_ticket_prelude(buf: &[u8]) -> Result<Option<(String, usize)>, PreludeError> {
    let Some(&[a, b]) = buf.first_chunk::<PRELUDE_LEN_BYTES>() else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([a, b]));
    if len == 0 {
        return Err(PreludeError::Empty);
    }
    if len > MAX_TICKET_LEN {
        return Err(PreludeError::TooLong {
            len,
            max: MAX_TICKET_LEN,
        });
    }
    let end = PRELUDE_LEN_BYTES + len;
    let Some(ticket) = buf.get(PRELUDE_LEN_BYTES..end) else {
        return Ok(None);
    };
    let ticket = std::str::from_utf8(ticket).map_err(|_| PreludeError::NotUtf8)?;
    Ok(Some((ticket.to_owned(), end)))
}

/// Incremental decoder of length-delimited frames on a QUIC stream (the 6-byte header gives the length).
#[derive(Debug, Clone)]
pub struct StreamFrameDecoder {
    max_payload: usize,
}

impl StreamFrameDecoder {
    /// A decoder that refuses payloads over `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        StreamFrameDecoder { max_payload }
    }

    /// Splits the next whole frame off the front of `buf` (no copy: the frame's bytes are the split-off part).
    ///
    /// `Ok(None)` means more bytes are needed (nothing is consumed). The header is validated as soon as it is
    /// complete, before its payload is buffered: unknown channel, reserved flags, payload over `max_payload`,
    /// and, when `from_client`, [`FLAG_FROM_RELAY`](crate::frame::FLAG_FROM_RELAY).
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        from_client: bool,
    ) -> Result<Option<Frame>, FrameError> {
        let Some(header) = FrameHeader::parse(buf)? else {
            return Ok(None);
        };
        check_header(&header, self.max_payload, from_client)?;
        let frame_len = HEADER_LEN + header.len as usize; // len <= max_payload, a usize
        if buf.len() < frame_len {
            return Ok(None);
        }
        Ok(Some(Frame {
            header,
            bytes: buf.split_to(frame_len).freeze(),
        }))
    }

    /// Total bytes (header included) of the frame at the front of `buf`, once its header is complete and valid;
    /// lets the IO side reserve the buffer for it in one go.
    pub fn pending_frame_len(&self, buf: &[u8]) -> Option<usize> {
        match FrameHeader::parse(buf) {
            Ok(Some(h)) if (h.len as usize) <= self.max_payload => Some(h.frame_len()),
            _ => None,
        }
    }

    /// The payload limit.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }
}

/// Screen frames a QUIC leg may always have in flight towards its peer (sent, not yet acknowledged).
pub const SCREEN_FRAMES_IN_FLIGHT: usize = 4;

/// Screen frames a QUIC leg may have in flight at most, when the path's congestion window holds them.
pub const SCREEN_FRAMES_IN_FLIGHT_MAX: usize = 16;

/// Whether a QUIC leg may hand one more screen frame of `len` bytes to its connection, with `frames`
/// frames of `bytes` bytes in flight (sent, not yet acknowledged) and a congestion window of `cwnd` bytes.
///
/// Up to [`SCREEN_FRAMES_IN_FLIGHT`] frames always may (a path that has room for less still gets a few
/// frames in flight); beyond that, up to [`SCREEN_FRAMES_IN_FLIGHT_MAX`], only while all of them fit in the
/// window: frames the path cannot carry yet stay in the session's queue, where the stale ones are dropped
/// with a keyframe request, instead of waiting in the connection's send buffer where they cannot be. A
/// slow path (small window) therefore holds about 4 frames; a fast one up to 16.
pub fn may_send_screen(frames: usize, bytes: u64, len: u64, cwnd: u64) -> bool {
    frames < SCREEN_FRAMES_IN_FLIGHT
        || (frames < SCREEN_FRAMES_IN_FLIGHT_MAX && bytes.saturating_add(len) <= cwnd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screen_frames_in_flight_follow_the_congestion_window_between_4_and_16() {
        let k64 = 65_536u64;
        // Up to 4 always, whatever the window.
        for frames in 0..SCREEN_FRAMES_IN_FLIGHT {
            assert!(may_send_screen(frames, frames as u64 * k64, k64, 0));
        }
        // Beyond 4, only within the window.
        assert!(!may_send_screen(4, 4 * k64, k64, 4 * k64));
        assert!(may_send_screen(4, 4 * k64, k64, 5 * k64));
        assert!(!may_send_screen(8, 8 * k64, k64, 9 * k64 - 1));
        // Never beyond 16, whatever the window.
        assert!(may_send_screen(15, 15 * k64, k64, u64::MAX));
        assert!(!may_send_screen(16, 0, 0, u64::MAX));
        assert!(!may_send_screen(usize::MAX, u64::MAX, u64::MAX, u64::MAX));
    }

    proptest::proptest! {
        /// Whatever the numbers: at most 16 in flight; under 4 always; past 4 only what fits the window.
        #[test]
        fn screen_frames_in_flight_bounds_hold(frames in 0usize..40, bytes in 0u64..1 << 30, len in 0u64..1 << 24, cwnd in 0u64..1 << 31) {
            let ok = may_send_screen(frames, bytes, len, cwnd);
            if frames >= SCREEN_FRAMES_IN_FLIGHT_MAX { proptest::prop_assert!(!ok); }
            if frames < SCREEN_FRAMES_IN_FLIGHT { proptest::prop_assert!(ok); }
            if frames >= SCREEN_FRAMES_IN_FLIGHT && ok { proptest::prop_assert!(bytes + len <= cwnd); }
        }
    }
    use crate::frame::{Channel, FLAG_FROM_RELAY, FLAG_KEYFRAME};

    #[test]
    fn prelude_round_trip() {
        let p = encode_ticket_prelude("eyJ.abc.def");
        assert_eq!(&p[..2], &[0, 11]);
        assert_eq!(
            parse_ticket_prelude(&p),
            Ok(Some(("eyJ.abc.def".to_owned(), 13)))
        );
        // Trailing bytes (the first frames) are left alone.
        let mut more = p.to_vec();
        more.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            parse_ticket_prelude(&more),
            Ok(Some(("eyJ.abc.def".to_owned(), 13)))
        );
        assert_eq!(try_encode_ticket_prelude("eyJ.abc.def"), Ok(p));
    }

    #[test]
    fn prelude_needs_more() {
        let p = encode_ticket_prelude("ticket");
        for n in 0..p.len() {
            assert_eq!(parse_ticket_prelude(&p[..n]), Ok(None), "{n}");
        }
    }

    #[test]
    fn prelude_errors() {
        assert_eq!(parse_ticket_prelude(&[0, 0]), Err(PreludeError::Empty));
        assert_eq!(
            parse_ticket_prelude(&[0x10, 0x01]),
            Err(PreludeError::TooLong {
                len: 4097,
                max: 4096
            })
        );
        assert_eq!(
            parse_ticket_prelude(&[0xFF, 0xFF]),
            Err(PreludeError::TooLong {
                len: 65535,
                max: 4096
            })
        );
        assert_eq!(
            parse_ticket_prelude(&[0, 2, 0xC3, 0x28]),
            Err(PreludeError::NotUtf8)
        );
        assert_eq!(PreludeError::Empty.close_code(), CloseCode::BadTicket);
        // The maximum is allowed.
        let t = "t".repeat(MAX_TICKET_LEN);
        assert_eq!(
            parse_ticket_prelude(&encode_ticket_prelude(&t)),
            Ok(Some((t, MAX_TICKET_LEN + 2)))
        );
    }

    #[test]
    fn try_encode_refuses_what_the_relay_refuses() {
        assert_eq!(try_encode_ticket_prelude(""), Err(PreludeError::Empty));
        let t = "t".repeat(MAX_TICKET_LEN + 1);
        assert_eq!(
            try_encode_ticket_prelude(&t),
            Err(PreludeError::TooLong {
                len: 4097,
                max: 4096
            })
        );
        // The infallible encoder still encodes it (the relay will refuse it).
        assert_eq!(encode_ticket_prelude(&t).len(), MAX_TICKET_LEN + 3);
    }

    #[test]
    #[should_panic(expected = "cannot encode ticket prelude")]
    fn encode_panics_past_u16() {
        encode_ticket_prelude(&"t".repeat(70_000));
    }

    #[test]
    fn stream_decoder_splits_frames_without_copying() {
        let a = Frame::new(Channel::Input, 0, b"click");
        let b = Frame::new(Channel::Screen, FLAG_KEYFRAME, &[9; 100]);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&a.bytes);
        buf.extend_from_slice(&b.bytes);
        let base = buf.as_ptr();
        let mut dec = StreamFrameDecoder::new(100);
        assert_eq!(dec.pending_frame_len(&buf), Some(11));
        let got_a = dec.decode(&mut buf, true).unwrap().unwrap();
        assert_eq!(got_a, a);
        assert_eq!(got_a.bytes.as_ptr(), base);
        assert_eq!(dec.decode(&mut buf, true), Ok(Some(b)));
        assert_eq!(dec.decode(&mut buf, true), Ok(None));
        assert!(buf.is_empty());
        assert_eq!(dec.max_payload(), 100);
    }

    #[test]
    fn stream_decoder_partial_input() {
        let f = Frame::new(Channel::Chat, 0, "hello".as_bytes());
        let mut dec = StreamFrameDecoder::new(100);
        for cut in 0..f.len() {
            let mut buf = BytesMut::from(&f.bytes[..cut]);
            assert_eq!(dec.decode(&mut buf, true), Ok(None));
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn stream_decoder_errors() {
        let mut dec = StreamFrameDecoder::new(10);
        let cases: [(&[u8], FrameError); 4] = [
            (&[4, 0, 0, 0, 0, 0], FrameError::UnknownChannel(4)),
            (&[0, 0x40, 0, 0, 0, 0], FrameError::ReservedFlags(0x40)),
            (&[0, FLAG_FROM_RELAY, 0, 0, 0, 0], FrameError::FromRelayFlag),
            // Too large is refused from the header alone, before the payload arrives.
            (
                &[1, 0, 0, 0, 0, 11],
                FrameError::TooLarge { len: 11, max: 10 },
            ),
        ];
        for (bytes, err) in cases {
            assert_eq!(
                dec.decode(&mut BytesMut::from(bytes), true),
                Err(err),
                "{bytes:?}"
            );
        }
        assert_eq!(dec.pending_frame_len(&[1, 0, 0, 0, 0, 11]), None);
        // The relay's own frames are fine when reading as a client.
        let relay = Frame::new(Channel::Control, FLAG_FROM_RELAY, b"{}");
        assert_eq!(
            dec.decode(&mut BytesMut::from(&relay.bytes[..]), false),
            Ok(Some(relay))
        );
    }

    #[test]
    fn alpn() {
        assert_eq!(ALPN, b"assist-relay/1");
    }
}
