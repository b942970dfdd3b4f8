//! The Linux/X11 sharer agent (docs/clients.md, "Sharer agent"): it joins the relay as the sharer, sends the
//! screen as JPEG tiles (docs/protocol.md, "Screen and input payloads") and applies the helper's input.
//!
//! - [`backend`]: the two traits a platform implements, [`backend::ScreenCapture`] and
//!   [`backend::InputInjector`];
//! - [`x11`]: their X11 implementation (`GetImage` on the root window, XTest input), over x11rb's pure-Rust
//!   connection;
//! - [`tiles`]: turns successive captures into screen frame payloads (diff, JPEG, size bound);
//! - [`share`]: the media loop against the relay ([`share::share_screen`]).
//!
//! The decisions (input gate, frame rate, codec, diff) live in the pure `assist-screen` crate; this crate is
//! the IO around them. Capture, JPEG encoding and input injection run on their own threads, never on the
//! async runtime.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod share;
pub mod tiles;
pub mod x11;

pub use backend::{Capture, InputInjector, ScreenCapture};
pub use share::{
    share_screen, RelayInfo, ShareEnd, ShareError, ShareEvent, ShareOptions, ShareOutcome,
};
