//! The screen frame codec (what the sharer sends in screen-channel payloads) and input events
//! (input-channel payloads). Never panics; a frame that decodes re-encodes to the same bytes.
#![no_main]

use assist_screen::frame::{decode_frame, encode_frame};
use assist_screen::input::InputEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_frame(data) {
        for t in &frame.tiles {
            assert!(t.rect.fits_in(frame.width, frame.height));
        }
        let again = encode_frame(frame.width, frame.height, &frame.tiles).expect("re-encodes");
        assert_eq!(decode_frame(&again).expect("re-decodes"), frame);
    }
    if let Ok(ev) = InputEvent::parse(data) {
        let again = InputEvent::parse(&ev.to_json()).expect("re-encoded input parses");
        assert_eq!(format!("{ev:?}"), format!("{again:?}"));
    }
});
