//! The screen frame payload (channel 1, sharer → helper): a screen size and a set of image tiles.
//!
//! ```text
//! offset size  field
//! 0      1     version = 1
//! 1      2     screen width in pixels (u16)
//! 3      2     screen height in pixels (u16)
//! 5      2     tile count N (u16)
//! 7      ...   N tiles: u16 x, u16 y, u16 width, u16 height, u8 format, u32 length, image data
//! ```
//!
//! All integers are big-endian. [`decode_frame`] borrows the tiles' image data from the input; it never
//! copies it and never panics, whatever the bytes.

/// The only frame version this crate reads and writes.
pub const VERSION: u8 = 1;

/// Bytes before the first tile: version, width, height, tile count.
pub const FRAME_HEADER_LEN: usize = 7;

/// Bytes of a tile's header: x, y, width, height, format, length.
pub const TILE_HEADER_LEN: usize = 13;

/// A rectangle on the screen, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rect {
    /// Left edge.
    pub x: u16,
    /// Top edge.
    pub y: u16,
    /// Width (a valid tile's is at least 1).
    pub width: u16,
    /// Height (a valid tile's is at least 1).
    pub height: u16,
}

impl Rect {
    /// One past the right edge (may exceed `u16::MAX`, hence `u32`).
    pub fn right(&self) -> u32 {
        u32::from(self.x) + u32::from(self.width)
    }

    /// One past the bottom edge.
    pub fn bottom(&self) -> u32 {
        u32::from(self.y) + u32::from(self.height)
    }

    /// Area in pixels.
    pub fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Whether the rectangle is non-empty and lies inside a `width` × `height` screen.
    pub fn fits_in(&self, width: u16, height: u16) -> bool {
        self.width > 0
            && self.height > 0
            && self.right() <= u32::from(width)
            && self.bottom() <= u32::from(height)
    }

    /// Whether two rectangles share at least one pixel.
    pub fn overlaps(&self, other: &Rect) -> bool {
        u32::from(self.x) < other.right()
            && u32::from(other.x) < self.right()
            && u32::from(self.y) < other.bottom()
            && u32::from(other.y) < self.bottom()
    }

    /// Whether `(px, py)` lies inside.
    pub fn contains(&self, px: u32, py: u32) -> bool {
        px >= u32::from(self.x)
            && px < self.right()
            && py >= u32::from(self.y)
            && py < self.bottom()
    }
}

/// How a tile's image data is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TileFormat {
    /// 1: a complete JPEG (JFIF) file.
    Jpeg = 1,
    /// 2: a complete PNG file.
    Png = 2,
}

impl TileFormat {
    /// The format with this wire value, if any.
    pub fn from_u8(v: u8) -> Option<TileFormat> {
        match v {
            1 => Some(TileFormat::Jpeg),
            2 => Some(TileFormat::Png),
            _ => None,
        }
    }
}

/// One tile: where it goes and its encoded image, borrowed (from the decoded bytes, or from the encoder's
/// buffers when building a frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile<'a> {
    /// The tile's rectangle on the screen.
    pub rect: Rect,
    /// How `data` is encoded.
    pub format: TileFormat,
    /// The image file (`rect.width` × `rect.height` pixels). The codec does not look inside it.
    pub data: &'a [u8],
}

/// A decoded screen frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Screen width in pixels.
    pub width: u16,
    /// Screen height in pixels.
    pub height: u16,
    /// The tiles, in wire order.
    pub tiles: Vec<Tile<'a>>,
}

