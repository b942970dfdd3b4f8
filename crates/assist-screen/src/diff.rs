//! Which tiles of the screen changed between two captures.
//!
//! The screen is cut into a fixed grid of [`TILE_SIZE`]-pixel squares from the top-left corner; the tiles
//! on the right and bottom edges are smaller when the size is not a multiple. Captures are 4 bytes per
//! pixel (BGRX or RGBA: the diff only compares bytes) with a row stride of at least `4 × width`.

use crate::frame::Rect;

/// The side of a grid tile in pixels.
pub const TILE_SIZE: u16 = 64;

/// Bytes per pixel of a capture.
pub const BYTES_PER_PIXEL: usize = 4;

/// A borrowed 4-byte-per-pixel image: `height` rows of `stride` bytes, of which the first `4 × width` are
/// pixels (the rest is padding and is never compared).
#[derive(Debug, Clone, Copy)]
pub struct PixelBuf<'a> {
    data: &'a [u8],
    width: u16,
    height: u16,
    stride: usize,
}

impl<'a> PixelBuf<'a> {
    /// Wraps `data`, or `None` if the stride is shorter than a row of pixels or `data` is too short for
    /// `height` rows.
    pub fn new(data: &'a [u8], width: u16, height: u16, stride: usize) -> Option<PixelBuf<'a>> {
        let row = usize::from(width) * BYTES_PER_PIXEL;
        if stride < row {
            return None;
        }
        let need = match height {
            0 => 0,
            h => stride.checked_mul(usize::from(h) - 1)?.checked_add(row)?,
        };
        (data.len() >= need).then_some(PixelBuf {
            data,
            width,
            height,
            stride,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u16 {
        self.height
    }

    /// Bytes from one row to the next.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The pixel bytes of row `y` (without padding). `y` must be below the height.
    pub fn row(&self, y: u16) -> &'a [u8] {
        let start = usize::from(y) * self.stride;
        &self.data[start..start + usize::from(self.width) * BYTES_PER_PIXEL]
    }

    /// The 4 bytes of pixel `(x, y)`, or `None` outside the image.
    pub fn pixel(&self, x: u16, y: u16) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = usize::from(y) * self.stride + usize::from(x) * BYTES_PER_PIXEL;
        self.data.get(i..i + 4).and_then(|p| p.try_into().ok())
    }

    /// Copies the pixels of `rect` (which must lie inside the image) into `out`, rows packed with no
    /// padding: what an image encoder takes.
    pub fn copy_rect(&self, rect: Rect, out: &mut Vec<u8>) {
        out.clear();
        let x0 = usize::from(rect.x) * BYTES_PER_PIXEL;
        let x1 = x0 + usize::from(rect.width) * BYTES_PER_PIXEL;
        for y in rect.y..rect.y + rect.height {
            out.extend_from_slice(&self.row(y)[x0..x1]);
        }
    }
}

/// The tiles of a `width` × `height` screen, row by row from the top left, `tile` pixels square (edge tiles
/// smaller). Empty for an empty screen. `tile` must not be 0.
pub fn grid(width: u16, height: u16, tile: u16) -> impl Iterator<Item = Rect> {
    let tile = tile.max(1);
    let ys = (0..height).step_by(usize::from(tile));
    ys.flat_map(move |y| {
        (0..width).step_by(usize::from(tile)).map(move |x| Rect {
            x,
            y,
            width: tile.min(width - x),
            height: tile.min(height - y),
        })
    })
}

/// The grid tiles (see [`grid`]) in which `cur` differs from `prev`, in grid order. If the sizes differ,
/// every tile of `cur` is returned.
///
/// Each row is compared as byte slices, one tile-width slice at a time, and a tile already known to have
/// changed is not compared again, so an unchanged screen costs one `memcmp` of its pixels.
pub fn changed_tiles(prev: &PixelBuf<'_>, cur: &PixelBuf<'_>, tile: u16) -> Vec<Rect> {
    let tile = tile.max(1);
    if prev.width != cur.width || prev.height != cur.height {
        return grid(cur.width, cur.height, tile).collect();
    }
    let (width, height) = (cur.width, cur.height);
    let cols = usize::from(width).div_ceil(usize::from(tile));
    let mut out = Vec::new();
    let mut changed = vec![false; cols];
    for band_y in (0..height).step_by(usize::from(tile)) {
        let band_h = tile.min(height - band_y);
        changed.iter_mut().for_each(|c| *c = false);
        let mut left = cols;
        for y in band_y..band_y + band_h {
            let (a, b) = (prev.row(y), cur.row(y));
            if a == b {
                continue;
            }
            for (col, done) in changed.iter_mut().enumerate() {
                if *done {
                    continue;
                }
                let x0 = col * usize::from(tile) * BYTES_PER_PIXEL;
                let x1 = (x0 + usize::from(tile) * BYTES_PER_PIXEL).min(a.len());
                if a[x0..x1] != b[x0..x1] {
                    *done = true;
                    left -= 1;
                }
            }
            if left == 0 {
                break;
            }
        }
        for (col, _) in changed.iter().enumerate().filter(|(_, c)| **c) {
            // col * tile < width, so it fits in u16.
            let x = (col * usize::from(tile)) as u16;
            out.push(Rect {
                x,
                y: band_y,
                width: tile.min(width - x),
                height: band_h,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_edges_are_smaller() {
        let g: Vec<Rect> = grid(130, 65, 64).collect();
        assert_eq!(g.len(), 6);
        assert_eq!(
            g[2],
            Rect {
                x: 128,
                y: 0,
                width: 2,
                height: 64
            }
        );
        assert_eq!(
            g[5],
            Rect {
                x: 128,
                y: 64,
                width: 2,
                height: 1
            }
        );
        let area: u64 = g.iter().map(|r| r.area()).sum();
        assert_eq!(area, 130 * 65);
        assert_eq!(grid(0, 10, 64).count(), 0);
        assert_eq!(grid(u16::MAX, 1, 64).last().map(|r| r.right()), Some(65535));
    }

    #[test]
    fn pixel_buf_bounds() {
        let data = vec![0u8; 10 * 4 + 2 * 48];
        assert!(PixelBuf::new(&data, 10, 3, 48).is_some());
        assert!(PixelBuf::new(&data, 10, 4, 48).is_none());
        assert!(PixelBuf::new(&data, 13, 1, 48).is_none()); // stride shorter than a row
        assert!(PixelBuf::new(&[], 0, 0, 0).is_some());
    }

    #[test]
    fn one_changed_pixel_marks_its_tile_only() {
        let (w, h, stride) = (200u16, 100u16, 200 * 4 + 8);
        let a = vec![7u8; stride * usize::from(h)];
        let mut b = a.clone();
        // Padding differences are ignored.
        b[200 * 4 + 3] = 0;
        let pa = PixelBuf::new(&a, w, h, stride).unwrap();
        assert!(changed_tiles(&pa, &PixelBuf::new(&b, w, h, stride).unwrap(), 64).is_empty());
        // Pixel (130, 70) is in tile column 2, row 1.
        b[70 * stride + 130 * 4 + 1] = 9;
        let pb = PixelBuf::new(&b, w, h, stride).unwrap();
        assert_eq!(
            changed_tiles(&pa, &pb, 64),
            vec![Rect {
                x: 128,
                y: 64,
                width: 64,
                height: 36
            }]
        );
        let mut out = Vec::new();
        pb.copy_rect(
            Rect {
                x: 129,
                y: 70,
                width: 2,
                height: 1,
            },
            &mut out,
        );
        assert_eq!(out, [7, 7, 7, 7, 7, 9, 7, 7]);
        assert_eq!(pb.pixel(130, 70), Some([7, 9, 7, 7]));
        assert_eq!(pb.pixel(200, 0), None);
    }

    #[test]
    fn size_change_returns_the_whole_grid() {
        let a = vec![0u8; 64 * 64 * 4];
        let b = vec![0u8; 32 * 128 * 4];
        let pa = PixelBuf::new(&a, 64, 64, 256).unwrap();
        let pb = PixelBuf::new(&b, 32, 128, 128).unwrap();
        assert_eq!(
            changed_tiles(&pa, &pb, 64),
            grid(32, 128, 64).collect::<Vec<_>>()
        );
    }
}
