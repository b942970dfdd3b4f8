//! The X11 backend: [`X11Screen`] captures the root window with `GetImage`, [`X11Input`] injects input with
//! the XTest extension. Each owns its own connection (x11rb's pure-Rust one, no libxcb), so a capture in
//! progress never delays input.
//!
//! Supported: TrueColor (or DirectColor) visuals of depth 24 or 32 with 32 bits per pixel and the usual
//! `0xff0000`/`0x00ff00`/`0x0000ff` masks, which is what Xorg and Xvfb use on every current system. Other
//! formats (16-bit, 8-bit palettes) are refused with [`X11Error::UnsupportedFormat`].

use crate::backend::{Capture, InputInjector, ScreenCapture};
use assist_screen::keymap::{self, is_character, Held, Keymap, Plan};
use assist_screen::{keysym_for, InputEvent};
use std::collections::HashMap;
use x11rb::connection::{Connection, RequestConnection};
use x11rb::errors::{ConnectError, ConnectionError, ReplyError};
use x11rb::protocol::xproto::{
    ConnectionExt as _, ImageFormat, ImageOrder, KeyButMask, VisualClass, Window,
    BUTTON_PRESS_EVENT, BUTTON_RELEASE_EVENT, KEY_PRESS_EVENT, KEY_RELEASE_EVENT,
    MOTION_NOTIFY_EVENT,
};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;

/// X11 failures. Connecting and format errors are the platform's (no display, unsupported visual); the
/// others mean the X server went away or refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X11Error {
    /// Could not connect to the display (not set, not running, no authorisation).
    #[error("cannot connect to the X display: {0}")]
    Connect(#[from] ConnectError),
    /// The connection broke.
    #[error("X connection: {0}")]
    Connection(#[from] ConnectionError),
    /// The server answered a request with an error.
    #[error("X request failed: {0}")]
    Reply(#[from] ReplyError),
    /// The screen's pixel format is not one the agent reads.
    #[error(
        "unsupported screen format: depth {depth}, {bits_per_pixel} bits per pixel, visual class {class}, \
         masks {red_mask:#x}/{green_mask:#x}/{blue_mask:#x} (need 24/32-bit TrueColor)"
    )]
    UnsupportedFormat {
        /// Root window depth.
        depth: u8,
        /// Bits per pixel of that depth's pixmap format (0 if none is listed).
        bits_per_pixel: u8,
        /// The root visual's class (4 TrueColor, 5 DirectColor).
        class: u8,
        /// Red mask.
        red_mask: u32,
        /// Green mask.
        green_mask: u32,
        /// Blue mask.
        blue_mask: u32,
    },
    /// `GetImage` returned a different depth or fewer bytes than the screen needs.
    #[error("GetImage returned {len} bytes of depth {depth} for {width}x{height}")]
    BadImage {
        /// Width asked for.
        width: u16,
        /// Height asked for.
        height: u16,
        /// Depth returned.
        depth: u8,
        /// Bytes returned.
        len: usize,
    },
    /// The server has no XTest extension, so input cannot be injected.
    #[error("the X server has no XTEST extension: input cannot be applied")]
    NoXTest,
    /// The key has no X11 keysym (media keys, `Unidentified`, …); the event is skipped.
    #[error("no keysym for key {0:?}")]
    UnknownKey(String),
    /// Every keycode is in use, so a keysym missing from the keymap cannot be bound.
    #[error("no spare keycode to bind keysym {0:#x}")]
    NoSpareKeycode(u32),
}

/// Connects to `display` (such as `":0"`), or to `$DISPLAY` when `None`.
fn connect(display: Option<&str>) -> Result<(RustConnection, usize), X11Error> {
    Ok(RustConnection::connect(display)?)
}

/// Captures the root window of one screen.
pub struct X11Screen {
    conn: RustConnection,
    root: Window,
    depth: u8,
    byte_order: ImageOrder,
}

impl std::fmt::Debug for X11Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X11Screen")
            .field("root", &self.root)
            .field("depth", &self.depth)
            .finish()
    }
}