impl Frame<'_> {
    /// Whether the tiles cover every pixel of the screen, which a keyframe's do. Assumes the tiles do not
    /// overlap (see [`Frame::find_overlap`]): then covering means their areas add up to the screen's.
    pub fn covers_screen(&self) -> bool {
        let total: u64 = self.tiles.iter().map(|t| t.rect.area()).sum();
        total == u64::from(self.width) * u64::from(self.height)
    }

    /// The indices of two tiles that overlap, if any.
    ///
    /// A sweep over the tiles sorted by left edge, comparing each with the tiles still "open" at that edge.
    /// For tiles on a grid (what the reference sharer sends) that set is one column, so this is about
    /// `n log n`; adversarial layouts (many full-width strips) can make it quadratic in the tile count
    /// (at most 65 535), which is why [`decode_frame`] does not call it.
    pub fn find_overlap(&self) -> Option<(usize, usize)> {
        let mut order: Vec<usize> = (0..self.tiles.len()).collect();
        order.sort_by_key(|&i| self.tiles[i].rect.x);
        let mut open: Vec<usize> = Vec::new();
        for i in order {
            let r = self.tiles[i].rect;
            open.retain(|&j| self.tiles[j].rect.right() > u32::from(r.x));
            if let Some(&j) = open.iter().find(|&&j| self.tiles[j].rect.overlaps(&r)) {
                return Some((j.min(i), j.max(i)));
            }
            open.push(i);
        }
        None
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// More than 65 535 tiles (our fault: the caller split the screen too finely).
    #[error("{0} tiles, at most 65535 fit in a frame")]
    TooManyTiles(usize),
    /// A tile's image is longer than `u32::MAX` bytes.
    #[error("tile {0} has more than u32::MAX bytes of image data")]
    TileTooLarge(usize),
    /// A tile lies outside the screen or is empty.
    #[error("tile {index} ({rect:?}) is empty or outside the {width}x{height} screen")]
    TileOutside {
        /// The tile's index.
        index: usize,
        /// Its rectangle.
        rect: Rect,
        /// Screen width.
        width: u16,
        /// Screen height.
        height: u16,
    },
}

/// Encodes a frame. Checks what a receiver will check except overlap (the caller's tiles come from a grid).
pub fn encode_frame(width: u16, height: u16, tiles: &[Tile<'_>]) -> Result<Vec<u8>, EncodeError> {
    let count = u16::try_from(tiles.len()).map_err(|_| EncodeError::TooManyTiles(tiles.len()))?;
    let data_len: usize = tiles.iter().map(|t| t.data.len()).sum();
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + tiles.len() * TILE_HEADER_LEN + data_len);
    out.push(VERSION);
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for (index, t) in tiles.iter().enumerate() {
        if !t.rect.fits_in(width, height) {
            return Err(EncodeError::TileOutside {
                index,
                rect: t.rect,
                width,
                height,
            });
        }
        let len = u32::try_from(t.data.len()).map_err(|_| EncodeError::TileTooLarge(index))?;
        for v in [t.rect.x, t.rect.y, t.rect.width, t.rect.height] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.push(t.format as u8);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(t.data);
    }
    Ok(out)
}

/// Why a screen frame was refused. All of them are the sender's fault: a helper ignores the frame, counts it
/// and keeps its previous picture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the 7-byte frame header.
    #[error("frame shorter than its header")]
    Truncated,
    /// A version other than 1.
    #[error("unsupported frame version {0}")]
    Version(u8),
    /// Screen width or height is 0.
    #[error("empty screen size {width}x{height}")]
    EmptyScreen {
        /// Declared width.
        width: u16,
        /// Declared height.
        height: u16,
    },
    /// Tile `0` is cut off (header or image data past the end).
    #[error("tile {0} is truncated")]
    TruncatedTile(usize),
    /// A tile is empty or lies (partly) outside the screen.
    #[error("tile {index} ({rect:?}) is empty or outside the screen")]
    TileOutside {
        /// The tile's index.
        index: usize,
        /// Its rectangle.
        rect: Rect,
    },
    /// A format byte other than 1 (JPEG) or 2 (PNG).
    #[error("tile {index} has unknown format {format}")]
    UnknownFormat {
        /// The tile's index.
        index: usize,
        /// The format byte.
        format: u8,
    },
    /// The tiles' areas add up to more than the screen's, so some overlap.
    #[error("tiles cover more than the screen's area, so some overlap")]
    TilesOverlap,
    /// Bytes left after the last tile.
    #[error("{0} bytes after the last tile")]
    TrailingBytes(usize),
}

