//! A streaming reader of what the relay (or the pass-through baseline) sends: WebSocket server frames
//! each holding one relay frame (`ws == true`), or relay frames back to back on a byte stream.
//!
//! It keeps only what it needs: headers, the 16-byte timestamp + sequence prefix of screen and input
//! payloads, and whole control frames. The rest of a payload is skipped in place, so a 64 KiB screen
//! frame never gets buffered whole and nothing is allocated per message.

use assist_relay_proto::control::RelayControl;
use assist_relay_proto::frame::HEADER_LEN;

/// Bytes of a screen or input payload the generator fills in: send timestamp (ns) and sequence number.
pub const STAMP_LEN: usize = 16;

/// What one message was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A screen (channel 1) or input (channel 2) frame, fully received.
    Data {
        /// Relay channel (1 or 2).
        channel: u8,
        /// Send timestamp from the payload (ns since the process base), 0 if the payload was short.
        ts: u64,
        /// Whole relay frame length (header included).
        bytes: u64,
    },
    /// A control frame, parsed; `None` for JSON the generator does not know.
    Control(Option<RelayControl>),
    /// A chat frame or anything else not measured.
    Other,
    /// A WebSocket ping (counted; the relay does not require answers).
    Ping,
    /// A WebSocket close frame and its code.
    Close(Option<u16>),
}

