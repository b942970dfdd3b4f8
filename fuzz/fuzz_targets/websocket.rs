//! The WebSocket decoders of `assist-ws` (server side: masked client frames; client side:
//! unmasked), fed in chunks whose sizes the input chooses, as TCP would deliver them. Never
//! panics; never yields a message over the limit; binary messages go on to the relay frame parser.
#![no_main]

use assist_relay_proto::frame::Frame;
use assist_ws::{ClientDecoder, ServerDecoder, WsEvent};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const MAX_MESSAGE: usize = 64 * 1024;

fn check(event: &WsEvent) {
    match event {
        WsEvent::Binary(b) => {
            assert!(b.len() <= MAX_MESSAGE);
            let _ = Frame::from_client_bytes(b.clone(), MAX_MESSAGE);
        }
        WsEvent::Text(b) => assert!(b.len() <= MAX_MESSAGE),
        WsEvent::Ping(b) | WsEvent::Pong(b) => assert!(b.len() <= 125),
        WsEvent::Close { reason, .. } => assert!(reason.len() <= 123),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    for server in [true, false] {
        let mut server_dec = ServerDecoder::new(MAX_MESSAGE);
        let mut client_dec = ClientDecoder::new(MAX_MESSAGE);
        let mut buf = BytesMut::new();
        'feed: for piece in rest.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                let decoded = if server {
                    server_dec.decode(&mut buf)
                } else {
                    client_dec.decode(&mut buf)
                };
                match decoded {
                    Ok(Some(event)) => check(&event),
                    Ok(None) => break,
                    Err(e) => {
                        let _ = e.close_code();
                        break 'feed;
                    }
                }
            }
        }
    }
});
