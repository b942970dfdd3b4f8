//! The X11 backend against a real X server: Xvfb with `assist-xtest-app` on it. Captures the known picture,
//! encodes and decodes it as the helper would, injects clicks and keys through XTest and reads the app's log.
//!
//! Without `Xvfb` on `PATH` the test says why and passes, unless `ASSIST_REQUIRE_XVFB` is set to something
//! other than `0` (CI sets it to `1`), in which case it fails.

use assist_agent::tiles::TileEncoder;
use assist_agent::x11::{X11Input, X11Screen};
use assist_agent::{Capture, InputInjector, ScreenCapture};
use assist_screen::{changed_tiles, decode_frame, InputEvent, Rect};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_xvfb() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("Xvfb"))
            .find(|p| p.is_file())
    })
}

/// The first line the child prints on stdout, within `timeout`.
fn first_line(child: &mut Child, timeout: Duration) -> Option<String> {
    let out = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(timeout).ok().map(|l| l.trim().to_owned())
}

/// Starts Xvfb on a free display (it picks one itself and reports it on `-displayfd`).
fn start_xvfb(xvfb: &Path) -> (Killed, String) {
    let mut child = Command::new(xvfb)
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "320x240x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb starts");
    let n = first_line(&mut child, Duration::from_secs(20)).expect("Xvfb reports its display");
    assert!(n.parse::<u32>().is_ok(), "display number, got {n:?}");
    (Killed(child), format!(":{n}"))
}

fn start_app(display: &str, log: &Path) -> Killed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_assist-xtest-app"))
        .args(["--display", display, "--log"])
        .arg(log)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test app starts");
    let line = first_line(&mut child, Duration::from_secs(20));
    assert_eq!(line.as_deref(), Some("ready"), "the test app says ready");
    Killed(child)
}

