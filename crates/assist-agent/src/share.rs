//! The sharer's media loop: join the relay with the session's ticket, wait for `paired`, then send the
//! screen at the adaptive frame rate and apply the helper's input while the mode allows it.
//!
//! Threads: the async loop ([`run_session`]) only routes frames and keeps time. A **capture thread** owns
//! the [`ScreenCapture`] and the [`TileEncoder`] and answers one capture request at a time; an **input
//! thread** owns the [`InputInjector`]. A relay reader task and a writer task own the two halves of the
//! relay connection. Everything between them is a bounded channel. A capture starts only once it has
//! reserved a place in the writer's queue of [`SCREEN_FRAMES_IN_FLIGHT`] frames, so a slow relay slows the
//! capture instead of growing a queue, and the loop never waits to hand a frame over.

use crate::backend::{InputInjector, ScreenCapture};
use crate::tiles::{EncodedFrame, TileEncoder, TileError};
use crate::x11::{X11Error, X11Input, X11Screen};
use assist_client::relay::{connect_wss, ClientError, ClientEvent};
use assist_relay_proto::control::RelayControl;
use assist_relay_proto::frame::{Channel, Frame, DEFAULT_MAX_PAYLOAD, FLAG_KEYFRAME};
use assist_screen::{input_decision, FrameRate, InputDecision, InputEvent};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// Screen frames encoded but not yet written to the relay, at most.
pub const SCREEN_FRAMES_IN_FLIGHT: usize = 2;

/// Input events waiting for the input thread, at most. When full the loop waits (input is never dropped).
const INPUT_QUEUE: usize = 256;

/// How to join the relay: the `relay` object of the sharer's `sessionActive`.
#[derive(Clone)]
pub struct RelayInfo {
    /// The sharer's relay ticket (single use, short-lived). Never logged: `Debug` hides it.
    pub ticket: String,
    /// `wss://host:port/v1/relay`.
    pub wss_url: String,
}

impl std::fmt::Debug for RelayInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayInfo")
            .field("ticket", &"<redacted>")
            .field("wss_url", &self.wss_url)
            .finish()
    }
}

/// What the media loop reports while it runs (for a UI; dropped when the receiver is full).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShareEvent {
    /// The relay accepted the ticket; waiting for the helper.
    Joined,
    /// Both legs are present: sharing starts in `mode`.
    Paired {
        /// The session's mode.
        mode: String,
    },
    /// The relay announced a new mode.
    ModeChanged {
        /// The new mode.
        mode: String,
    },
    /// Input cannot be applied on this display (no XTest, …); the screen is still shared.
    InputUnavailable(String),
    /// A chat line arrived on the relay's chat channel (the CLI's chat goes through signalling).
    Chat(String),
}

/// Options of [`share_screen`] and [`run_session`].
#[derive(Debug, Clone, Default)]
pub struct ShareOptions {
    /// The X display (`":0"`); `None` uses `$DISPLAY`.
    pub display: Option<String>,
    /// Where to report [`ShareEvent`]s, if anywhere.
    pub events: Option<mpsc::Sender<ShareEvent>>,
    /// Cancelled by the caller to stop sharing (the session ended in signalling, the user quit).
    pub cancel: CancellationToken,
}

/// How the sharing ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareEnd {
    /// The relay said `ended` with this reason.
    Ended(String),
    /// The relay closed the leg (with its close code, if one came) without `ended`.
    Closed(Option<u16>),
    /// [`ShareOptions::cancel`] was cancelled.
    Cancelled,
}

/// What happened during a share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareStats {
    /// Screen frames sent.
    pub frames: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// Screen payload bytes sent.
    pub screen_bytes: u64,
    /// Input events applied.
    pub input_applied: u64,
    /// Input events ignored because the mode does not allow control.
    pub input_ignored: u64,
    /// Input payloads that were not valid events.
    pub input_malformed: u64,
    /// `keyframeRequest`s received.
    pub keyframe_requests: u64,
}

/// The result of a share that ran to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareOutcome {
    /// Why it ended.
    pub end: ShareEnd,
    /// Counters.
    pub stats: ShareStats,
}

/// Why sharing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShareError {
    /// The `wssUrl` is not `wss://host[:port]/…` (the broker's fault).
    #[error("bad relay URL {0:?}")]
    BadUrl(String),
    /// The relay's host name did not resolve.
    #[error("cannot resolve the relay {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        source: std::io::Error,
    },
    /// Joining the relay or talking to it failed.
    #[error("relay: {0}")]
    Relay(#[from] ClientError),
    /// The relay connection's writer stopped (the connection broke).
    #[error("the relay connection broke")]
    RelayGone,
    /// The display could not be opened or captured.
    #[error("screen: {0}")]
    Screen(Box<dyn std::error::Error + Send + Sync>),
    /// A capture could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] TileError),
    /// A worker thread could not be started or died.
    #[error("worker thread: {0}")]
    Thread(String),
}

