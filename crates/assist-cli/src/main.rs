//! `assist`: a terminal client for the signalling service, so a person can run a whole Remote
//! Help session in two terminals (`assist helper`, `assist sharer`) against `assistd serve`.
//! It prints every event and reads simple commands from standard input. When the sharer's session
//! becomes active, `assist sharer` also shares its X display through the relay (the sharer agent,
//! `assist-agent`), unless `--no-screen` is given.
//!
//! It signs in with the OAuth device authorization grant (RFC 8628) against the provider the
//! server names at `/v1/auth/config` (the dev issuer's, Entra ID, Keycloak…), unless a token is
//! given (`ASSIST_TOKEN`, `--token-file`, or `--token`, which other users see in `ps`). Tokens
//! stay in this process's memory and never reach its output.

use assist_agent::share::{
    share_screen, RelayInfo, ShareEnd, ShareEvent, ShareOptions, ShareOutcome,
};
use assist_client::auth::{given_token, Login};
use assist_client::signal::{SignalClient, SignalEvent};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Terminal client for Assist's signalling service.
#[derive(Parser)]
#[command(name = "assist", version, about)]
struct Cli {
    #[command(subcommand)]
    role: RoleCmd,
}

#[derive(Subcommand)]
enum RoleCmd {
    /// Help someone: ask for a code (or a device with --device), then ask for a mode, chat, end.
    /// Commands: `mode viewOnly|fullControl|elevation|unattended`, `ack` (acknowledge warnings and
    /// ask again), `chat TEXT`, `end`, `quit`.
    Helper(HelperArgs),
    /// Share your screen: redeem a code (--code) or wait as a device for a launch, then allow or
    /// decline. Commands: `allow`, `decline`, `accept`, `chat TEXT`, `end`, `quit`.
    Sharer(SharerArgs),
}

#[derive(Args)]
struct Common {
    /// The server, e.g. https://localhost:8443.
    #[arg(long, default_value = "https://localhost:8443")]
    server: String,
    /// Bearer token for scripts (e.g. from `assistd token`). Visible to other users in `ps`:
    /// prefer ASSIST_TOKEN or --token-file. Without any, the CLI signs in with the device
    /// authorization grant (it prints a URL and a code to enter there).
    #[arg(long, env = "ASSIST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the bearer token (first line), instead of --token.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// PEM certificate to trust for the server. [default: DATA_DIR/tls/cert.pem, the dev
    /// server's self-signed certificate]
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The dev server's data directory (the same setting as `assistd serve`'s), where the default
    /// --ca is found.
    #[arg(
        long,
        env = "ASSIST_DATA_DIR",
        value_name = "DIR",
        default_value = "./assist-data"
    )]
    data_dir: PathBuf,
}

impl Common {
    /// The certificate file to trust: --ca, else the one `assistd serve` made in its data dir.
    fn ca(&self) -> PathBuf {
        self.ca
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls").join("cert.pem"))
    }
}

#[derive(Args)]
struct HelperArgs {
    #[command(flatten)]
    common: Common,
    /// Ask for this device (launch flow) instead of a code.
    #[arg(long)]
    device: Option<String>,
    /// With --device: the mode to ask for as soon as the device accepts.
    #[arg(long)]
    mode: Option<String>,
}

#[derive(Args)]
struct SharerArgs {
    #[command(flatten)]
    common: Common,
    /// The code the helper read out. Without it, wait for a launch on the token's device.
    #[arg(long)]
    code: Option<String>,
    /// Answer every consent and launch with yes (tests and unattended kiosks only).
    #[arg(long)]
    auto_accept: bool,
    /// The X display to share once the session is active (such as `:0`). Defaults to $DISPLAY.
    #[arg(long, env = "DISPLAY")]
    display: Option<String>,
    /// Do not share the screen: signalling only (consent, chat, end).
    #[arg(long)]
    no_screen: bool,
}

/// The screen share running for the active session.
struct Sharing {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<ShareOutcome, assist_agent::ShareError>>,
    /// `None` once the share has dropped its sender (it is ending).
    events: Option<mpsc::Receiver<ShareEvent>>,
}

