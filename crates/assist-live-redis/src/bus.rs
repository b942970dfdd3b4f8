//! [`Bus`]: messages between nodes over Redis pub/sub. Each node subscribes to its own channel
//! (`assist:to:<node>`) and the broadcast channel (`assist:all`); payloads are opaque bytes of
//! at most [`MAX_PAYLOAD`]. Pub/sub delivers at most once: a node that was disconnected missed
//! what was sent meanwhile, so the caller watches [`Bus::connected`] and reconciles from the
//! live state when it turns true again.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::{check_node_id, client, keys, lazy_manager, timed, Conn, LiveError, RedisOptions};

/// The largest payload sent or delivered (1 MiB); larger ones are refused when sent and
/// dropped (with a warning) when received.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The subscriber's and the publisher's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusOptions {
    /// How many received messages wait for the caller (the receiver's bound). When it is full
    /// the subscriber stops reading; Redis then disconnects it past its pub/sub output limit and
    /// the subscription restarts (reported through [`Bus::connected`]). Default 1024.
    pub queue: usize,
    /// The first pause before resubscribing after a failure; doubled up to `max_backoff`.
    /// Default 100 ms.
    pub min_backoff: Duration,
    /// The longest pause between two subscription attempts. Default 2 s.
    pub max_backoff: Duration,
    /// How often the subscription is checked with a PING. Default 2 s.
    pub ping_every: Duration,
    /// The publisher's timeouts and reconnection (see [`RedisOptions`]); also bounds each
    /// subscription attempt and PING.
    pub redis: RedisOptions,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            queue: 1024,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ping_every: Duration::from_secs(2),
            redis: RedisOptions::default(),
        }
    }
}

struct Inner {
    publisher: Conn,
    node: String,
    connected: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The message bus of one node. Cheap to clone; the subscriber stops when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("node", &self.inner.node)
            .field("connected", &*self.inner.connected.borrow())
            .finish_non_exhaustive()
    }
}

/// Adds the `PUBLISH` of `payload` to node `to` (`None`: to every node) to `pipe`; `false`,
/// and nothing added, for a bad node id or a payload over [`MAX_PAYLOAD`].
pub(crate) fn add_publish(pipe: &mut redis::Pipeline, to: Option<&str>, payload: &[u8]) -> bool {
    let channel = match to {
        Some(node) => check_node_id(node).ok().map(|()| keys::to_node(node)),
        None => Some(keys::BROADCAST.to_owned()),
    };
    match channel {
        Some(channel) if payload.len() <= MAX_PAYLOAD => {
            pipe.cmd("PUBLISH").arg(channel).arg(payload);
            true
        }
        _ => false,
    }
}

impl Bus {
    /// Starts the bus of node `node_id` with [`BusOptions::default`]: see [`Bus::start_with`].
    pub fn start(url: &str, node_id: &str) -> Result<(Bus, mpsc::Receiver<Vec<u8>>), LiveError> {
        Self::start_with(url, node_id, BusOptions::default())
    }

    /// Starts the bus of node `node_id` on the current tokio runtime (it spawns the subscriber
    /// task, so it panics outside one, like `tokio::spawn`): returns it and the receiver of the
    /// messages sent to this node and broadcast (its own broadcasts included: the caller drops
    /// them). Fails only on a bad URL or node id; with Redis down it keeps trying to subscribe
    /// (bounded backoff) and [`Bus::connected`] stays false.
    pub fn start_with(
        url: &str,
        node_id: &str,
        opts: BusOptions,
    ) -> Result<(Bus, mpsc::Receiver<Vec<u8>>), LiveError> {
        check_node_id(node_id)?;
        let sub_client = client(url)?;
        let publisher = lazy_manager(url, &opts.redis)?;
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let (state, connected) = watch::channel(false);
        let channels = vec![keys::to_node(node_id), keys::BROADCAST.to_owned()];
        let task = tokio::spawn(subscriber(sub_client, channels, tx, state, opts));
        let inner = Inner {
            publisher,
            node: node_id.to_owned(),
            connected,
            task,
        };
        Ok((
            Bus {
                inner: Arc::new(inner),
            },
            rx,
        ))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node
    }

