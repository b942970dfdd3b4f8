//! `assist-xtest-app`: a known picture and an input log, for tests of the sharer agent under Xvfb.
//!
//! Usage: `assist-xtest-app --log PATH [--display :N]` (the display defaults to `$DISPLAY`).
//!
//! - Opens an override-redirect window (no window manager needed) at (0, 0) covering the whole root window,
//!   and paints four solid quadrants split at half the width and height: top left red (255,0,0), top right
//!   green (0,255,0), bottom left blue (0,0,255), bottom right white (255,255,255).
//! - Prints `ready` on stdout once the window is mapped, painted and the server has done the painting.
//! - On each button press, appends `click X Y BUTTON` to the log (window coordinates, which are screen
//!   coordinates, and the X button number: 1 left, 2 middle, 3 right, 4/5 wheel up/down, 6/7 left/right),
//!   then paints the clicked quadrant yellow (255,255,0).
//! - On each key press, appends `key KEYSYM` with the keysym in lower-case hex without `0x` (`key 61` for
//!   `a`, `key ff0d` for Return): the keysym of the pressed keycode in the current mapping, in the column
//!   the state selects: Shift for level 2, the AltGr modifier (the one ISO_Level3_Shift is on) for level 3,
//!   both for level 4.
//! - Every log line is flushed at once. It exits with status 0 when the X connection closes, and by the
//!   default action of SIGTERM (nothing is buffered, so nothing is lost).

use std::io::Write;
use std::process::ExitCode;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ConnectionExt as _, CreateGCAux, CreateWindowAux, EventMask, InputFocus, KeyButMask, Rectangle,
    WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::COPY_DEPTH_FROM_PARENT;

const RED: (u8, u8, u8) = (255, 0, 0);
const GREEN: (u8, u8, u8) = (0, 255, 0);
const BLUE: (u8, u8, u8) = (0, 0, 255);
const WHITE: (u8, u8, u8) = (255, 255, 255);
const YELLOW: (u8, u8, u8) = (255, 255, 0);

struct Args {
    log: std::path::PathBuf,
    display: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut log = None;
    let mut display = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--log" => log = it.next(),
            "--display" => display = it.next(),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        log: log.ok_or("--log PATH is required")?.into(),
        display,
    })
}

/// The pixel value of an RGB colour in a TrueColor visual with these masks.
fn pixel(masks: (u32, u32, u32), (r, g, b): (u8, u8, u8)) -> u32 {
    let place = |mask: u32, v: u8| -> u32 {
        if mask == 0 {
            return 0;
        }
        let shift = mask.trailing_zeros();
        let bits = (mask >> shift).count_ones();
        let v = if bits >= 8 {
            u32::from(v) << (bits - 8)
        } else {
            u32::from(v) >> (8 - bits)
        };
        (v << shift) & mask
    };
    place(masks.0, r) | place(masks.1, g) | place(masks.2, b)
}

struct App {
    conn: RustConnection,
    window: u32,
    gc: u32,
    width: u16,
    height: u16,
    masks: (u32, u32, u32),
    colours: [(u8, u8, u8); 4],
}

impl App {
    /// Quadrant rectangles: top left, top right, bottom left, bottom right.
    fn quadrants(&self) -> [Rectangle; 4] {
        let (hw, hh) = (self.width / 2, self.height / 2);
        let (rw, rh) = (self.width - hw, self.height - hh);
        let r = |x: u16, y: u16, width, height| Rectangle {
            x: x as i16,
            y: y as i16,
            width,
            height,
        };
        [
            r(0, 0, hw, hh),
            r(hw, 0, rw, hh),
            r(0, hh, hw, rh),
            r(hw, hh, rw, rh),
        ]
    }

    fn quadrant_of(&self, x: i16, y: i16) -> usize {
        let right = i32::from(x) >= i32::from(self.width / 2);
        let bottom = i32::from(y) >= i32::from(self.height / 2);
        usize::from(right) + 2 * usize::from(bottom)
    }

    fn paint(&self, q: usize) -> Result<(), Box<dyn std::error::Error>> {
        let aux = x11rb::protocol::xproto::ChangeGCAux::new()
            .foreground(pixel(self.masks, self.colours[q]));
        self.conn.change_gc(self.gc, &aux)?;
        self.conn
            .poly_fill_rectangle(self.window, self.gc, &[self.quadrants()[q]])?;
        Ok(())
    }

    /// Waits until the server has processed everything sent so far.
    fn sync(&self) -> Result<(), Box<dyn std::error::Error>> {
        self.conn.get_input_focus()?.reply()?;
        Ok(())
    }