impl Sharing {
    /// Starts sharing `display` with the relay named in a `sessionActive` event.
    fn start(m: &Value, display: &str, tls: Arc<rustls::ClientConfig>) -> Option<Sharing> {
        let (Some(ticket), Some(wss_url)) =
            (m["relay"]["ticket"].as_str(), m["relay"]["wssUrl"].as_str())
        else {
            println!("Screen not shared: the session has no relay ticket.");
            return None;
        };
        let relay = RelayInfo {
            ticket: ticket.to_owned(),
            wss_url: wss_url.to_owned(),
        };
        let (tx, events) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let opts = ShareOptions {
            display: Some(display.to_owned()),
            events: Some(tx),
            cancel: cancel.clone(),
        };
        println!("Sharing display {display}…");
        let task = tokio::spawn(async move { share_screen(&relay, tls, opts).await });
        Some(Sharing {
            cancel,
            task,
            events: Some(events),
        })
    }

    /// Stops sharing and waits (briefly) for the relay leg to close.
    async fn stop(self) {
        self.cancel.cancel();
        if let Ok(Ok(r)) = tokio::time::timeout(std::time::Duration::from_secs(3), self.task).await
        {
            describe_share_end(&r);
        }
    }
}

/// What the running share did next.
enum ShareStep {
    /// It reported an event.
    Event(ShareEvent),
    /// It finished (or its task failed).
    Done(Result<Result<ShareOutcome, assist_agent::ShareError>, tokio::task::JoinError>),
}

/// Waits for the share's next event or its end; forever when nothing is shared.
async fn share_step(sharing: &mut Option<Sharing>) -> ShareStep {
    let Some(s) = sharing.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            ev = async { s.events.as_mut()?.recv().await }, if s.events.is_some() => match ev {
                Some(ev) => return ShareStep::Event(ev),
                // The share dropped its sender: it is ending; wait for the task.
                None => s.events = None,
            },
            r = &mut s.task => return ShareStep::Done(r),
        }
    }
}

fn describe_share_end(r: &Result<ShareOutcome, assist_agent::ShareError>) {
    match r {
        Ok(o) => {
            let why = match &o.end {
                ShareEnd::Ended(reason) => format!("the relay ended the session ({reason})"),
                ShareEnd::Closed(code) => format!("the relay closed the connection ({code:?})"),
                ShareEnd::Cancelled => "the session ended".to_owned(),
            };
            println!(
                "Screen sharing stopped: {why}. {} frames sent, {} input events applied, {} ignored.",
                o.stats.frames, o.stats.input_applied, o.stats.input_ignored
            );
        }
        Err(e) => println!("Screen sharing failed: {e}"),
    }
}

async fn connect(c: &Common, token: &str) -> anyhow::Result<SignalClient> {
    let hostport = c
        .server
        .strip_prefix("https://")
        .ok_or_else(|| anyhow::anyhow!("--server must start with https://"))?
        .trim_end_matches('/');
    let host = hostport
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(hostport)
        .to_owned();
    let addr = tokio::net::lookup_host(if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:443")
    })
    .await?
    .next()
    .ok_or_else(|| anyhow::anyhow!("cannot resolve {hostport}"))?;
    Ok(SignalClient::connect(
        addr,
        &host,
        assist_client::tls::client_config(&c.ca())?,
        Some(token),
    )
    .await?)
}

/// The token to connect with: given (`--token`, `ASSIST_TOKEN`, `--token-file`) or from a
/// device sign-in (returned too, to refresh it).
async fn sign_in(c: &Common) -> anyhow::Result<(String, Option<Login>)> {
    if let Some(token) = given_token(c.token.as_deref(), c.token_file.as_deref())? {
        return Ok((token, None));
    }
    let login = Login::device_grant(&c.server, &c.ca(), |p| {
        println!(
            "To sign in, open {} and enter the code {}",
            p.verification_uri, p.user_code
        );
        if let Some(complete) = &p.verification_uri_complete {
            println!("(or open {complete})");
        }
    })
    .await?;
    println!("Signed in.");
    Ok((login.access_token().to_owned(), Some(login)))
}