    /// Whether the subscription is up now; changes as it is lost and restored.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.inner.connected.clone()
    }

    /// Sends `payload` to node `to_node`. Returns how many subscribers Redis delivered it to
    /// (0: that node is not subscribed now).
    pub async fn publish(&self, to_node: &str, payload: Vec<u8>) -> Result<usize, LiveError> {
        check_node_id(to_node)?;
        self.send(keys::to_node(to_node), payload).await
    }

    /// Sends `payload` to every node, this one included.
    pub async fn broadcast(&self, payload: Vec<u8>) -> Result<usize, LiveError> {
        self.send(keys::BROADCAST.to_owned(), payload).await
    }

    /// Sends each `(node, payload)` of `batch` in order (`None`: to every node) in one round
    /// trip: a pipeline of PUBLISH commands on the publisher's connection, so the order of the
    /// batch is the order Redis delivers in. Returns, for each, how many subscribers took it, or
    /// `None` if it was refused and not sent (a bad node id, a payload over [`MAX_PAYLOAD`]);
    /// the others are sent all the same. A failed round trip fails the batch (some may have
    /// been delivered, as with [`Bus::publish`]).
    pub async fn send_all(
        &self,
        batch: &[(Option<&str>, &[u8])],
    ) -> Result<Vec<Option<usize>>, LiveError> {
        let mut pipe = redis::pipe();
        let mut sent = Vec::with_capacity(batch.len());
        for (to, payload) in batch {
            sent.push(add_publish(&mut pipe, *to, payload));
        }
        let mut counts: Vec<usize> = if sent.contains(&true) {
            self.inner.publisher.pipe("publish", &pipe).await?
        } else {
            Vec::new()
        };
        counts.reverse();
        Ok(sent
            .into_iter()
            .map(|s| if s { counts.pop() } else { None })
            .collect())
    }

    async fn send(&self, channel: String, payload: Vec<u8>) -> Result<usize, LiveError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(LiveError(format!(
                "bus payload of {} bytes is over {MAX_PAYLOAD}",
                payload.len()
            )));
        }
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.inner.publisher.cmd("publish", &cmd).await
    }
}

/// Subscribes, delivers, and starts over after a failure, until the receiver is dropped.
async fn subscriber(
    client: redis::Client,
    channels: Vec<String>,
    tx: mpsc::Sender<Vec<u8>>,
    state: watch::Sender<bool>,
    opts: BusOptions,
) {
    let bound = opts.redis.op_timeout;
    let mut backoff = opts.min_backoff;
    loop {
        let subscribed = timed(bound, "subscribe", async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channels).await?;
            Ok(pubsub)
        })
        .await;
        match subscribed {
            Ok(pubsub) => {
                backoff = opts.min_backoff;
                let (mut sink, mut stream) = pubsub.split();
                state.send_replace(true);
                tracing::info!(channels = ?channels, "bus: subscribed");
                let mut ping = tokio::time::interval(opts.ping_every);
                ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ping.tick().await;
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            let payload = msg.get_payload_bytes();
                            if payload.len() > MAX_PAYLOAD {
                                tracing::warn!(
                                    channel = msg.get_channel_name(),
                                    bytes = payload.len(),
                                    "bus: oversized message dropped"
                                );
                                continue;
                            }
                            if tx.send(payload.to_vec()).await.is_err() {
                                return;
                            }
                        }
                        _ = ping.tick() => {
                            let pong = timed(bound, "ping", sink.ping::<redis::Value>()).await;
                            if let Err(e) = pong {
                                tracing::warn!(error = %e, "bus: subscription does not answer");
                                break;
                            }
                        }
                        _ = tx.closed() => return,
                    }
                }
                state.send_replace(false);
                tracing::warn!("bus: subscription lost; resubscribing");
            }
            Err(e) => tracing::debug!(error = %e, "bus: cannot subscribe"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(opts.max_backoff);
    }
}
