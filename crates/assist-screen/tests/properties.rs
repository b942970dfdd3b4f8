//! Property tests: the frame codec round-trips and never panics, the diff finds exactly the changed tiles,
//! input parsing never panics, and the frame rate stays within its bounds.

use assist_screen::frame::{decode_frame, encode_frame, Rect, Tile, TileFormat};
use assist_screen::{changed_tiles, grid, FrameRate, InputEvent, PixelBuf};
use proptest::prelude::*;

/// A chosen tile: rectangle, format byte, image data.
type TilePart = (Rect, u8, Vec<u8>);

/// A screen size, a subset of its 64-px grid, and image data for each chosen tile.
fn frame_parts() -> impl Strategy<Value = (u16, u16, Vec<TilePart>)> {
    (1u16..700, 1u16..500).prop_flat_map(|(w, h)| {
        let cells: Vec<Rect> = grid(w, h, 64).collect();
        let n = cells.len();
        (
            Just(w),
            Just(h),
            proptest::sample::subsequence(cells, 0..=n).prop_flat_map(|rects| {
                let k = rects.len();
                (
                    Just(rects),
                    proptest::collection::vec(
                        (1u8..=2, proptest::collection::vec(any::<u8>(), 0..40)),
                        k,
                    ),
                )
                    .prop_map(|(rects, data)| {
                        rects
                            .into_iter()
                            .zip(data)
                            .map(|(r, (f, d))| (r, f, d))
                            .collect()
                    })
            }),
        )
    })
}

proptest! {
    #[test]
    fn codec_round_trips((w, h, parts) in frame_parts()) {
        let tiles: Vec<Tile<'_>> = parts
            .iter()
            .map(|(rect, f, data)| Tile {
                rect: *rect,
                format: TileFormat::from_u8(*f).unwrap(),
                data,
            })
            .collect();
        let bytes = encode_frame(w, h, &tiles).unwrap();
        let frame = decode_frame(&bytes).unwrap();
        prop_assert_eq!(frame.width, w);
        prop_assert_eq!(frame.height, h);
        prop_assert_eq!(&frame.tiles, &tiles);
        prop_assert_eq!(frame.find_overlap(), None);
        prop_assert_eq!(frame.covers_screen(), tiles.len() == grid(w, h, 64).count());
        // Every strict prefix is refused, never accepted as a shorter frame.
        for cut in [0, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(decode_frame(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_frame(&bytes);
    }

    #[test]
    fn decode_never_panics_on_plausible_headers(
        w in any::<u16>(), h in any::<u16>(), n in any::<u16>(),
        rest in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = vec![1u8];
        for v in [w, h, n] {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        bytes.extend_from_slice(&rest);
        if let Ok(f) = decode_frame(&bytes) {
            for t in &f.tiles {
                prop_assert!(t.rect.fits_in(f.width, f.height));
            }
        }
    }

    #[test]
    fn diff_finds_exactly_the_changed_tiles(
        w in 1u16..300, h in 1u16..200, pad in 0usize..3,
        changes in proptest::collection::vec((any::<u16>(), any::<u16>(), 0usize..4, any::<u8>()), 0..20),
    ) {
        let stride = usize::from(w) * 4 + pad * 4;
        let prev: Vec<u8> = (0..stride * usize::from(h)).map(|i| (i % 251) as u8).collect();
        let mut cur = prev.clone();
        let mut expected = std::collections::BTreeSet::new();
        for (x, y, byte, v) in changes {
            let (x, y) = (x % w, y % h);
            let i = usize::from(y) * stride + usize::from(x) * 4 + byte;
            if cur[i] != v {
                cur[i] = v;
            }
            if cur[i] != prev[i] {
                expected.insert((y / 64, x / 64));
            }
        }
        // A byte changed back to its old value by a later change does not count.
        let mut truth = std::collections::BTreeSet::new();
        for &(ty, tx) in &expected {
            let differs = (ty * 64..(ty * 64 + 64).min(h)).any(|y| {
                let row = usize::from(y) * stride;
                let (a, b) = (usize::from(tx) * 256, (usize::from(tx) * 256 + 256).min(usize::from(w) * 4));
                prev[row + a..row + b] != cur[row + a..row + b]
            });
            if differs {
                truth.insert((ty, tx));
            }
        }
        let pa = PixelBuf::new(&prev, w, h, stride).unwrap();
        let pb = PixelBuf::new(&cur, w, h, stride).unwrap();
        let got: Vec<Rect> = changed_tiles(&pa, &pb, 64);
        let got_cells: std::collections::BTreeSet<(u16, u16)> =
            got.iter().map(|r| (r.y / 64, r.x / 64)).collect();
        prop_assert_eq!(got_cells.len(), got.len());
        prop_assert_eq!(got_cells, truth);
        // Every returned tile is a grid tile.
        let cells: Vec<Rect> = grid(w, h, 64).collect();
        for r in &got {
            prop_assert!(cells.contains(r));
        }
    }

    #[test]
    fn input_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = InputEvent::parse(&bytes);
    }

    #[test]
    fn input_round_trips(x in any::<u16>(), y in any::<u16>(), button in 1u8..=3, down in any::<bool>(),
                         dx in -100i32..100, dy in -100i32..100, key in "[a-zA-Z]{1,10}") {
        for ev in [
            InputEvent::PointerMove { x, y },
            InputEvent::PointerButton { x, y, button, down },
            InputEvent::Wheel { x, y, dx, dy },
            InputEvent::Key { key: key.clone(), down },
        ] {
            prop_assert_eq!(InputEvent::parse(&ev.to_json()).unwrap(), ev);
        }
    }

    #[test]
    fn frame_rate_stays_in_bounds(events in proptest::collection::vec((0u64..5000, any::<bool>()), 0..50)) {
        let mut now = 0;
        let mut r = FrameRate::new(now);
        for (dt, congestion) in events {
            now += dt;
            let before = r.fps(now);
            if congestion {
                r.keyframe_requested("congestion", now);
                prop_assert_eq!(r.fps(now), (before / 2).max(1));
            }
            let fps = r.fps(now);
            prop_assert!((FrameRate::MIN_FPS..=FrameRate::MAX_FPS).contains(&fps));
            r.capture_started(now);
            prop_assert_eq!(r.next_deadline_ms(now), now + 1000 / u64::from(fps));
        }
    }
}