/// One line describing an event for a person.
fn describe(m: &Value) -> String {
    let t = m["type"].as_str().unwrap_or("?");
    match t {
        "codeIssued" => format!(
            "Your code is {}  (read it out to the person you help)",
            m["code"].as_str().unwrap_or("")
        ),
        "sessionJoined" => format!("Joined. The other side: {}", profile(&m["peerProfile"])),
        "consentRequested" => format!(
            "{} asks for {}. Type `allow` or `decline`.",
            profile(&m["helperProfile"]),
            m["mode"].as_str().unwrap_or("")
        ),
        "launchRequested" => format!(
            "{} wants to help on this device. Type `accept` or `decline`.",
            profile(&m["helperProfile"])
        ),
        "warnings" => format!(
            "Warnings: {}. Type `ack` to acknowledge and ask again.",
            m["warnings"]
        ),
        "sessionActive" => format!(
            "Session active in {} (chat {}). Relay: {}",
            m["mode"].as_str().unwrap_or(""),
            if m["chat"] == true { "on" } else { "off" },
            m["relay"]["wssUrl"].as_str().unwrap_or("")
        ),
        "chat" => format!(
            "[{}] {}",
            m["from"].as_str().unwrap_or(""),
            m["text"].as_str().unwrap_or("")
        ),
        "error" => format!(
            "Error {}: {}",
            m["code"].as_str().unwrap_or(""),
            m["message"].as_str().unwrap_or("")
        ),
        "modeRequested" => match m["consent"].as_str() {
            Some("required") => format!(
                "Asked the sharer for {}; waiting for consent.",
                m["mode"].as_str().unwrap_or("")
            ),
            Some("declineWindow") => format!(
                "{} starts soon unless the sharer declines.",
                m["mode"].as_str().unwrap_or("")
            ),
            _ => format!("Mode {} granted.", m["mode"].as_str().unwrap_or("")),
        },
        "modeChanged" => format!(
            "Mode is now {} (chat {}).",
            m["mode"].as_str().unwrap_or(""),
            if m["chat"] == true { "on" } else { "off" }
        ),
        "launchPending" => "Waiting for the device to answer…".to_owned(),
        "sessionEnded" => format!(
            "Session ended ({}, by {})",
            m["reason"].as_str().unwrap_or(""),
            m["by"].as_str().unwrap_or("")
        ),
        _ => m.to_string(),
    }
}