impl X11Screen {
    /// Connects to `display` (or `$DISPLAY`) and checks that its pixel format is supported.
    pub fn connect(display: Option<&str>) -> Result<X11Screen, X11Error> {
        let (conn, screen_num) = connect(display)?;
        let setup = conn.setup();
        let screen = setup
            .roots
            .get(screen_num)
            .ok_or(X11Error::Connect(ConnectError::InvalidScreen))?;
        let depth = screen.root_depth;
        let bits_per_pixel = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .map_or(0, |f| f.bits_per_pixel);
        let visual = screen
            .allowed_depths
            .iter()
            .flat_map(|d| d.visuals.iter())
            .find(|v| v.visual_id == screen.root_visual);
        let (class, r, g, b) = visual.map_or((0, 0, 0, 0), |v| {
            (u8::from(v.class), v.red_mask, v.green_mask, v.blue_mask)
        });
        let color = matches!(
            visual.map(|v| v.class),
            Some(VisualClass::TRUE_COLOR | VisualClass::DIRECT_COLOR)
        );
        if !(depth == 24 || depth == 32)
            || bits_per_pixel != 32
            || !color
            || (r, g, b) != (0xff_0000, 0xff00, 0xff)
        {
            return Err(X11Error::UnsupportedFormat {
                depth,
                bits_per_pixel,
                class,
                red_mask: r,
                green_mask: g,
                blue_mask: b,
            });
        }
        let root = screen.root;
        let byte_order = setup.image_byte_order;
        Ok(X11Screen {
            conn,
            root,
            depth,
            byte_order,
        })
    }

    /// The current size of the root window.
    pub fn size(&self) -> Result<(u16, u16), X11Error> {
        let g = self.conn.get_geometry(self.root)?.reply()?;
        Ok((g.width, g.height))
    }

    /// Captures the whole root window as BGRX.
    pub fn capture_bgrx(&mut self) -> Result<Capture, X11Error> {
        let (width, height) = self.size()?;
        let reply = self
            .conn
            .get_image(ImageFormat::Z_PIXMAP, self.root, 0, 0, width, height, !0)?
            .reply()?;
        let stride = usize::from(width) * 4; // 32 bits per pixel, so every scanline pad is met
        let mut data = reply.data;
        if reply.depth != self.depth || data.len() < stride * usize::from(height) {
            return Err(X11Error::BadImage {
                width,
                height,
                depth: reply.depth,
                len: data.len(),
            });
        }
        if self.byte_order == ImageOrder::MSB_FIRST {
            // Pixels are 0x00RRGGBB; most significant byte first gives X R G B: reverse each to B G R X.
            for px in data.chunks_exact_mut(4) {
                px.reverse();
            }
        }
        Ok(Capture {
            width,
            height,
            stride,
            data,
        })
    }
}

impl ScreenCapture for X11Screen {
    type Error = X11Error;

    fn capture(&mut self) -> Result<Capture, X11Error> {
        self.capture_bgrx()
    }

    fn pointer(&mut self) -> Option<(u16, u16)> {
        let p = self.conn.query_pointer(self.root).ok()?.reply().ok()?;
        if !p.same_screen {
            return None;
        }
        Some((u16::try_from(p.root_x).ok()?, u16::try_from(p.root_y).ok()?))
    }
}

/// Wheel steps applied per event at most, per axis (a helper's bug should not scroll forever).
const MAX_WHEEL_STEPS: i32 = 20;

/// Injects pointer and key events with XTest.
///
/// A character is typed with the Shift and AltGr (ISO_Level3_Shift) state its column of the
/// sharer's keymap needs, whatever the helper held: `H`, `:` or `?` get Shift, `\` on a German
/// layout gets AltGr, `a` with the helper's Shift down is still `a`, and the modifiers are put back
/// right after the press ([`assist_screen::keymap`]). Function, cursor and modifier keys are
/// pressed as they are, so the helper's own Shift+Arrow still selects; with Control, Alt or Super
/// held (a shortcut) a held Shift is never lifted.
pub struct X11Input {
    conn: RustConnection,
    root: Window,
    keysyms_per_keycode: u8,
    /// The keyboard and modifier mappings, kept up to date with the keysyms we bind.
    keymap: Keymap,
    /// Keycodes we bound to a keysym ourselves (xdotool's trick), oldest first, to unbind at the end.
    bound: Vec<u8>,
    /// Keys held down: keysym → the keycode pressed for it.
    keys_down: HashMap<u32, u8>,
    /// Buttons held down (1 to 3).
    buttons_down: [bool; 3],
}