/// Waits until the log holds `line`.
fn wait_for_log(log: &Path, line: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            Instant::now() < until,
            "log never showed {line:?}; it holds:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Captures until `(x, y)` has colour `rgb` (the app repaints asynchronously).
fn capture_until(screen: &mut X11Screen, x: u16, y: u16, rgb: (u8, u8, u8)) -> Capture {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let c = screen.capture().expect("capture");
        if c.rgb(x, y) == Some(rgb) {
            return c;
        }
        assert!(
            Instant::now() < until,
            "({x},{y}) is {:?}, not {rgb:?}",
            c.rgb(x, y)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Decodes a JPEG tile to RGB.
fn jpeg_rgb(data: &[u8]) -> Vec<u8> {
    let mut d = jpeg_decoder::Decoder::new(data);
    let px = d.decode().expect("a valid JPEG");
    assert_eq!(
        d.info().map(|i| i.pixel_format),
        Some(jpeg_decoder::PixelFormat::RGB24)
    );
    px
}

fn close_to(a: &[u8], b: (u8, u8, u8)) -> bool {
    let b = [b.0, b.1, b.2];
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 8)
}

#[test]
fn capture_and_inject_under_xvfb() {
    let Some(xvfb) = find_xvfb() else {
        let required =
            std::env::var("ASSIST_REQUIRE_XVFB").is_ok_and(|v| !v.is_empty() && v != "0");
        if required {
            panic!("Xvfb is not on PATH and ASSIST_REQUIRE_XVFB is set (apt-get install xvfb)");
        }
        eprintln!(
            "SKIPPED capture_and_inject_under_xvfb: Xvfb is not on PATH (apt-get install xvfb)"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("assist-xvfb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("input.log");
    let _ = std::fs::remove_file(&log);
    let (_xvfb, display) = start_xvfb(&xvfb);
    let _app = start_app(&display, &log);

    // The picture: four quadrants of 160x120.
    let mut screen = X11Screen::connect(Some(&display)).expect("connect for capture");
    assert_eq!(screen.size().unwrap(), (320, 240));
    let first = capture_until(&mut screen, 80, 60, (255, 0, 0));
    assert_eq!((first.width, first.height), (320, 240));
    for (x, y, rgb) in [
        (0, 0, (255, 0, 0)),
        (159, 119, (255, 0, 0)),
        (160, 0, (0, 255, 0)),
        (319, 119, (0, 255, 0)),
        (0, 120, (0, 0, 255)),
        (159, 239, (0, 0, 255)),
        (160, 120, (255, 255, 255)),
        (319, 239, (255, 255, 255)),
    ] {
        assert_eq!(first.rgb(x, y), Some(rgb), "pixel ({x},{y})");
    }

    // As a helper sees it: a keyframe of 5x4 tiles whose JPEGs decode to the right colours.
    let mut enc = TileEncoder::new(4 << 20);
    let key = enc
        .encode(first.clone(), false)
        .unwrap()
        .expect("a keyframe");
    assert!(key.keyframe);
    let frame = decode_frame(&key.payload).unwrap();
    assert_eq!(
        (frame.width, frame.height, frame.tiles.len()),
        (320, 240, 20)
    );
    assert!(frame.covers_screen());
    for (tile_index, rgb) in [
        (0, (255, 0, 0)),
        (4, (0, 255, 0)),
        (15, (0, 0, 255)),
        (19, (255, 255, 255)),
    ] {
        let t = frame.tiles[tile_index];
        let px = jpeg_rgb(t.data);
        assert_eq!(
            px.len(),
            usize::from(t.rect.width) * usize::from(t.rect.height) * 3
        );
        assert!(
            close_to(&px[..3], rgb),
            "tile {tile_index}: {:?} is not {rgb:?}",
            &px[..3]
        );
    }

    // A click in the top-left quadrant: logged, and that quadrant turns yellow.
    let mut input = X11Input::connect(Some(&display)).expect("connect for input (XTest)");
    for down in [true, false] {
        input
            .inject(&InputEvent::PointerButton {
                x: 80,
                y: 60,
                button: 1,
                down,
            })
            .unwrap();
    }
    wait_for_log(&log, "click 80 60 1");
    let second = capture_until(&mut screen, 80, 60, (255, 255, 0));
    assert_eq!(
        second.rgb(200, 60),
        Some((0, 255, 0)),
        "other quadrants unchanged"
    );
    // Exactly the grid tiles that meet the 160x120 quadrant changed: columns 0-2, rows 0-1.
    let changed = changed_tiles(&first.pixels().unwrap(), &second.pixels().unwrap(), 64);
    let expected: Vec<Rect> = [(0, 0), (64, 0), (128, 0), (0, 64), (64, 64), (128, 64)]
        .into_iter()
        .map(|(x, y)| Rect {
            x,
            y,
            width: 64,
            height: 64,
        })
        .collect();
    assert_eq!(changed, expected);
    let delta = enc.encode(second, false).unwrap().expect("a delta frame");
    assert!(!delta.keyframe);
    assert_eq!(decode_frame(&delta.payload).unwrap().tiles.len(), 6);

    // Right button and the wheel in the bottom-right quadrant.
    input
        .inject(&InputEvent::PointerButton {
            x: 300,
            y: 200,
            button: 3,
            down: true,
        })
        .unwrap();
    wait_for_log(&log, "click 300 200 3");
    input.release_all().unwrap();
    input
        .inject(&InputEvent::Wheel {
            x: 250,
            y: 130,
            dx: 0,
            dy: 1,
        })
        .unwrap();
    wait_for_log(&log, "click 250 130 5");

    // Keys: one in the keymap, a named one, and one that needs a spare keycode bound (xdotool's trick).
    for (key, logged) in [("a", "key 61"), ("Enter", "key ff0d"), ("€", "key 10020ac")] {
        for down in [true, false] {
            input
                .inject(&InputEvent::Key {
                    key: key.into(),
                    down,
                })
                .unwrap();
        }
        wait_for_log(&log, logged);
    }
    // Shift + A (what a browser sends for Shift+a) types "A".
    for (key, down) in [("Shift", true), ("A", true), ("A", false), ("Shift", false)] {
        input
            .inject(&InputEvent::Key {
                key: key.into(),
                down,
            })
            .unwrap();
    }
    wait_for_log(&log, "key 41");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `key …` lines of the log's character keys (not modifiers or function keys, keysyms
/// 0xfe00 to 0xffff), as keysyms.
fn character_keys(log: &Path) -> Vec<u32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("key "))
        .filter_map(|k| u32::from_str_radix(k, 16).ok())
        .filter(|k| !(0xfe00..=0xffff).contains(k))
        .collect()
}

/// The character keys after the first `skip`, once there are `count` more (10 s at most).
fn wait_for_keys(log: &Path, skip: usize, count: usize) -> Vec<u32> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Vec<u32> = character_keys(log).into_iter().skip(skip).collect();
        if keys.len() >= count || Instant::now() > until {
            return keys;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Types `text` as a paste or an input method does: each character down and up, no Shift or
/// AltGr from the helper. Returns what the app saw, as characters.
fn type_text(input: &mut X11Input, log: &Path, text: &str) -> String {
    let before = character_keys(log).len();
    for c in text.chars() {
        for down in [true, false] {
            input
                .inject(&InputEvent::Key {
                    key: c.to_string(),
                    down,
                })
                .unwrap();
        }
    }
    let n = text.chars().count();
    wait_for_keys(log, before, n)
        .into_iter()
        // Latin-1 keysyms are their code points; others are not in these texts.
        .map(|sym| {
            char::from_u32(sym)
                .filter(|_| sym < 0x100)
                .unwrap_or('\u{fffd}')
        })
        .collect()
}

#[test]
fn typed_text_gets_shift_and_altgr_on_us_and_german_layouts_under_xvfb() {
    let required = std::env::var("ASSIST_REQUIRE_XVFB").is_ok_and(|v| !v.is_empty() && v != "0");
    let Some(xvfb) = find_xvfb() else {
        assert!(
            !required,
            "Xvfb is not on PATH and ASSIST_REQUIRE_XVFB is set (apt-get install xvfb)"
        );
        eprintln!("SKIPPED typed_text…: Xvfb is not on PATH (apt-get install xvfb)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("assist-xvfb-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("input.log");
    let _ = std::fs::remove_file(&log);
    let (_xvfb, display) = start_xvfb(&xvfb);
    let _app = start_app(&display, &log);
    const TEXT: &str = r"Hi Sam: saved to \\fileserver\finance? (Q4, 100%)";

    // Xvfb's default layout (us).
    let mut input = X11Input::connect(Some(&display)).expect("connect for input (XTest)");
    assert_eq!(type_text(&mut input, &log, TEXT), TEXT);
    // The modifiers are back up: a plain letter is lower case.
    assert_eq!(type_text(&mut input, &log, "a"), "a");
    // The helper's own Shift still works, and is still held after a character that needs none.
    input
        .inject(&InputEvent::Key {
            key: "Shift".into(),
            down: true,
        })
        .unwrap();
    assert_eq!(type_text(&mut input, &log, "B1c"), "B1c");
    input.release_all().unwrap();
    drop(input);

    // A German layout: ':' '?' '(' '%' need Shift on other keys, '\' needs AltGr, Y and Z swap.
    let setxkbmap = Command::new("setxkbmap")
        .args(["-display", &display, "de"])
        .status();
    match setxkbmap {
        Ok(s) if s.success() => {}
        other => {
            assert!(
                !required,
                "setxkbmap de failed ({other:?}); scripts/install-test-deps.sh installs x11-xkb-utils"
            );
            eprintln!("SKIPPED the German half: setxkbmap is missing or failed ({other:?})");
            return;
        }
    }
    // The layout really changed: backslash is on level 3 only (AltGr+ß), nowhere on levels 1-2.
    {
        use x11rb::connection::Connection;
        use x11rb::protocol::xproto::ConnectionExt;
        let (conn, _) = x11rb::rust_connection::RustConnection::connect(Some(&display)).unwrap();
        let (min, max) = (conn.setup().min_keycode, conn.setup().max_keycode);
        let map = conn
            .get_keyboard_mapping(min, max - min + 1)
            .unwrap()
            .reply()
            .unwrap();
        let per = usize::from(map.keysyms_per_keycode);
        let columns_of_backslash: Vec<usize> = map
            .keysyms
            .chunks(per)
            .flat_map(|syms| syms.iter().enumerate().filter(|(_, &s)| s == 0x5c))
            .map(|(col, _)| col)
            .collect();
        assert!(
            !columns_of_backslash.is_empty() && columns_of_backslash.iter().all(|&c| c >= 4),
            "backslash columns after setxkbmap de: {columns_of_backslash:?}"
        );
    }
    let mut input = X11Input::connect(Some(&display)).expect("connect after the layout change");
    assert_eq!(type_text(&mut input, &log, TEXT), TEXT);
    assert_eq!(type_text(&mut input, &log, "@yz"), "@yz");
    drop(input);
    let _ = std::fs::remove_dir_all(&dir);
}
