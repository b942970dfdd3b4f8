//! A QUIC relay leg's stream: the ticket prelude, then length-delimited relay frames. Never
//! panics; the prelude round-trips; a decoded frame is exactly the bytes it consumed.
#![no_main]

use assist_relay_proto::quic::{
    parse_ticket_prelude, try_encode_ticket_prelude, StreamFrameDecoder,
};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rest = match parse_ticket_prelude(data) {
        Ok(Some((ticket, used))) => {
            assert!(used <= data.len());
            let encoded = try_encode_ticket_prelude(&ticket).expect("a parsed ticket re-encodes");
            assert_eq!(&encoded[..], &data[..used]);
            &data[used..]
        }
        Ok(None) => return,
        Err(e) => {
            let _ = e.close_code();
            return;
        }
    };
    let mut dec = StreamFrameDecoder::new(16 * 1024);
    let mut buf = BytesMut::from(rest);
    loop {
        let before = buf.len();
        let pending = dec.pending_frame_len(&buf);
        match dec.decode(&mut buf, true) {
            Ok(Some(frame)) => {
                assert_eq!(before - buf.len(), frame.len());
                assert_eq!(pending, Some(frame.len()));
            }
            Ok(None) => break,
            Err(e) => {
                let _ = e.close_code();
                break;
            }
        }
    }
});
