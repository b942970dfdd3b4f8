//! Relay frames as a client or the relay sends them (one WebSocket message or QUIC-delimited
//! frame), and the relay's control messages. Must never panic; a frame that parses must say
//! exactly what its bytes say.
#![no_main]

use assist_relay_proto::control::RelayControl;
use assist_relay_proto::frame::{Frame, HEADER_LEN};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

const MAX_PAYLOAD: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    for from_client in [true, false] {
        if let Ok(frame) = Frame::from_bytes(bytes.clone(), MAX_PAYLOAD, from_client) {
            assert_eq!(frame.len(), data.len());
            assert_eq!(frame.payload().len(), data.len() - HEADER_LEN);
            assert!(frame.payload().len() <= MAX_PAYLOAD);
        }
    }
    if let Ok(msg) = RelayControl::from_json(data) {
        // What parses re-encodes to something that parses to the same message.
        let again = RelayControl::from_json(&msg.to_json()).expect("re-encoded control parses");
        assert_eq!(format!("{msg:?}"), format!("{again:?}"));
    }
});
