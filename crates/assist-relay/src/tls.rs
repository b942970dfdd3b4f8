//! The relay's own TLS 1.3 record layer for WebSocket legs.
//!
//! rustls does the handshake and the HTTP upgrade runs over its stream as for every other request. When
//! the upgrade is done the relay takes the connection's traffic keys out of rustls
//! ([`take_over`]) and from then on reads and writes TLS 1.3 records itself: a read takes as many records
//! as the socket holds (rustls reads 4 KiB at a time, so a 4 KiB frame took two reads), records are
//! decrypted in place in a per-thread buffer and each batch of frames is sealed into one per-thread buffer
//! and written with one call. A leg keeps no TLS buffer while it waits: only a partly received record or
//! a partly written batch is kept, at its exact size. See docs/architecture.md ("Relay") for what a leg
//! over this layer supports and how it ends.
//!
//! The record format is RFC 8446 section 5: a 5-byte header (type 23, version 0x0303, length), the
//! AEAD-sealed inner plaintext (content, then its content type byte, then optional zero padding) and the
//! nonce from the traffic IV and the record's sequence number (section 5.3).
//!
//! What the layer refuses, ending the leg: anything but application data or an alert after the handshake
//! (a client's KeyUpdate included: the traffic secret that would derive the next keys stays in rustls),
//! records over the RFC's limits, a record that fails authentication, and sending past the cipher's
//! confidentiality limit (rustls' figures: 2^23 records with AES-128-GCM, 2^24 with AES-256-GCM).

use aws_lc_rs::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305, NONCE_LEN,
};
use rustls::{ConnectionTrafficSecrets, ProtocolVersion};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS record header's length.
pub const HEADER_LEN: usize = 5;
/// The AEAD tag's length (all three TLS 1.3 ciphers here).
const TAG_LEN: usize = 16;
/// The largest plaintext fragment a record may carry (RFC 8446 5.1).
pub const MAX_FRAGMENT: usize = 16 * 1024;
/// The largest ciphertext a record may carry (RFC 8446 5.2: 2^14 + 256).
const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;
/// The largest whole record.
const MAX_RECORD: usize = HEADER_LEN + MAX_CIPHERTEXT;
/// What sealing adds to a fragment: header, content type byte, tag.
pub const OVERHEAD: usize = HEADER_LEN + 1 + TAG_LEN;

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;

/// Empty application-data records in a row a peer may send before the leg is ended (rustls' bound too).
const MAX_EMPTY_RECORDS: u8 = 32;

/// Size of the per-thread buffer reads land in: room for four whole records.
const RX_SCRATCH_LEN: usize = 4 * MAX_RECORD;
/// Records one write seals at most, and so the per-thread buffer they are sealed into.
const TX_RECORDS: usize = 4;
const TX_SCRATCH_LEN: usize = TX_RECORDS * (MAX_FRAGMENT + OVERHEAD);

thread_local! {
    static RX_SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; RX_SCRATCH_LEN].into_boxed_slice());
    static TX_SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; TX_SCRATCH_LEN].into_boxed_slice());
}

/// Why the record layer ended a leg.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A record header that is not TLS 1.3 application data, or a length out of bounds.
    #[error("malformed TLS record header")]
    BadHeader,
    /// A record that failed authentication.
    #[error("TLS record failed authentication")]
    BadRecord,
    /// A post-handshake handshake message (KeyUpdate, for one), which this layer does not take.
    #[error("post-handshake TLS message (such as KeyUpdate) is not supported on a relay leg")]
    HandshakeMessage,
    /// A fatal alert, or an alert that is not two bytes.
    #[error("TLS alert {0}")]
    Alert(u8),
    /// An inner plaintext of a content type TLS 1.3 does not allow here, or all padding.
    #[error("unexpected TLS content type")]
    UnexpectedContent,
    /// Too many empty records in a row.
    #[error("too many empty TLS records")]
    TooManyEmpty,
    /// Sending more would pass the cipher's confidentiality limit.
    #[error("TLS record limit reached for this connection's keys")]
    KeyLimit,
    /// The traffic secrets were of a cipher this layer does not know.
    #[error("unsupported TLS cipher")]
    UnsupportedCipher,
}