/// The streaming parser with its read buffer.
pub struct Parser {
    ws: bool,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Payload bytes of the current message still to skip.
    skip: usize,
    /// The message to report once its last byte has been consumed.
    pending: Option<Event>,
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl Parser {
    /// A parser over a read buffer of `capacity` bytes (control frames must fit in it).
    pub fn new(ws: bool, capacity: usize, leftover: &[u8]) -> Self {
        let mut buf = vec![0u8; capacity.max(leftover.len()).max(4096)];
        buf[..leftover.len()].copy_from_slice(leftover);
        Parser {
            ws,
            buf,
            start: 0,
            end: leftover.len(),
            skip: 0,
            pending: None,
        }
    }

    /// Where the next read should go (compacting the buffer first when needed).
    pub fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() || self.buf.len() - self.end < 512 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`Parser::space`].
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, String> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.end - self.start);
                self.start += n;
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            if let Some(ev) = self.pending.take() {
                return Ok(Some(ev));
            }
            let avail = &self.buf[self.start..self.end];
            let (head_len, msg_len) = if self.ws {
                let [b0, b1, ..] = *avail else {
                    return Ok(None);
                };
                if b1 & 0x80 != 0 {
                    return Err("the relay sent a masked WebSocket frame".into());
                }
                let (hl, len) = match b1 & 0x7F {
                    126 => match avail.get(2..4) {
                        Some(s) => (4, u16::from_be_bytes([s[0], s[1]]) as usize),
                        None => return Ok(None),
                    },
                    127 => match avail.get(2..10) {
                        Some(s) => (10, be_u64(s) as usize),
                        None => return Ok(None),
                    },
                    n => (2, n as usize),
                };
                let opcode = b0 & 0x0F;
                match opcode {
                    0x8..=0xA => {
                        if avail.len() < hl + len {
                            return self.need(hl + len);
                        }
                        let payload = &avail[hl..hl + len];
                        let ev = match opcode {
                            0x8 => Event::Close(
                                payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])),
                            ),
                            0x9 => Event::Ping,
                            _ => Event::Other,
                        };
                        self.start += hl + len;
                        return Ok(Some(ev));
                    }
                    0x2 if b0 & 0x80 != 0 => (hl, len),
                    0x2 => return Err("the relay sent a fragmented WebSocket message".into()),
                    o => return Err(format!("unexpected WebSocket opcode {o:#x}")),
                }
            } else {
                let Some(h) = avail.get(..HEADER_LEN) else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes([h[2], h[3], h[4], h[5]]) as usize;
                (0, HEADER_LEN + len)
            };
            // The relay frame starts at `head_len` and is `msg_len` bytes long.
            if msg_len < HEADER_LEN {
                return Err(format!("relay frame of {msg_len} bytes"));
            }
            if avail.len() < head_len + HEADER_LEN {
                return self.need(head_len + HEADER_LEN);
            }
            let channel = avail[head_len];
            if channel == 0 || channel == 3 {
                // Control (or chat): small; take it whole.
                if avail.len() < head_len + msg_len {
                    return self.need(head_len + msg_len);
                }
                let payload = &avail[head_len + HEADER_LEN..head_len + msg_len];
                let ev = if channel == 0 {
                    Event::Control(RelayControl::from_json(payload).ok())
                } else {
                    Event::Other
                };
                self.start += head_len + msg_len;
                return Ok(Some(ev));
            }
            let want = msg_len.min(HEADER_LEN + STAMP_LEN);
            if avail.len() < head_len + want {
                return self.need(head_len + want);
            }
            let ts = if msg_len >= HEADER_LEN + 8 {
                be_u64(&avail[head_len + HEADER_LEN..])
            } else {
                0
            };
            self.start += head_len + want;
            self.skip = msg_len - want;
            self.pending = Some(Event::Data {
                channel,
                ts,
                bytes: msg_len as u64,
            });
        }
    }

    fn need(&self, n: usize) -> Result<Option<Event>, String> {
        if n > self.buf.len() {
            Err(format!(
                "a {n}-byte header or control message does not fit the {}-byte read buffer",
                self.buf.len()
            ))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use assist_relay_proto::frame::{Channel, Frame};
    use assist_ws::{server_frame, Opcode};

    fn data(channel: Channel, ts: u64, len: usize) -> Frame {
        let mut p = vec![7u8; len];
        p[..8].copy_from_slice(&ts.to_be_bytes());
        Frame::new(channel, 0, &p)
    }

    fn feed_all(p: &mut Parser, bytes: &[u8], chunk: usize) -> Vec<Event> {
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            let mut rest = c;
            while !rest.is_empty() {
                let space = p.space();
                let n = space.len().min(rest.len());
                space[..n].copy_from_slice(&rest[..n]);
                p.filled(n);
                rest = &rest[n..];
                while let Some(ev) = p.next_event().unwrap() {
                    out.push(ev);
                }
            }
        }
        out
    }

    #[test]
    fn ws_and_raw_streams_in_any_chunking() {
        let paired = Frame::relay_control(&RelayControl::Paired {
            mode: "fullControl".into(),
            chat: true,
        });
        let frames = [
            paired.clone(),
            data(Channel::Screen, 42, 70_000),
            data(Channel::Input, 43, 32),
            data(Channel::Screen, 44, 100),
        ];
        let expected = vec![
            Event::Control(Some(RelayControl::Paired {
                mode: "fullControl".into(),
                chat: true,
            })),
            Event::Data {
                channel: 1,
                ts: 42,
                bytes: 70_006,
            },
            Event::Data {
                channel: 2,
                ts: 43,
                bytes: 38,
            },
            Event::Data {
                channel: 1,
                ts: 44,
                bytes: 106,
            },
            Event::Close(Some(4004)),
        ];
        let mut ws = Vec::new();
        let mut raw = Vec::new();
        for f in &frames {
            ws.extend_from_slice(&server_frame(Opcode::Binary, &f.bytes));
            raw.extend_from_slice(&f.bytes);
        }
        ws.extend_from_slice(&assist_ws::server_close_frame(4004, "x"));
        for chunk in [1, 3, 7, 1000, 100_000] {
            let mut p = Parser::new(true, 4096, &[]);
            assert_eq!(feed_all(&mut p, &ws, chunk), expected, "ws chunk {chunk}");
            let mut p = Parser::new(false, 4096, &[]);
            assert_eq!(
                feed_all(&mut p, &raw, chunk),
                expected[..4].to_vec(),
                "raw chunk {chunk}"
            );
        }
    }
}