/// A little big-endian reader over a slice that never panics.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decodes and validates a screen frame, borrowing the image data from `buf`.
///
/// Checked: the version is 1; the screen is not empty; every tile's header and data are complete; every tile
/// is non-empty and inside the screen; every format is known; the tiles' areas add up to at most the screen's
/// (a cheap check that catches most overlaps); no byte follows the last tile. Not checked: that no two tiles
/// overlap exactly (use [`Frame::find_overlap`]), and whether the image data is a valid image of the tile's
/// size (the image decoder finds out).
pub fn decode_frame(buf: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let mut r = Reader { buf };
    let version = r.u8().ok_or(DecodeError::Truncated)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let (width, height, count) = match (r.u16(), r.u16(), r.u16()) {
        (Some(w), Some(h), Some(n)) => (w, h, n),
        _ => return Err(DecodeError::Truncated),
    };
    if width == 0 || height == 0 {
        return Err(DecodeError::EmptyScreen { width, height });
    }
    let screen_area = u64::from(width) * u64::from(height);
    let mut covered = 0u64;
    // Each tile needs at least its header: never reserve more than the input can hold.
    let mut tiles = Vec::with_capacity(usize::from(count).min(r.buf.len() / TILE_HEADER_LEN));
    for index in 0..usize::from(count) {
        let head = r
            .take(TILE_HEADER_LEN)
            .ok_or(DecodeError::TruncatedTile(index))?;
        let mut h = Reader { buf: head };
        let (x, y, w, hgt, format, len) =
            match (h.u16(), h.u16(), h.u16(), h.u16(), h.u8(), h.u32()) {
                (Some(x), Some(y), Some(w), Some(hh), Some(f), Some(l)) => (x, y, w, hh, f, l),
                _ => return Err(DecodeError::TruncatedTile(index)),
            };
        let rect = Rect {
            x,
            y,
            width: w,
            height: hgt,
        };
        if !rect.fits_in(width, height) {
            return Err(DecodeError::TileOutside { index, rect });
        }
        let format =
            TileFormat::from_u8(format).ok_or(DecodeError::UnknownFormat { index, format })?;
        covered += rect.area();
        if covered > screen_area {
            return Err(DecodeError::TilesOverlap);
        }
        let len = usize::try_from(len).map_err(|_| DecodeError::TruncatedTile(index))?;
        let data = r.take(len).ok_or(DecodeError::TruncatedTile(index))?;
        tiles.push(Tile { rect, format, data });
    }
    if !r.buf.is_empty() {
        return Err(DecodeError::TrailingBytes(r.buf.len()));
    }
    Ok(Frame {
        width,
        height,
        tiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(x: u16, y: u16, w: u16, h: u16, data: &[u8]) -> Tile<'_> {
        Tile {
            rect: Rect {
                x,
                y,
                width: w,
                height: h,
            },
            format: TileFormat::Jpeg,
            data,
        }
    }

    #[test]
    fn documented_keyframe_header() {
        // docs/protocol.md: "a keyframe header for a 1024×768 screen in 192 tiles: 01 04 00 03 00 00 c0".
        let data = [0u8; 0];
        let tiles: Vec<Tile<'_>> = crate::diff::grid(1024, 768, 64)
            .map(|rect| Tile {
                rect,
                format: TileFormat::Jpeg,
                data: &data,
            })
            .collect();
        assert_eq!(tiles.len(), 192);
        let bytes = encode_frame(1024, 768, &tiles).unwrap();
        assert_eq!(&bytes[..7], &[0x01, 0x04, 0x00, 0x03, 0x00, 0x00, 0xc0]);
        let frame = decode_frame(&bytes).unwrap();
        assert!(frame.covers_screen());
        assert_eq!(frame.find_overlap(), None);
    }

    #[test]
    fn tile_layout_on_the_wire() {
        let bytes = encode_frame(10, 10, &[tile(1, 2, 3, 4, b"ab")]).unwrap();
        assert_eq!(
            bytes,
            [1, 0, 10, 0, 10, 0, 1, 0, 1, 0, 2, 0, 3, 0, 4, 1, 0, 0, 0, 2, b'a', b'b']
        );
        let f = decode_frame(&bytes).unwrap();
        assert_eq!((f.width, f.height), (10, 10));
        assert_eq!(f.tiles, vec![tile(1, 2, 3, 4, b"ab")]);
        assert!(!f.covers_screen());
    }

    #[test]
    fn decode_errors() {
        let ok = encode_frame(10, 10, &[tile(0, 0, 10, 10, b"xyz")]).unwrap();
        assert!(decode_frame(&ok).is_ok());
        assert_eq!(decode_frame(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode_frame(&ok[..6]), Err(DecodeError::Truncated));
        let mut v2 = ok.clone();
        v2[0] = 2;
        assert_eq!(decode_frame(&v2), Err(DecodeError::Version(2)));
        assert_eq!(
            decode_frame(&[1, 0, 0, 0, 5, 0, 0]),
            Err(DecodeError::EmptyScreen {
                width: 0,
                height: 5
            })
        );
        assert_eq!(decode_frame(&ok[..10]), Err(DecodeError::TruncatedTile(0)));
        assert_eq!(
            decode_frame(&ok[..ok.len() - 1]),
            Err(DecodeError::TruncatedTile(0))
        );
        let mut trailing = ok.clone();
        trailing.push(0);
        assert_eq!(decode_frame(&trailing), Err(DecodeError::TrailingBytes(1)));
        let mut fmt = ok.clone();
        fmt[15] = 3;
        assert_eq!(
            decode_frame(&fmt),
            Err(DecodeError::UnknownFormat {
                index: 0,
                format: 3
            })
        );
        // A tile one pixel too wide, and an empty tile.
        let mut wide = ok.clone();
        wide[12] = 11;
        assert!(matches!(
            decode_frame(&wide),
            Err(DecodeError::TileOutside { index: 0, .. })
        ));
        let mut empty = ok.clone();
        empty[14] = 0;
        assert!(matches!(
            decode_frame(&empty),
            Err(DecodeError::TileOutside { index: 0, .. })
        ));
        // Tile count says 2 but only one is there.
        let mut count = ok.clone();
        count[6] = 2;
        assert_eq!(decode_frame(&count), Err(DecodeError::TruncatedTile(1)));
        // Two full-screen tiles cover twice the screen.
        let twice =
            encode_frame(10, 10, &[tile(0, 0, 10, 10, b""), tile(0, 0, 10, 10, b"")]).unwrap();
        assert_eq!(decode_frame(&twice), Err(DecodeError::TilesOverlap));
    }

    #[test]
    fn encode_errors() {
        assert!(matches!(
            encode_frame(10, 10, &[tile(5, 5, 6, 1, b"")]),
            Err(EncodeError::TileOutside { index: 0, .. })
        ));
        let many = vec![tile(0, 0, 1, 1, b""); 65_536];
        assert_eq!(
            encode_frame(10, 10, &many),
            Err(EncodeError::TooManyTiles(65_536))
        );
    }

    #[test]
    fn overlap_is_found_exactly() {
        let f = Frame {
            width: 100,
            height: 100,
            tiles: vec![
                tile(0, 0, 10, 10, b""),
                tile(50, 50, 10, 10, b""),
                tile(9, 9, 2, 2, b""),
            ],
        };
        assert_eq!(f.find_overlap(), Some((0, 2)));
        let touching = Frame {
            width: 100,
            height: 100,
            tiles: vec![
                tile(0, 0, 10, 10, b""),
                tile(10, 0, 10, 10, b""),
                tile(0, 10, 10, 10, b""),
            ],
        };
        assert_eq!(touching.find_overlap(), None);
    }
}