impl From<RecordError> for io::Error {
    fn from(e: RecordError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// One direction's traffic keys and record sequence number.
pub struct Keys {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
    limit: u64,
}

impl Keys {
    /// Keys from rustls' extracted secrets for one direction, starting at sequence number `seq`.
    pub fn new(secrets: ConnectionTrafficSecrets, seq: u64) -> Result<Self, RecordError> {
        let (alg, limit, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, 1u64 << 23, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, 1u64 << 24, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&CHACHA20_POLY1305, u64::MAX, key, iv)
            }
            _ => return Err(RecordError::UnsupportedCipher),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| RecordError::UnsupportedCipher)?;
        let iv: [u8; NONCE_LEN] = iv
            .as_ref()
            .try_into()
            .map_err(|_| RecordError::UnsupportedCipher)?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            seq,
            limit,
        })
    }

    /// The next record's nonce (RFC 8446 5.3), and the sequence number moved on.
    fn next_nonce(&mut self) -> Result<Nonce, RecordError> {
        if self.seq >= self.limit {
            return Err(RecordError::KeyLimit);
        }
        let mut n = self.iv;
        for (b, s) in n[NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// The sequence number of the next record.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// What one opened record held.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data: its range in the buffer given to [`open_record`] (possibly empty).
    Data(std::ops::Range<usize>),
    /// The peer's close_notify alert.
    CloseNotify,
}

/// The whole length of the record starting `buf`, once its header is there: `Ok(None)` while fewer than
/// [`HEADER_LEN`] bytes are.
pub fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if h[0] != CONTENT_APPLICATION_DATA || h[1] != 3 || h[2] != 3 {
        return Err(RecordError::BadHeader);
    }
    let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
    if !(TAG_LEN + 1..=MAX_CIPHERTEXT).contains(&len) {
        return Err(RecordError::BadHeader);
    }
    Ok(Some(HEADER_LEN + len))
}

/// Opens the whole record `rec` (header included, as [`record_len`] measured it) in place.
pub fn open_record(keys: &mut Keys, rec: &mut [u8]) -> Result<Opened, RecordError> {
    // The header was checked by `record_len`; only the bounds matter here (a header that does not
    // match what the peer sealed fails authentication: it is the AAD).
    if !(HEADER_LEN + TAG_LEN + 1..=MAX_RECORD).contains(&rec.len()) {
        return Err(RecordError::BadHeader);
    }
    let (head, body) = rec.split_at_mut(HEADER_LEN);
    let aad: [u8; HEADER_LEN] = [head[0], head[1], head[2], head[3], head[4]];
    let nonce = keys.next_nonce()?;
    let plain = keys
        .key
        .open_in_place(nonce, Aad::from(aad), body)
        .map_err(|_| RecordError::BadRecord)?;
    // The inner plaintext: content, content type, zero padding (RFC 8446 5.4).
    let Some(type_at) = plain.iter().rposition(|&b| b != 0) else {
        return Err(RecordError::UnexpectedContent);
    };
    match plain[type_at] {
        CONTENT_APPLICATION_DATA => Ok(Opened::Data(HEADER_LEN..HEADER_LEN + type_at)),
        CONTENT_ALERT => match &plain[..type_at] {
            [_, 0] => Ok(Opened::CloseNotify),
            [_, desc] => Err(RecordError::Alert(*desc)),
            _ => Err(RecordError::Alert(0xff)),
        },
        CONTENT_HANDSHAKE => Err(RecordError::HandshakeMessage),
        _ => Err(RecordError::UnexpectedContent),
    }
}