fn profile(p: &Value) -> String {
    let mut s = p["displayName"].as_str().unwrap_or("someone").to_owned();
    for k in ["jobTitle", "companyName"] {
        if let Some(v) = p[k].as_str() {
            s.push_str(&format!(", {v}"));
        }
    }
    match p["verifiedDomain"].as_str() {
        Some(d) => s.push_str(&format!(" (verified: {d})")),
        None => s.push_str(" (domain NOT verified)"),
    }
    s
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (common, is_helper) = match &cli.role {
        RoleCmd::Helper(a) => (&a.common, true),
        RoleCmd::Sharer(a) => (&a.common, false),
    };
    let (token, mut login) = sign_in(common).await?;
    let mut client = connect(common, &token).await?;
    drop(token);
    let mut next_id = 1u64;
    let mut id = || {
        next_id += 1;
        next_id
    };
    match &cli.role {
        RoleCmd::Helper(a) => match &a.device {
            Some(d) => {
                let mut m = json!({"id": id(), "type": "requestSession", "deviceId": d});
                if let Some(mode) = &a.mode {
                    m["mode"] = json!(mode);
                }
                client.send(&m).await?
            }
            None => {
                client
                    .send(&json!({"id": id(), "type": "requestCode"}))
                    .await?
            }
        },
        RoleCmd::Sharer(a) => {
            if let Some(code) = &a.code {
                client
                    .send(&json!({"id": id(), "type": "redeemCode", "code": code}))
                    .await?;
            } else {
                println!("Waiting for a helper to launch a session on this device…");
            }
        }
    }
    let auto = matches!(&cli.role, RoleCmd::Sharer(a) if a.auto_accept);
    // What the sharer shares once active: the display, or why not.
    let screen: Result<String, &str> = match &cli.role {
        RoleCmd::Sharer(a) if a.no_screen => Err(""),
        RoleCmd::Sharer(a) => a
            .display
            .clone()
            .filter(|d| !d.is_empty())
            .ok_or("Screen not shared: no X display (set DISPLAY or pass --display)."),
        RoleCmd::Helper(_) => Err(""),
    };
    let tls = assist_client::tls::client_config(&common.ca())?;
    let mut sharing: Option<Sharing> = None;
    let mut session: Option<String> = None;
    let mut last_mode: Option<String> = None;
    let mut pending_warnings = Value::Null;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        let refresh_at = login
            .as_ref()
            .filter(|l| l.can_refresh())
            .map(|l| tokio::time::Instant::from_std(l.refresh_at()));
        tokio::select! {
            // Renew the sign-in before the token expires and hand the new token to the
            // connection (else the server closes it with 4401).
            _ = async { tokio::time::sleep_until(refresh_at.unwrap_or_else(tokio::time::Instant::now)).await }, if refresh_at.is_some() => {
                if let Some(l) = login.as_mut() {
                    match l.refresh().await {
                        Ok(()) => client.send(&json!({"type": "authenticate", "token": l.access_token()})).await?,
                        Err(e) => println!("{e:#}"),
                    }
                }
            },
            ev = client.recv() => match ev? {
                SignalEvent::Closed(code) => {
                    println!("Disconnected ({code:?}).");
                    return Ok(());
                }
                SignalEvent::Message(m) => {
                    if m["type"] == "pong" || m["type"] == "ack" {
                        continue;
                    }
                    println!("{}", describe(&m));
                    if let Some(s) = m["sessionId"].as_str() {
                        session = Some(s.to_owned());
                    }
                    if m["type"] == "warnings" {
                        pending_warnings = m["warnings"].clone();
                    }
                    if auto && (m["type"] == "consentRequested" || m["type"] == "unattendedStarting") {
                        client.send(&json!({"id": id(), "type": "consent", "sessionId": session, "allow": true})).await?;
                        println!("(auto-accepted)");
                    }
                    if auto && m["type"] == "launchRequested" {
                        client.send(&json!({"id": id(), "type": "answerLaunch", "sessionId": session, "accept": true})).await?;
                        println!("(auto-accepted)");
                    }
                    if m["type"] == "sessionActive" && !is_helper && sharing.is_none() {
                        match &screen {
                            Ok(display) => sharing = Sharing::start(&m, display, tls.clone()),
                            Err(why) if !why.is_empty() => println!("{why}"),
                            Err(_) => {}
                        }
                    }
                    // One session per run: once it has ended, both sides exit (status 0).
                    if m["type"] == "sessionEnded" {
                        if let Some(s) = sharing.take() {
                            s.stop().await;
                        }
                        println!("The session is over; exiting.");
                        return Ok(());
                    }
                }
            },
            step = share_step(&mut sharing) => match step {
                ShareStep::Event(ShareEvent::Joined) => println!("Screen: joined the relay, waiting for the helper."),
                ShareStep::Event(ShareEvent::Paired { mode }) => println!("Screen: shared with the helper ({mode})."),
                ShareStep::Event(ShareEvent::ModeChanged { mode }) => println!("Screen: the relay now allows {mode}."),
                ShareStep::Event(ShareEvent::InputUnavailable(why)) => println!("Screen: input cannot be applied here: {why}"),
                ShareStep::Event(ShareEvent::Chat(text)) => println!("[relay chat] {text}"),
                ShareStep::Event(_) => {}
                ShareStep::Done(r) => {
                    sharing = None;
                    match r {
                        Ok(r) => describe_share_end(&r),
                        Err(e) => println!("Screen sharing failed: {e}"),
                    }
                }
            },
            line = stdin.next_line(), if stdin_open => {
                let Some(line) = line? else { stdin_open = false; continue };
                let (cmd, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
                let sid = session.clone().unwrap_or_default();
                let msg = match cmd {
                    "mode" if is_helper => {
                        last_mode = Some(rest.trim().to_owned());
                        Some(json!({"id": id(), "type": "requestMode", "sessionId": sid, "mode": rest.trim(), "acknowledgeWarnings": []}))
                    }
                    "ack" if is_helper => last_mode.clone().map(|m| json!({"id": id(), "type": "requestMode", "sessionId": sid, "mode": m, "acknowledgeWarnings": pending_warnings})),
                    "allow" | "decline" if !is_helper => Some(json!({"id": id(), "type": "consent", "sessionId": sid, "allow": cmd == "allow"})),
                    "accept" if !is_helper => Some(json!({"id": id(), "type": "answerLaunch", "sessionId": sid, "accept": true})),
                    "chat" => Some(json!({"id": id(), "type": "chat", "sessionId": sid, "text": rest})),
                    "end" => Some(json!({"id": id(), "type": "endSession", "sessionId": sid})),
                    "quit" => return Ok(()),
                    "" => None,
                    other => {
                        println!("Unknown command `{other}`.");
                        None
                    }
                };
                if let Some(m) = msg {
                    client.send(&m).await?;
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("assist: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // Tokio reads stdin on a blocking thread that a normal runtime drop would wait on until the
    // next line is typed; the session is over, so do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("assist: {e:#}");
            ExitCode::FAILURE
        }
    }
}
