//! The media loop ([`run_session`]) driven through channels with an in-memory screen and input recorder:
//! nothing before `paired`, a keyframe first, deltas after, keyframes on request, input applied only in
//! control modes, keys released when control is withdrawn, and the end on `ended`.

use assist_agent::share::{run_session, RelayLink, ShareEnd, ShareEvent, ShareOptions};
use assist_agent::{Capture, InputInjector, ScreenCapture};
use assist_client::relay::ClientEvent;
use assist_relay_proto::control::RelayControl;
use assist_relay_proto::frame::{Channel, Frame};
use assist_screen::{decode_frame, InputEvent};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A 130x70 screen whose pixel (0, 0) the test can change.
#[derive(Clone)]
struct FakeScreen(Arc<Mutex<u8>>);

impl ScreenCapture for FakeScreen {
    type Error = std::io::Error;
    fn capture(&mut self) -> Result<Capture, std::io::Error> {
        let mut data = vec![50u8; 130 * 70 * 4];
        data[0] = *self.0.lock().unwrap();
        Ok(Capture {
            width: 130,
            height: 70,
            stride: 130 * 4,
            data,
        })
    }
}

/// Records what it is asked to do.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl InputInjector for Recorder {
    type Error = std::io::Error;
    fn inject(&mut self, event: &InputEvent) -> Result<(), std::io::Error> {
        let json = String::from_utf8(event.to_json()).unwrap();
        self.0.lock().unwrap().push(json);
        Ok(())
    }
    fn release_all(&mut self) -> Result<(), std::io::Error> {
        self.0.lock().unwrap().push("releaseAll".into());
        Ok(())
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            if self.0.lock().unwrap().len() >= n {
                return self.take();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} recorded actions, got {:?}", self.take());
    }
}

fn relay(msg: RelayControl) -> Result<ClientEvent, assist_client::ClientError> {
    Ok(ClientEvent::Frame(Frame::relay_control(&msg)))
}

fn input(json: &str) -> Result<ClientEvent, assist_client::ClientError> {
    Ok(ClientEvent::Frame(Frame::new(
        Channel::Input,
        0,
        json.as_bytes(),
    )))
}

async fn next_screen(rx: &mut mpsc::Receiver<Frame>) -> Frame {
    let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a screen frame within 5 s")
        .expect("the loop is running");
    assert_eq!(f.header.channel, Channel::Screen);
    f
}