/// Seals the record whose plaintext fragment is already at `out[HEADER_LEN..HEADER_LEN + len]`, writing
/// its header, content type and tag around it; returns the record's whole length (`len + OVERHEAD`).
/// `out` must hold `len + OVERHEAD` bytes and `len` be at most [`MAX_FRAGMENT`].
pub fn seal_record(
    keys: &mut Keys,
    content_type: u8,
    out: &mut [u8],
    len: usize,
) -> Result<usize, RecordError> {
    debug_assert!(len <= MAX_FRAGMENT && out.len() >= len + OVERHEAD);
    let body_len = len + 1 + TAG_LEN;
    let wire_len = u16::try_from(body_len).map_err(|_| RecordError::BadHeader)?;
    let [l0, l1] = wire_len.to_be_bytes();
    let head = [CONTENT_APPLICATION_DATA, 3, 3, l0, l1];
    out[..HEADER_LEN].copy_from_slice(&head);
    out[HEADER_LEN + len] = content_type;
    let nonce = keys.next_nonce()?;
    let (_, rest) = out.split_at_mut(HEADER_LEN);
    let (inner, tag_out) = rest.split_at_mut(len + 1);
    let tag = keys
        .key
        .seal_in_place_separate_tag(nonce, Aad::from(head), inner)
        .map_err(|_| RecordError::BadRecord)?;
    tag_out[..TAG_LEN].copy_from_slice(tag.as_ref());
    Ok(HEADER_LEN + body_len)
}

/// A TCP stream (or any byte stream) under rustls that remembers where TLS records begin, so that the
/// relay can tell whether rustls holds part of a record it has read ([`take_over`] refuses then).
pub struct Tracked<S> {
    io: S,
    head: [u8; HEADER_LEN],
    head_len: usize,
    body_left: usize,
}

impl<S> Tracked<S> {
    /// Wraps `io`, at a record boundary.
    pub fn new(io: S) -> Self {
        Tracked {
            io,
            head: [0; HEADER_LEN],
            head_len: 0,
            body_left: 0,
        }
    }

    /// Whether every byte read so far belongs to a whole record.
    pub fn at_record_boundary(&self) -> bool {
        self.head_len == 0 && self.body_left == 0
    }

    /// The wrapped stream, taken out.
    pub fn into_inner(self) -> S {
        self.io
    }

