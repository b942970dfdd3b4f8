//! The signalling message parser (`/v1/signal` text messages). Never panics; a message that
//! parses re-serialises to one that parses to the same message.
#![no_main]

use assist_session::message::ClientMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientMessage::parse(text) {
        Ok(msg) => {
            let again = ClientMessage::parse(&msg.to_json()).expect("re-serialised message parses");
            assert_eq!(msg, again);
        }
        Err(e) => {
            let _ = (e.code(), e.id());
        }
    }
});