/// The host, port and path of a `wss://` URL.
fn parse_wss_url(url: &str) -> Result<(String, u16, String), ShareError> {
    let bad = || ShareError::BadUrl(url.to_owned());
    let rest = url.strip_prefix("wss://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => 443,
            None => return Err(bad()),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (authority, 443),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

/// Shares the X display `opts.display` (or `$DISPLAY`) with the helper through the relay.
///
/// Opens the display first (so a missing display does not spend the single-use ticket), then joins the
/// relay over WSS with the ticket in the `Authorization` header, and runs [`run_session`]. If the display
/// has no XTest, the screen is still shared and a [`ShareEvent::InputUnavailable`] is reported.
pub async fn share_screen(
    relay: &RelayInfo,
    tls: Arc<rustls::ClientConfig>,
    opts: ShareOptions,
) -> Result<ShareOutcome, ShareError> {
    let (host, port, path) = parse_wss_url(&relay.wss_url)?;
    if path != "/v1/relay" {
        warn!(%path, "relay URL path is not /v1/relay; joining /v1/relay");
    }
    let display = opts.display.clone();
    let (screen, input) = tokio::task::spawn_blocking(move || {
        let screen = X11Screen::connect(display.as_deref())?;
        let input = X11Input::connect(display.as_deref());
        Ok::<_, X11Error>((screen, input))
    })
    .await
    .map_err(|e| ShareError::Thread(e.to_string()))?
    .map_err(|e| ShareError::Screen(Box::new(e)))?;
    let input = match input {
        Ok(i) => Some(i),
        Err(e) => {
            warn!(reason = %e, "input will not be applied");
            report(&opts, ShareEvent::InputUnavailable(e.to_string()));
            None
        }
    };
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .and_then(|mut a| {
            a.next()
                .ok_or_else(|| std::io::Error::other("no address for the relay host"))
        })
        .map_err(|source| ShareError::Resolve {
            host: host.clone(),
            source,
        })?;
    let span = tracing::info_span!("share", relay = %addr);
    async move {
        let (sender, receiver) = connect_wss(addr, &host, tls, &relay.ticket).await?;
        info!("joined the relay");
        run_session(RelayLink::spawn(sender, receiver), screen, input, opts).await
    }
    .instrument(span)
    .await
}

/// The relay connection as two channels, so [`run_session`] can be driven by anything (tests use plain
/// channels; [`RelayLink::spawn`] wraps a real WSS or QUIC leg).
#[derive(Debug)]
pub struct RelayLink {
    /// Frames to send. Closing it (dropping the sender) closes the leg.
    pub tx: mpsc::Sender<Frame>,
    /// What the relay sent.
    pub rx: mpsc::Receiver<Result<ClientEvent, ClientError>>,
    /// The writer task, awaited at the end so the close frame goes out.
    pub writer: Option<tokio::task::JoinHandle<()>>,
}

impl RelayLink {
    /// Spawns a reader and a writer task around a relay leg.
    pub fn spawn(
        mut sender: assist_client::relay::ClientSender,
        mut receiver: assist_client::relay::ClientReceiver,
    ) -> RelayLink {
        let (tx, mut out_rx) = mpsc::channel::<Frame>(SCREEN_FRAMES_IN_FLIGHT);
        let (in_tx, rx) = mpsc::channel(64);
        let writer = tokio::spawn(
            async move {
                while let Some(f) = out_rx.recv().await {
                    if let Err(e) = sender.send(&f).await {
                        debug!(reason = %e, "relay write failed");
                        return;
                    }
                }
                sender.close().await;
            }
            .in_current_span(),
        );
        tokio::spawn(
            async move {
                loop {
                    let ev = receiver.recv().await;
                    let last = !matches!(ev, Ok(ClientEvent::Frame(_)));
                    if in_tx.send(ev).await.is_err() || last {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
        RelayLink {
            tx,
            rx,
            writer: Some(writer),
        }
    }
}

fn report(opts: &ShareOptions, ev: ShareEvent) {
    if let Some(tx) = &opts.events {
        let _ = tx.try_send(ev);
    }
}

/// One capture: the encoded frame (`None`: nothing changed) and where the pointer was.
type CaptureResult = Result<(Option<EncodedFrame>, Option<(u16, u16)>), ShareError>;

/// Runs the capture thread: one capture and encode per request, the answer on `results`.
fn spawn_capture<S: ScreenCapture>(
    mut screen: S,
    requests: std::sync::mpsc::Receiver<bool>,
    results: mpsc::Sender<CaptureResult>,
) -> Result<(), ShareError> {
    std::thread::Builder::new()
        .name("assist-capture".into())
        .spawn(move || {
            let mut encoder = TileEncoder::new(DEFAULT_MAX_PAYLOAD);
            for keyframe in requests {
                let r = screen
                    .capture()
                    .map_err(|e| ShareError::Screen(Box::new(e)))
                    .and_then(|c| Ok(encoder.encode(c, keyframe)?))
                    .map(|frame| (frame, screen.pointer()));
                if results.blocking_send(r).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| ShareError::Thread(e.to_string()))
}

/// What the input thread is asked to do.
enum InputCommand {
    Apply(InputEvent),
    ReleaseAll,
}

/// Runs the input thread. It releases everything held when its channel closes.
fn spawn_input<I: InputInjector>(mut input: I) -> Result<mpsc::Sender<InputCommand>, ShareError> {
    let (tx, mut rx) = mpsc::channel::<InputCommand>(INPUT_QUEUE);
    std::thread::Builder::new()
        .name("assist-input".into())
        .spawn(move || {
            let mut failures = 0u64;
            while let Some(cmd) = rx.blocking_recv() {
                let r = match &cmd {
                    InputCommand::Apply(ev) => input.inject(ev),
                    InputCommand::ReleaseAll => input.release_all(),
                };
                if let Err(e) = r {
                    failures += 1;
                    // The first failure is worth a warning; a flood of them (a broken display) is not.
                    if failures == 1 {
                        warn!(reason = %e, "input event not applied");
                    } else {
                        debug!(reason = %e, "input event not applied");
                    }
                }
            }
            let _ = input.release_all();
        })
        .map_err(|e| ShareError::Thread(e.to_string()))?;
    Ok(tx)
}

/// The media loop over an established relay link. Returns when the relay ends or closes the session, or
/// `opts.cancel` is cancelled; errors when capture fails or the relay breaks. `input` is `None` when the
/// platform cannot inject (input is then counted as ignored).
pub async fn run_session<S: ScreenCapture, I: InputInjector>(
    mut link: RelayLink,
    screen: S,
    input: Option<I>,
    opts: ShareOptions,
) -> Result<ShareOutcome, ShareError> {
    let (req_tx, req_rx) = std::sync::mpsc::sync_channel::<bool>(1);
    let (res_tx, mut res_rx) = mpsc::channel::<CaptureResult>(1);
    spawn_capture(screen, req_rx, res_tx)?;
    let input_tx = input.map(spawn_input).transpose()?;
    let start = Instant::now();
    let now_ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);

    let mut stats = ShareStats::default();
    let mut mode: Option<String> = None;
    let mut paired = false;
    let mut need_keyframe = true;
    let mut rate = FrameRate::new(now_ms());
    // A capture is due (the deadline passed) and waits for room among the frames in flight.
    let mut due = false;
    // The capture in flight, holding its reserved place in the writer's queue.
    let mut in_flight: Option<mpsc::OwnedPermit<Frame>> = None;
    // The pointer position last sent to the helper.
    let mut last_pointer: Option<(u16, u16)> = None;

    let result = loop {
        let deadline = start + std::time::Duration::from_millis(rate.next_deadline_ms(now_ms()));
        tokio::select! {
            biased;
            _ = opts.cancel.cancelled() => break Ok(ShareEnd::Cancelled),
            ev = link.rx.recv() => {
                let frame = match ev {
                    None => break Ok(ShareEnd::Closed(None)),
                    Some(Err(e)) => break Err(ShareError::Relay(e)),
                    Some(Ok(ClientEvent::Closed(code))) => break Ok(ShareEnd::Closed(code)),
                    Some(Ok(ClientEvent::Frame(f))) => f,
                };
                match frame.header.channel {
                    Channel::Control if frame.header.is_from_relay() => {
                        let Ok(msg) = RelayControl::from_json(&frame.payload()) else {
                            debug!("ignoring an unknown relay control message");
                            continue;
                        };
                        match msg {
                            RelayControl::Joined { .. } => report(&opts, ShareEvent::Joined),
                            RelayControl::Paired { mode: m, .. } => {
                                info!(mode = %m, "paired");
                                paired = true;
                                need_keyframe = true;
                                report(&opts, ShareEvent::Paired { mode: m.clone() });
                                mode = Some(m);
                            }
                            RelayControl::ModeChanged { mode: m, .. } => {
                                info!(mode = %m, "mode changed");
                                let was = input_decision(mode.as_deref());
                                if was == InputDecision::Apply && input_decision(Some(&m)) == InputDecision::Ignore {
                                    if let Some(tx) = &input_tx {
                                        let _ = tx.send(InputCommand::ReleaseAll).await;
                                    }
                                }
                                report(&opts, ShareEvent::ModeChanged { mode: m.clone() });
                                mode = Some(m);
                            }
                            RelayControl::KeyframeRequest { reason } => {
                                debug!(%reason, "keyframe requested");
                                stats.keyframe_requests += 1;
                                need_keyframe = true;
                                rate.keyframe_requested(&reason, now_ms());
                            }
                            RelayControl::Ended { reason } => break Ok(ShareEnd::Ended(reason)),
                        }
                    }
                    Channel::Input => {
                        let ev = match InputEvent::parse(&frame.payload()) {
                            Ok(ev) => ev,
                            Err(e) => {
                                stats.input_malformed += 1;
                                debug!(reason = %e, "ignoring an input event");
                                continue;
                            }
                        };
                        match (input_decision(mode.as_deref()), &input_tx) {
                            (InputDecision::Apply, Some(tx)) => {
                                if tx.send(InputCommand::Apply(ev)).await.is_err() {
                                    break Err(ShareError::Thread("the input thread stopped".into()));
                                }
                                stats.input_applied += 1;
                            }
                            _ => stats.input_ignored += 1,
                        }
                    }
                    Channel::Chat => {
                        report(&opts, ShareEvent::Chat(String::from_utf8_lossy(&frame.payload()).into_owned()));
                    }
                    // The helper's own control frames and anything on the screen channel mean nothing here.
                    Channel::Control | Channel::Screen => debug!(channel = frame.header.channel.as_str(), "ignoring a frame"),
                }
            }
            res = res_rx.recv(), if in_flight.is_some() => {
                let Some(permit) = in_flight.take() else { continue };
                let (encoded, pointer) = match res {
                    None => break Err(ShareError::Thread("the capture thread stopped".into())),
                    Some(Err(e)) => break Err(e),
                    Some(Ok(r)) => r,
                };
                if pointer.is_some() && pointer != last_pointer {
                    // The helper draws it (the capture does not show it); a full queue skips
                    // this one and the next capture tries again.
                    if let Some((x, y)) = pointer {
                        let msg = format!(r#"{{"type":"pointer","x":{x},"y":{y}}}"#);
                        if link.tx.try_send(Frame::new(Channel::Control, 0, msg.as_bytes())).is_ok() {
                            last_pointer = pointer;
                        }
                    }
                }
                let Some(encoded) = encoded else {
                    drop(permit);
                    continue; // nothing changed
                };
                let flags = if encoded.keyframe { FLAG_KEYFRAME } else { 0 };
                stats.frames += 1;
                stats.keyframes += u64::from(encoded.keyframe);
                stats.screen_bytes += encoded.payload.len() as u64;
                permit.send(Frame::new(Channel::Screen, flags, &encoded.payload));
            }
            _ = tokio::time::sleep_until(deadline), if paired && !due && in_flight.is_none() => due = true,
            permit = link.tx.clone().reserve_owned(), if due && in_flight.is_none() => {
                let Ok(permit) = permit else { break Err(ShareError::RelayGone) };
                due = false;
                rate.capture_started(now_ms());
                if req_tx.send(need_keyframe).is_err() {
                    break Err(ShareError::Thread("the capture thread stopped".into()));
                }
                need_keyframe = false;
                in_flight = Some(permit);
            }
        }
    };

    // Stop the workers (each ends when its channel closes; the input thread releases what it holds),
    // then close the leg and wait for the close frame to be written.
    drop(req_tx);
    drop(in_flight);
    if let Some(tx) = input_tx {
        let _ = tx.send(InputCommand::ReleaseAll).await;
    }
    drop(link.tx);
    if let Some(w) = link.writer.take() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), w).await;
    }
    let end = result?;
    info!(
        ?end,
        frames = stats.frames,
        keyframes = stats.keyframes,
        "sharing stopped"
    );
    Ok(ShareOutcome { end, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_ticket() {
        let r = RelayInfo {
            ticket: "eyJsecret".into(),
            wss_url: "wss://r:1/v1/relay".into(),
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("eyJsecret") && shown.contains("wss://r:1/v1/relay"));
    }

    #[test]
    fn wss_urls() {
        assert_eq!(
            parse_wss_url("wss://relay1.example.net:7443/v1/relay").unwrap(),
            ("relay1.example.net".into(), 7443, "/v1/relay".into())
        );
        assert_eq!(
            parse_wss_url("wss://localhost/v1/relay").unwrap(),
            ("localhost".into(), 443, "/v1/relay".into())
        );
        assert_eq!(
            parse_wss_url("wss://[::1]:8443/v1/relay").unwrap(),
            ("::1".into(), 8443, "/v1/relay".into())
        );
        for bad in [
            "https://x/v1/relay",
            "wss://:1/",
            "wss://h:port/",
            "wss://[::1/",
            "wss://[::1]x/",
        ] {
            assert!(parse_wss_url(bad).is_err(), "{bad}");
        }
    }
}