    fn scan(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.body_left > 0 {
                let k = self.body_left.min(data.len());
                self.body_left -= k;
                data = &data[k..];
            } else {
                let k = (HEADER_LEN - self.head_len).min(data.len());
                self.head[self.head_len..self.head_len + k].copy_from_slice(&data[..k]);
                self.head_len += k;
                data = &data[k..];
                if self.head_len == HEADER_LEN {
                    self.body_left = usize::from(u16::from_be_bytes([self.head[3], self.head[4]]));
                    self.head_len = 0;
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let this = &mut *self;
        this.scan(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Why [`take_over`] left a connection with rustls.
#[derive(Debug)]
pub enum Kept {
    /// Not TLS 1.3.
    NotTls13,
    /// rustls holds data not yet handed on (part of a record, plaintext, or records to send), or the peer
    /// has closed.
    Buffered,
}

/// The server side of a TLS connection over a [`Tracked`] stream, as the HTTPS listener accepts it.
pub type ServerTls<S> = tokio_rustls::server::TlsStream<Tracked<S>>;

/// What [`take_over`] did with a connection.
pub enum TakeOver<S> {
    /// The relay's record layer runs it now.
    Records(RecordStream<S>),
    /// It stays with rustls, for the reason given.
    Kept(Box<ServerTls<S>>, Kept),
}

/// Takes a TLS 1.3 connection's traffic keys out of rustls, after its handshake (and the HTTP upgrade over
/// it), so the relay reads and writes its records itself. Leaves the stream as it is ([`TakeOver::Kept`])
/// when that would lose data or the version is not TLS 1.3; an error only if rustls refuses to hand the
/// keys over after saying it would (the connection is lost then).
pub fn take_over<S>(mut stream: ServerTls<S>) -> Result<TakeOver<S>, io::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tracked, conn) = stream.get_mut();
    if conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
        return Ok(TakeOver::Kept(Box::new(stream), Kept::NotTls13));
    }
    let state = match conn.process_new_packets() {
        Ok(s) => s,
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    if !tracked.at_record_boundary()
        || state.plaintext_bytes_to_read() > 0
        || state.tls_bytes_to_write() > 0
        || state.peer_has_closed()
        || conn.is_handshaking()
    {
        return Ok(TakeOver::Kept(Box::new(stream), Kept::Buffered));
    }
    let (tracked, conn) = stream.into_inner();
    let secrets = conn
        .dangerous_extract_secrets()
        .map_err(|e| io::Error::other(format!("TLS keys not handed over: {e}")))?;
    let rx = Keys::new(secrets.rx.1, secrets.rx.0)?;
    let tx = Keys::new(secrets.tx.1, secrets.tx.0)?;
    Ok(TakeOver::Records(RecordStream::new(
        tracked.into_inner(),
        rx,
        tx,
    )))
}

/// A byte stream of TLS 1.3 application data over `S`, with the relay's own record layer (module docs).
pub struct RecordStream<S> {
    io: S,
    rx: Keys,
    tx: Keys,
    /// Part of a record read but not yet whole.
    rx_partial: Vec<u8>,
    /// Plaintext opened but not yet taken by the reader (only when a read's buffer was too small).
    plain: Vec<u8>,
    plain_off: usize,
    /// Sealed records the socket has not taken yet.
    tx_pending: Vec<u8>,
    tx_off: usize,
    read_closed: bool,
    /// Why reading failed after plaintext of the same read was handed on (reported by the next read).
    failed: Option<RecordError>,
    close_notify_sent: bool,
    empty_records: u8,
}

impl<S> RecordStream<S> {
    /// A stream over `io` with the two directions' keys.
    pub fn new(io: S, rx: Keys, tx: Keys) -> Self {
        RecordStream {
            io,
            rx,
            tx,
            rx_partial: Vec::new(),
            plain: Vec::new(),
            plain_off: 0,
            tx_pending: Vec::new(),
            tx_off: 0,
            read_closed: false,
            failed: None,
            close_notify_sent: false,
            empty_records: 0,
        }
    }

    /// Bytes this stream holds for the leg (a partial record, unread plaintext, unsent records).
    pub fn buffered(&self) -> usize {
        self.rx_partial.capacity() + self.plain.capacity() + self.tx_pending.capacity()
    }

    /// Hands plaintext already opened to `buf`; true if there was some.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.plain_off >= self.plain.len() {
            return false;
        }
        let n = buf.remaining().min(self.plain.len() - self.plain_off);
        buf.put_slice(&self.plain[self.plain_off..self.plain_off + n]);
        self.plain_off += n;
        if self.plain_off == self.plain.len() {
            self.plain = Vec::new();
            self.plain_off = 0;
        }
        true
    }

    /// Opens every whole record in `data`, handing plaintext to `buf` (the rest to `self.plain`); returns
    /// how many bytes were whole records. An error after some plaintext was handed on is kept for the next
    /// read (a read that fails hands on nothing).
    fn open_all(&mut self, data: &mut [u8], buf: &mut ReadBuf<'_>) -> Result<usize, RecordError> {
        let before = buf.filled().len() + self.plain.len();
        match self.open_records(data, buf) {
            Err(e) if buf.filled().len() + self.plain.len() > before => {
                self.failed = Some(e);
                Ok(data.len())
            }
            r => r,
        }
    }

    fn open_records(
        &mut self,
        data: &mut [u8],
        buf: &mut ReadBuf<'_>,
    ) -> Result<usize, RecordError> {
        let mut pos = 0;
        while let Some(len) = record_len(&data[pos..])? {
            if data.len() - pos < len {
                break;
            }
            let rec = &mut data[pos..pos + len];
            pos += len;
            match open_record(&mut self.rx, rec)? {
                Opened::Data(range) if range.is_empty() => {
                    self.empty_records += 1;
                    if self.empty_records > MAX_EMPTY_RECORDS {
                        return Err(RecordError::TooManyEmpty);
                    }
                }
                Opened::Data(range) => {
                    self.empty_records = 0;
                    let plain = &rec[range];
                    let n = buf.remaining().min(plain.len());
                    buf.put_slice(&plain[..n]);
                    self.plain.extend_from_slice(&plain[n..]);
                }
                Opened::CloseNotify => {
                    self.read_closed = true;
                    return Ok(pos);
                }
            }
        }
        Ok(pos)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RecordStream<S> {
    /// Writes sealed records the socket did not take before.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tx_off < self.tx_pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.tx_pending[self.tx_off..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tx_off += n;
        }
        if self.tx_pending.capacity() > 0 {
            self.tx_pending = Vec::new();
            self.tx_off = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes `out`, keeping what the socket does not take (the records are sealed: they must go out).
    fn poll_send_sealed(&mut self, cx: &mut Context<'_>, out: &[u8]) -> io::Result<()> {
        let n = match Pin::new(&mut self.io).poll_write(cx, out) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => 0,
        };
        if n < out.len() {
            self.tx_pending = out[n..].to_vec();
            self.tx_off = 0;
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RecordStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 || this.take_plain(buf) {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &this.failed {
            return Poll::Ready(Err(e.clone().into()));
        }
        loop {
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let r = RX_SCRATCH.with(|scratch| -> Poll<io::Result<()>> {
                let mut scratch = scratch
                    .try_borrow_mut()
                    .map_err(|_| io::Error::other("TLS read buffer in use"))?;
                let have = this.rx_partial.len();
                scratch[..have].copy_from_slice(&this.rx_partial);
                let want = buf.remaining().max(MAX_RECORD);
                let end = (have + want).min(scratch.len());
                let mut rb = ReadBuf::new(&mut scratch[have..end]);
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                if n == 0 {
                    this.read_closed = true;
                    if have > 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "TLS record cut short",
                        )));
                    }
                    return Poll::Ready(Ok(()));
                }
                let total = have + n;
                let used = this.open_all(&mut scratch[..total], buf)?;
                this.rx_partial.clear();
                if used < total && !this.read_closed {
                    this.rx_partial.extend_from_slice(&scratch[used..total]);
                } else {
                    this.rx_partial = Vec::new();
                }
                Poll::Ready(Ok(()))
            });
            ready!(r)?;
            if buf.filled().len() > before || this.read_closed {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(e.clone().into()));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RecordStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        if this.close_notify_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        TX_SCRATCH.with(|scratch| {
            let mut scratch = scratch
                .try_borrow_mut()
                .map_err(|_| io::Error::other("TLS write buffer in use"))?;
            let (mut slice, mut off) = (0, 0);
            let mut out_len = 0;
            let mut consumed = 0;
            for _ in 0..TX_RECORDS {
                let start = out_len;
                let mut len = 0;
                while len < MAX_FRAGMENT && slice < bufs.len() {
                    let src = &bufs[slice][off..];
                    let k = src.len().min(MAX_FRAGMENT - len);
                    let at = start + HEADER_LEN + len;
                    scratch[at..at + k].copy_from_slice(&src[..k]);
                    len += k;
                    off += k;
                    if off == bufs[slice].len() {
                        slice += 1;
                        off = 0;
                    }
                }
                if len == 0 {
                    break;
                }
                out_len += seal_record(
                    &mut this.tx,
                    CONTENT_APPLICATION_DATA,
                    &mut scratch[start..],
                    len,
                )?;
                consumed += len;
            }
            this.poll_send_sealed(cx, &scratch[..out_len])?;
            Poll::Ready(Ok(consumed))
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        if !this.close_notify_sent {
            this.close_notify_sent = true;
            // close_notify: a warning-level alert, description 0.
            let mut rec = [0u8; 2 + OVERHEAD];
            rec[HEADER_LEN] = 1;
            let n = seal_record(&mut this.tx, CONTENT_ALERT, &mut rec, 2)?;
            this.poll_send_sealed(cx, &rec[..n])?;
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
