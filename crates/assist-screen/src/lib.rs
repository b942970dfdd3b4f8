//! The reference clients' screen and input payloads (docs/protocol.md, "Screen and input payloads"),
//! and the sharer's decisions that do not need a screen or a socket.
//!
//! This crate owns:
//!
//! - [`frame`]: the screen frame codec (a set of JPEG/PNG tiles on a screen of known size);
//! - [`diff`]: which tiles of a fixed 64×64 grid changed between two captures;
//! - [`input`]: the JSON input events and the DOM key name → X11 keysym table;
//! - [`rate`]: the adaptive frame-rate controller driven by the relay's `keyframeRequest`s;
//! - [`mode`]: whether the session's mode lets the sharer apply input.
//!
//! It does **no IO**: no sockets, no X server, no clock (time is passed in as milliseconds), no image
//! encoding. Decoders never panic on any input; they return errors. The sharer agent (`assist-agent`)
//! wires these to X11 and the relay.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod diff;
pub mod frame;
pub mod input;
pub mod keymap;
pub mod mode;
pub mod rate;

pub use diff::{changed_tiles, grid, PixelBuf, TILE_SIZE};
pub use frame::{
    decode_frame, encode_frame, DecodeError, EncodeError, Frame, Rect, Tile, TileFormat,
};
pub use input::{keysym_for, InputError, InputEvent};
pub use mode::{input_decision, InputDecision};
pub use rate::FrameRate;