impl std::fmt::Debug for X11Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X11Input")
            .field("root", &self.root)
            .field("keys_down", &self.keys_down.len())
            .finish()
    }
}

impl X11Input {
    /// Connects to `display` (or `$DISPLAY`), checks for XTest and reads the keyboard mapping.
    pub fn connect(display: Option<&str>) -> Result<X11Input, X11Error> {
        let (conn, screen_num) = connect(display)?;
        if conn
            .extension_information(x11rb::protocol::xtest::X11_EXTENSION_NAME)?
            .is_none()
        {
            return Err(X11Error::NoXTest);
        }
        let setup = conn.setup();
        let root = setup
            .roots
            .get(screen_num)
            .ok_or(X11Error::Connect(ConnectError::InvalidScreen))?
            .root;
        let (min_keycode, max_keycode) = (setup.min_keycode, setup.max_keycode);
        let map = conn
            .get_keyboard_mapping(
                min_keycode,
                max_keycode.saturating_sub(min_keycode).saturating_add(1),
            )?
            .reply()?;
        let modifiers = conn.get_modifier_mapping()?.reply()?;
        let keysyms_per_keycode = map.keysyms_per_keycode.max(1);
        let keymap = Keymap::new(
            min_keycode,
            keysyms_per_keycode,
            map.keysyms,
            modifiers.keycodes_per_modifier(),
            modifiers.keycodes,
        );
        Ok(X11Input {
            conn,
            root,
            keysyms_per_keycode,
            keymap,
            bound: Vec::new(),
            keys_down: HashMap::new(),
            buttons_down: [false; 3],
        })
    }

    fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) -> Result<(), X11Error> {
        self.conn
            .xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, x, y, 0)?;
        Ok(())
    }

    fn motion(&self, x: u16, y: u16) -> Result<(), X11Error> {
        let c = |v: u16| i16::try_from(v).unwrap_or(i16::MAX);
        // detail 0: absolute coordinates on the root window.
        self.fake(MOTION_NOTIFY_EVENT, 0, c(x), c(y))
    }

    fn click(&self, button: u8, times: i32) -> Result<(), X11Error> {
        for _ in 0..times.min(MAX_WHEEL_STEPS) {
            self.fake(BUTTON_PRESS_EVENT, button, 0, 0)?;
            self.fake(BUTTON_RELEASE_EVENT, button, 0, 0)?;
        }
        Ok(())
    }

    /// Binds `keysym` to a spare keycode (xdotool's trick): one with no keysym at all, else the
    /// oldest we bound that is not held.
    fn bind_spare(&mut self, keysym: u32) -> Result<u8, X11Error> {
        let held: Vec<u8> = self.keys_down.values().copied().collect();
        let spare = self
            .keymap
            .unbound_keycodes()
            .first()
            .copied()
            .or_else(|| self.bound.iter().copied().find(|kc| !held.contains(kc)))
            .ok_or(X11Error::NoSpareKeycode(keysym))?;
        self.bind(spare, keysym)?;
        self.bound.retain(|&k| k != spare);
        self.bound.push(spare);
        Ok(spare)
    }

    /// Sets every column of `keycode` to `keysym` (0 unbinds it), here and on the server.
    fn bind(&mut self, keycode: u8, keysym: u32) -> Result<(), X11Error> {
        let syms = vec![keysym; self.keymap.per_keycode()];
        self.conn
            .change_keyboard_mapping(1, keycode, self.keysyms_per_keycode, &syms)?;
        self.keymap.set(keycode, keysym);
        Ok(())
    }

    /// The keys down on the server now and the Caps Lock state.
    fn held(&self) -> Result<Held, X11Error> {
        let map = self.conn.query_keymap()?.reply()?;
        let pointer = self.conn.query_pointer(self.root)?.reply()?;
        let keys = (0u16..256)
            .filter(|&k| map.keys[usize::from(k / 8)] & (1 << (k % 8)) != 0)
            .filter_map(|k| u8::try_from(k).ok())
            .collect();
        Ok(Held {
            keys,
            caps_lock: pointer.mask.contains(KeyButMask::LOCK),
            shortcut: pointer
                .mask
                .intersects(KeyButMask::CONTROL | KeyButMask::MOD1 | KeyButMask::MOD4),
        })
    }

    /// The keycode for `keysym` and the modifier changes around its press.
    fn keycode_and_plan(&mut self, keysym: u32) -> Result<(u8, Plan), X11Error> {
        let Some(choice) = self.keymap.find(keysym) else {
            return Ok((self.bind_spare(keysym)?, Plan::default()));
        };
        // Modifiers, function keys and keysyms we bound (every column the same) as they are.
        if !is_character(keysym)
            || self.keymap.is_modifier(choice.keycode)
            || self.bound.contains(&choice.keycode)
        {
            return Ok((choice.keycode, Plan::default()));
        }
        match keymap::plan(&self.keymap, keysym, choice, &self.held()?) {
            Some(plan) => Ok((choice.keycode, plan)),
            // A level whose modifier has no key here (no AltGr key): bind the keysym instead.
            None => Ok((self.bind_spare(keysym)?, Plan::default())),
        }
    }

    fn fake_keys(&self, keys: &[(u8, bool)]) -> Result<(), X11Error> {
        for &(keycode, down) in keys {
            let kind = if down {
                KEY_PRESS_EVENT
            } else {
                KEY_RELEASE_EVENT
            };
            self.fake(kind, keycode, 0, 0)?;
        }
        Ok(())
    }

    fn key(&mut self, key: &str, down: bool) -> Result<(), X11Error> {
        let keysym = keysym_for(key).ok_or_else(|| X11Error::UnknownKey(key.to_owned()))?;
        if down {
            // Auto-repeat presses the same keycode again, with the same levels.
            let (keycode, plan) = self.keycode_and_plan(keysym)?;
            self.keys_down.insert(keysym, keycode);
            self.fake_keys(&plan.before)?;
            self.fake(KEY_PRESS_EVENT, keycode, 0, 0)?;
            self.fake_keys(&plan.after)
        } else {
            match self.keys_down.remove(&keysym) {
                Some(keycode) => self.fake(KEY_RELEASE_EVENT, keycode, 0, 0),
                None => Ok(()), // released a key we never pressed: nothing to do
            }
        }
    }
}