    fn keysym(&self, keycode: u8, state: KeyButMask) -> Result<u32, Box<dyn std::error::Error>> {
        // Read the mappings on every key: the agent may have just bound a keysym to a spare keycode.
        let map = self.conn.get_keyboard_mapping(keycode, 1)?.reply()?;
        let shifted = state.contains(KeyButMask::SHIFT);
        let level3 = u16::from(state) & self.level3_mask()? != 0;
        // XKB's core columns: group 1 levels 1 and 2, group 2 levels 1 and 2, group 1 levels 3 and 4.
        let col = |i: usize| map.keysyms.get(i).copied().unwrap_or(0);
        let base = if level3 { 4 } else { 0 };
        Ok(match (shifted, col(base + 1), col(base)) {
            (true, s, _) if s != 0 => s,
            (_, _, s) if s != 0 => s,
            _ => col(0),
        })
    }

    /// The modifier bit of AltGr: the modifier row holding a keycode bound to ISO_Level3_Shift.
    fn level3_mask(&self) -> Result<u16, Box<dyn std::error::Error>> {
        let setup = self.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let map = self
            .conn
            .get_keyboard_mapping(min, max - min + 1)?
            .reply()?;
        let per = usize::from(map.keysyms_per_keycode.max(1));
        let level3: Vec<u8> = map
            .keysyms
            .chunks(per)
            .enumerate()
            .filter(|(_, syms)| syms.contains(&0xfe03))
            .filter_map(|(i, _)| u8::try_from(usize::from(min) + i).ok())
            .collect();
        let mods = self.conn.get_modifier_mapping()?.reply()?;
        let per_mod = usize::from(mods.keycodes_per_modifier()).max(1);
        Ok(mods
            .keycodes
            .chunks(per_mod)
            .position(|row| row.iter().any(|k| *k != 0 && level3.contains(k)))
            .map_or(0, |m| 1 << m))
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)?;
    let (conn, screen_num) = RustConnection::connect(args.display.as_deref())?;
    let screen = conn
        .setup()
        .roots
        .get(screen_num)
        .ok_or("no such screen")?
        .clone();
    let masks = screen
        .allowed_depths
        .iter()
        .flat_map(|d| d.visuals.iter())
        .find(|v| v.visual_id == screen.root_visual)
        .map(|v| (v.red_mask, v.green_mask, v.blue_mask))
        .ok_or("root visual not found")?;
    let window = conn.generate_id()?;
    let gc = conn.generate_id()?;
    conn.create_window(
        COPY_DEPTH_FROM_PARENT,
        window,
        screen.root,
        0,
        0,
        screen.width_in_pixels,
        screen.height_in_pixels,
        0,
        WindowClass::INPUT_OUTPUT,
        0, // CopyFromParent visual
        &CreateWindowAux::new()
            .override_redirect(1)
            .background_pixel(screen.black_pixel)
            .event_mask(EventMask::EXPOSURE | EventMask::BUTTON_PRESS | EventMask::KEY_PRESS),
    )?;
    conn.create_gc(gc, window, &CreateGCAux::new())?;
    conn.map_window(window)?;
    conn.flush()?;
    let mut app = App {
        conn,
        window,
        gc,
        width: screen.width_in_pixels,
        height: screen.height_in_pixels,
        masks,
        colours: [RED, GREEN, BLUE, WHITE],
    };
    let mut ready = false;
    loop {
        let event = match app.conn.wait_for_event() {
            Ok(e) => e,
            // The server went away: that is how tests end us when they stop Xvfb.
            Err(_) => return Ok(()),
        };
        match event {
            Event::Expose(e) if e.count == 0 => {
                for q in 0..4 {
                    app.paint(q)?;
                }
                if !ready {
                    // Keys go to this window whatever the pointer does.
                    app.conn.set_input_focus(
                        InputFocus::PARENT,
                        app.window,
                        x11rb::CURRENT_TIME,
                    )?;
                    app.sync()?;
                    ready = true;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ready")?;
                    out.flush()?;
                }
                app.conn.flush()?;
            }
            Event::ButtonPress(e) => {
                writeln!(log, "click {} {} {}", e.event_x, e.event_y, e.detail)?;
                log.flush()?;
                let q = app.quadrant_of(e.event_x, e.event_y);
                app.colours[q] = YELLOW;
                app.paint(q)?;
                app.conn.flush()?;
            }
            Event::KeyPress(e) => {
                let sym = app.keysym(e.detail, e.state)?;
                writeln!(log, "key {sym:x}")?;
                log.flush()?;
            }
            _ => {}
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("assist-xtest-app: {e}");
            }
            eprintln!("usage: assist-xtest-app --log PATH [--display :N]");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("assist-xtest-app: {e}");
            ExitCode::FAILURE
        }
    }
}
