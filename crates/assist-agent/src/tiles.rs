//! From successive captures to screen frame payloads: diff against the previous capture, encode the
//! changed 64-pixel tiles as JPEG, and keep the payload under the relay's frame limit.

use crate::backend::Capture;
use assist_screen::frame::{encode_frame, EncodeError, Rect, Tile, TileFormat};
use assist_screen::{changed_tiles, grid, TILE_SIZE};

/// JPEG quality of tiles, unless a frame would be too large.
pub const DEFAULT_QUALITY: u8 = 80;

/// Lower qualities tried, in order, when a frame's payload exceeds the limit.
const FALLBACK_QUALITIES: [u8; 4] = [60, 40, 20, 10];

/// A screen frame payload ready for the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The payload (docs/protocol.md, "Screen frame").
    pub payload: Vec<u8>,
    /// Whether it covers the whole screen (send with the keyframe flag).
    pub keyframe: bool,
    /// How many tiles it holds.
    pub tiles: usize,
    /// The JPEG quality used.
    pub quality: u8,
}

/// Why a capture could not become a frame. Each is our fault or the platform's, never the peer's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TileError {
    /// The capture's buffer is shorter than its size says (a backend bug).
    #[error("capture of {width}x{height} with stride {stride} has only {len} bytes")]
    BadCapture {
        /// Width.
        width: u16,
        /// Height.
        height: u16,
        /// Stride.
        stride: usize,
        /// Buffer length.
        len: usize,
    },
    /// The JPEG encoder failed.
    #[error("jpeg: {0}")]
    Jpeg(#[from] jpeg_encoder::EncodingError),
    /// The frame could not be laid out.
    #[error("frame: {0}")]
    Frame(#[from] EncodeError),
    /// Even at the lowest quality the frame is over the limit.
    #[error(
        "a frame of {tiles} tiles needs {len} bytes even at the lowest quality; the limit is {max}"
    )]
    TooLarge {
        /// Tiles in the frame.
        tiles: usize,
        /// Its smallest payload.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Turns captures into frames. Keeps the last capture it encoded to diff the next one against.
#[derive(Debug)]
pub struct TileEncoder {
    prev: Option<Capture>,
    quality: u8,
    max_payload: usize,
    scratch: Vec<u8>,
}

impl TileEncoder {
    /// An encoder at [`DEFAULT_QUALITY`] whose payloads stay within `max_payload` bytes.
    pub fn new(max_payload: usize) -> TileEncoder {
        TileEncoder {
            prev: None,
            quality: DEFAULT_QUALITY,
            max_payload,
            scratch: Vec::new(),
        }
    }

    /// The frame for `cur`: a keyframe (every tile) if `keyframe` is asked, if there is no previous capture
    /// or if the screen size changed; otherwise the tiles that changed, or `None` if nothing did.
    pub fn encode(
        &mut self,
        cur: Capture,
        keyframe: bool,
    ) -> Result<Option<EncodedFrame>, TileError> {
        let bad = || TileError::BadCapture {
            width: cur.width,
            height: cur.height,
            stride: cur.stride,
            len: cur.data.len(),
        };
        let pixels = cur.pixels().ok_or_else(bad)?;
        let prev = self.prev.as_ref().and_then(|p| p.pixels());
        let keyframe =
            keyframe || prev.is_none_or(|p| p.width() != cur.width || p.height() != cur.height);
        let rects: Vec<Rect> = match prev {
            Some(p) if !keyframe => changed_tiles(&p, &pixels, TILE_SIZE),
            _ => grid(cur.width, cur.height, TILE_SIZE).collect(),
        };
        if rects.is_empty() && !keyframe {
            return Ok(None);
        }
        let mut last_len = 0;
        for quality in std::iter::once(self.quality).chain(FALLBACK_QUALITIES) {
            let payload = self.encode_at(&cur, &rects, quality)?;
            if payload.len() <= self.max_payload {
                let tiles = rects.len();
                self.prev = Some(cur);
                return Ok(Some(EncodedFrame {
                    payload,
                    keyframe,
                    tiles,
                    quality,
                }));
            }
            last_len = payload.len();
        }
        Err(TileError::TooLarge {
            tiles: rects.len(),
            len: last_len,
            max: self.max_payload,
        })
    }

    /// Forgets the previous capture, so the next frame is a keyframe.
    pub fn reset(&mut self) {
        self.prev = None;
    }

    fn encode_at(
        &mut self,
        cur: &Capture,
        rects: &[Rect],
        quality: u8,
    ) -> Result<Vec<u8>, TileError> {
        let pixels = cur.pixels().ok_or(TileError::BadCapture {
            width: cur.width,
            height: cur.height,
            stride: cur.stride,
            len: cur.data.len(),
        })?;
        let mut jpegs: Vec<Vec<u8>> = Vec::with_capacity(rects.len());
        for r in rects {
            pixels.copy_rect(*r, &mut self.scratch);
            let mut out = Vec::with_capacity(self.scratch.len() / 8);
            jpeg_encoder::Encoder::new(&mut out, quality).encode(
                &self.scratch,
                r.width,
                r.height,
                jpeg_encoder::ColorType::Bgra,
            )?;
            jpegs.push(out);
        }
        let tiles: Vec<Tile<'_>> = rects
            .iter()
            .zip(&jpegs)
            .map(|(rect, data)| Tile {
                rect: *rect,
                format: TileFormat::Jpeg,
                data,
            })
            .collect();
        Ok(encode_frame(cur.width, cur.height, &tiles)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use assist_screen::decode_frame;

    fn solid(width: u16, height: u16, bgrx: [u8; 4]) -> Capture {
        let stride = usize::from(width) * 4;
        Capture {
            width,
            height,
            stride,
            data: bgrx.repeat(usize::from(width) * usize::from(height)),
        }
    }

    #[test]
    fn keyframe_then_deltas_then_nothing() {
        let mut enc = TileEncoder::new(4 << 20);
        let a = solid(130, 70, [0, 0, 255, 0]);
        let f = enc.encode(a.clone(), false).unwrap().unwrap();
        assert!(f.keyframe);
        let frame = decode_frame(&f.payload).unwrap();
        assert_eq!((frame.width, frame.height, frame.tiles.len()), (130, 70, 6));
        assert!(frame.covers_screen());
        assert!(frame
            .tiles
            .iter()
            .all(|t| t.data.starts_with(&[0xff, 0xd8])));
        // Unchanged: no frame.
        assert_eq!(enc.encode(a.clone(), false).unwrap(), None);
        // One pixel in the last tile.
        let mut b = a.clone();
        b.data[(69 * 130 + 129) * 4] = 1;
        let f = enc.encode(b.clone(), false).unwrap().unwrap();
        assert!(!f.keyframe);
        let frame = decode_frame(&f.payload).unwrap();
        assert_eq!(frame.tiles.len(), 1);
        assert_eq!((frame.tiles[0].rect.x, frame.tiles[0].rect.y), (128, 64));
        // Asked for: a keyframe even if nothing changed.
        assert!(enc.encode(b.clone(), true).unwrap().unwrap().keyframe);
        // A new size is a keyframe.
        let f = enc.encode(solid(64, 64, [0; 4]), false).unwrap().unwrap();
        assert!(f.keyframe && f.tiles == 1);
        enc.reset();
        assert!(
            enc.encode(solid(64, 64, [0; 4]), false)
                .unwrap()
                .unwrap()
                .keyframe
        );
    }

    #[test]
    fn lowers_quality_to_fit_and_fails_past_the_lowest() {
        // Noise compresses badly: at quality 80 it is larger than at 10.
        let mut c = solid(128, 128, [0; 4]);
        let mut x = 12345u32;
        for b in c.data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let full = TileEncoder::new(usize::MAX)
            .encode(c.clone(), true)
            .unwrap()
            .unwrap();
        assert_eq!(full.quality, DEFAULT_QUALITY);
        let mut enc = TileEncoder::new(full.payload.len() - 1);
        let f = enc.encode(c.clone(), true).unwrap().unwrap();
        assert!(f.quality < DEFAULT_QUALITY && f.payload.len() < full.payload.len());
        let mut tiny = TileEncoder::new(100);
        assert!(matches!(
            tiny.encode(c, true),
            Err(TileError::TooLarge { max: 100, .. })
        ));
    }

    #[test]
    fn bad_capture_is_an_error() {
        let mut c = solid(10, 10, [0; 4]);
        c.data.truncate(10);
        assert!(matches!(
            TileEncoder::new(1 << 20).encode(c, true),
            Err(TileError::BadCapture { .. })
        ));
    }
}
