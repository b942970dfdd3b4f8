//! What a platform provides to the sharer agent: a screen to capture and a place to inject input.
//!
//! A port to another system (Wayland through the desktop portal, Windows through DXGI and `SendInput`,
//! macOS through ScreenCaptureKit and `CGEvent`) implements these two traits and passes them to
//! [`crate::share::run_session`]; the relay, codec, diff, frame rate and input gate stay as they are.

use assist_screen::{InputEvent, PixelBuf};

/// One capture of the whole screen, 4 bytes per pixel in **BGRX** order (blue, green, red, unused), rows
/// `stride` bytes apart.
#[derive(Clone, PartialEq, Eq)]
pub struct Capture {
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Bytes from one row to the next (at least `4 × width`).
    pub stride: usize,
    /// The pixels.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the pixels: megabytes of them, and what is on someone's screen.
        f.debug_struct("Capture")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("stride", &self.stride)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl Capture {
    /// A view for diffing and copying, or `None` if `data` is too short for the declared size.
    pub fn pixels(&self) -> Option<PixelBuf<'_>> {
        PixelBuf::new(&self.data, self.width, self.height, self.stride)
    }

    /// The `(red, green, blue)` of pixel `(x, y)`, or `None` outside the screen.
    pub fn rgb(&self, x: u16, y: u16) -> Option<(u8, u8, u8)> {
        let p = self.pixels()?.pixel(x, y)?;
        Some((p[2], p[1], p[0]))
    }
}

/// Captures the screen. Called from a dedicated thread: it may block.
pub trait ScreenCapture: Send + 'static {
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Captures the whole screen as it is now. The size may differ from the previous capture (the screen
    /// was resized); the agent then sends a keyframe.
    fn capture(&mut self) -> Result<Capture, Self::Error>;

    /// Where the pointer is on the screen now, in screen pixels, if the platform says (the
    /// capture itself does not show it). Asked after each capture; the agent sends the helper a
    /// `pointer` control message when it moved. The default: unknown.
    fn pointer(&mut self) -> Option<(u16, u16)> {
        None
    }
}

/// Injects input into the session. Called from a dedicated thread: it may block, but should be quick.
pub trait InputInjector: Send + 'static {
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies one event. Only called while the session's mode allows input.
    fn inject(&mut self, event: &InputEvent) -> Result<(), Self::Error>;

    /// Releases every key and button this injector holds down: called when control is withdrawn
    /// (`viewOnly`) and when the session ends, so nothing stays stuck.
    fn release_all(&mut self) -> Result<(), Self::Error>;
}