#[tokio::test]
async fn media_loop_follows_the_relay() {
    let (relay_tx, relay_rx) = mpsc::channel(64);
    let (out_tx, mut out_rx) = mpsc::channel(2);
    let (events_tx, mut events_rx) = mpsc::channel(16);
    let pixel = Arc::new(Mutex::new(0u8));
    let recorder = Recorder::default();
    let opts = ShareOptions {
        events: Some(events_tx),
        ..ShareOptions::default()
    };
    let task = tokio::spawn(run_session(
        RelayLink {
            tx: out_tx,
            rx: relay_rx,
            writer: None,
        },
        FakeScreen(pixel.clone()),
        Some(recorder.clone()),
        opts,
    ));

    // Joined but not paired: nothing is captured or sent, and input is not applied.
    relay_tx
        .send(relay(RelayControl::Joined {
            role: "sharer".into(),
            sid: "s".into(),
        }))
        .await
        .unwrap();
    relay_tx
        .send(input(r#"{"type":"pointerMove","x":1,"y":2}"#))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), out_rx.recv())
            .await
            .is_err()
    );
    assert_eq!(events_rx.recv().await, Some(ShareEvent::Joined));

    // Paired in view-only: a keyframe covering the screen comes first.
    relay_tx
        .send(relay(RelayControl::Paired {
            mode: "viewOnly".into(),
            chat: true,
        }))
        .await
        .unwrap();
    let key = next_screen(&mut out_rx).await;
    assert!(key.header.is_keyframe());
    let payload = key.payload();
    let frame = decode_frame(&payload).unwrap();
    assert_eq!((frame.width, frame.height, frame.tiles.len()), (130, 70, 6));
    assert!(frame.covers_screen());
    assert_eq!(
        events_rx.recv().await,
        Some(ShareEvent::Paired {
            mode: "viewOnly".into()
        })
    );

    // A change in the first tile: a delta frame of that tile only.
    *pixel.lock().unwrap() = 200;
    let delta = next_screen(&mut out_rx).await;
    assert!(!delta.header.is_keyframe());
    let payload = delta.payload();
    let tiles = decode_frame(&payload).unwrap().tiles;
    assert_eq!(tiles.len(), 1);
    assert_eq!((tiles[0].rect.x, tiles[0].rect.y), (0, 0));

    // View-only: input is ignored. Full control: applied, in order.
    relay_tx
        .send(input(r#"{"type":"key","key":"a","down":true}"#))
        .await
        .unwrap();
    relay_tx
        .send(relay(RelayControl::ModeChanged {
            mode: "fullControl".into(),
            chat: true,
        }))
        .await
        .unwrap();
    relay_tx
        .send(input(
            r#"{"type":"pointerButton","x":5,"y":6,"button":1,"down":true}"#,
        ))
        .await
        .unwrap();
    relay_tx
        .send(input(r#"{"type":"teleport"}"#))
        .await
        .unwrap();
    relay_tx
        .send(input(r#"{"type":"key","key":"Enter","down":true}"#))
        .await
        .unwrap();
    assert_eq!(
        recorder.wait_for(2).await,
        [
            r#"{"type":"pointerButton","x":5,"y":6,"button":1,"down":true}"#,
            r#"{"type":"key","key":"Enter","down":true}"#
        ]
    );

    // Control withdrawn: whatever is held is released, and input is ignored again.
    relay_tx
        .send(relay(RelayControl::ModeChanged {
            mode: "viewOnly".into(),
            chat: true,
        }))
        .await
        .unwrap();
    assert_eq!(recorder.wait_for(1).await, ["releaseAll"]);
    relay_tx
        .send(input(r#"{"type":"pointerMove","x":1,"y":2}"#))
        .await
        .unwrap();

    // A keyframe request: the next frame is a keyframe even though nothing changed.
    relay_tx
        .send(relay(RelayControl::KeyframeRequest {
            reason: "congestion".into(),
        }))
        .await
        .unwrap();
    let again = next_screen(&mut out_rx).await;
    assert!(again.header.is_keyframe());

    // Ended: the loop stops and reports what it did.
    relay_tx
        .send(relay(RelayControl::Ended {
            reason: "ended".into(),
        }))
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop ends")
        .unwrap()
        .unwrap();
    assert_eq!(outcome.end, ShareEnd::Ended("ended".into()));
    let s = outcome.stats;
    assert_eq!((s.frames, s.keyframes), (3, 2));
    assert_eq!(s.input_applied, 2);
    assert_eq!(s.input_ignored, 3);
    assert_eq!(s.input_malformed, 1);
    assert_eq!(s.keyframe_requests, 1);
    // The link is closed: the writer would send its close frame now.
    assert!(out_rx.recv().await.is_none());
}

#[tokio::test]
async fn cancel_and_close_end_the_loop() {
    for cancel_it in [true, false] {
        let (relay_tx, relay_rx) = mpsc::channel(8);
        let (out_tx, _out_rx) = mpsc::channel(2);
        let opts = ShareOptions::default();
        let cancel = opts.cancel.clone();
        let task = tokio::spawn(run_session::<_, Recorder>(
            RelayLink {
                tx: out_tx,
                rx: relay_rx,
                writer: None,
            },
            FakeScreen(Arc::new(Mutex::new(0))),
            None,
            opts,
        ));
        if cancel_it {
            cancel.cancel();
        } else {
            relay_tx
                .send(Ok(ClientEvent::Closed(Some(4004))))
                .await
                .unwrap();
        }
        let outcome = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop ends")
            .unwrap()
            .unwrap();
        let want = if cancel_it {
            ShareEnd::Cancelled
        } else {
            ShareEnd::Closed(Some(4004))
        };
        assert_eq!(outcome.end, want);
    }
}

/// A screen that also reports the pointer, which the test moves.
#[derive(Clone)]
struct PointerScreen(Arc<Mutex<Option<(u16, u16)>>>);

impl ScreenCapture for PointerScreen {
    type Error = std::io::Error;
    fn capture(&mut self) -> Result<Capture, std::io::Error> {
        FakeScreen(Arc::new(Mutex::new(0))).capture()
    }
    fn pointer(&mut self) -> Option<(u16, u16)> {
        *self.0.lock().unwrap()
    }
}

/// The next control frame the loop sends (screen frames are skipped), or `None` within `wait`.
async fn next_control(rx: &mut mpsc::Receiver<Frame>, wait: Duration) -> Option<String> {
    let end = tokio::time::Instant::now() + wait;
    loop {
        let f = tokio::time::timeout_at(end, rx.recv()).await.ok()??;
        if f.header.channel == Channel::Control {
            return Some(String::from_utf8(f.payload().to_vec()).unwrap());
        }
    }
}

#[tokio::test]
async fn the_pointer_goes_to_the_helper_when_it_moves() {
    let (relay_tx, relay_rx) = mpsc::channel(64);
    let (out_tx, mut out_rx) = mpsc::channel(8);
    let at = Arc::new(Mutex::new(Some((10u16, 20u16))));
    let task = tokio::spawn(run_session(
        RelayLink {
            tx: out_tx,
            rx: relay_rx,
            writer: None,
        },
        PointerScreen(at.clone()),
        None::<Recorder>,
        ShareOptions::default(),
    ));
    relay_tx
        .send(relay(RelayControl::Paired {
            mode: "viewOnly".into(),
            chat: true,
        }))
        .await
        .unwrap();
    let wait = Duration::from_secs(5);
    assert_eq!(
        next_control(&mut out_rx, wait).await.as_deref(),
        Some(r#"{"type":"pointer","x":10,"y":20}"#)
    );
    // Not sent again while it stays put.
    assert_eq!(
        next_control(&mut out_rx, Duration::from_millis(400)).await,
        None
    );
    *at.lock().unwrap() = Some((129, 0));
    assert_eq!(
        next_control(&mut out_rx, wait).await.as_deref(),
        Some(r#"{"type":"pointer","x":129,"y":0}"#)
    );
    relay_tx
        .send(relay(RelayControl::Ended {
            reason: "ended".into(),
        }))
        .await
        .unwrap();
    let outcome = task.await.unwrap().unwrap();
    assert_eq!(outcome.end, ShareEnd::Ended("ended".into()));
}