impl InputInjector for X11Input {
    type Error = X11Error;

    fn inject(&mut self, event: &InputEvent) -> Result<(), X11Error> {
        match event {
            InputEvent::PointerMove { x, y } => self.motion(*x, *y)?,
            InputEvent::PointerButton { x, y, button, down } => {
                self.motion(*x, *y)?;
                if let Some(slot) = self
                    .buttons_down
                    .get_mut(usize::from(*button).wrapping_sub(1))
                {
                    *slot = *down;
                    let kind = if *down {
                        BUTTON_PRESS_EVENT
                    } else {
                        BUTTON_RELEASE_EVENT
                    };
                    self.fake(kind, *button, 0, 0)?;
                }
            }
            InputEvent::Wheel { x, y, dx, dy } => {
                self.motion(*x, *y)?;
                // X11 wheel buttons: 4 up, 5 down, 6 left, 7 right.
                self.click(if *dy > 0 { 5 } else { 4 }, dy.saturating_abs())?;
                self.click(if *dx > 0 { 7 } else { 6 }, dx.saturating_abs())?;
            }
            InputEvent::Key { key, down } => self.key(key, *down)?,
        }
        self.conn.flush()?;
        Ok(())
    }

    fn release_all(&mut self) -> Result<(), X11Error> {
        for (_, keycode) in std::mem::take(&mut self.keys_down) {
            self.fake(KEY_RELEASE_EVENT, keycode, 0, 0)?;
        }
        for (i, down) in self.buttons_down.iter_mut().enumerate() {
            if std::mem::take(down) {
                // i < 3, so the button number fits.
                self.conn.xtest_fake_input(
                    BUTTON_RELEASE_EVENT,
                    i as u8 + 1,
                    x11rb::CURRENT_TIME,
                    self.root,
                    0,
                    0,
                    0,
                )?;
            }
        }
        self.conn.flush()?;
        Ok(())
    }
}

impl Drop for X11Input {
    fn drop(&mut self) {
        // Leave the keyboard as we found it: release what is held and unbind the keysyms we added.
        let _ = self.release_all();
        for keycode in std::mem::take(&mut self.bound) {
            let _ = self.bind(keycode, 0);
        }
        let _ = self.conn.flush();
    }
}
