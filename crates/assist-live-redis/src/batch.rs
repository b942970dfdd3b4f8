//! [`RedisLive::run_batch`]: live-state writes, queries and bus messages in one pipeline, in
//! order. Redis runs a connection's commands in the order they arrive, so a query in a batch
//! sees every write before it, and a node hearing a message sent after a write finds the write
//! done.

use assist_session::{LiveAnswer, LiveOp, LiveQuery};
use redis::Value;

use crate::codec::{decode_code, encode_code};
use crate::scripts::{Call, DELETE_IF};
use crate::store::Step;
use crate::{keys, redis_error, LiveError, RedisLive};

/// One entry of a batch.
#[derive(Debug, Clone, Copy)]
pub enum BatchItem<'a> {
    /// A live-state write ([`assist_live::LiveStore::apply`]).
    Op(&'a LiveOp),
    /// A live-state query ([`assist_live::LiveStore::query`]).
    Query(&'a LiveQuery),
    /// A bus message to node `to` (`None`: to every node), as [`crate::Bus::send_all`] sends
    /// it.
    Publish {
        /// The node, or `None` for the broadcast channel.
        to: Option<&'a str>,
        /// At most [`crate::MAX_PAYLOAD`] bytes.
        payload: &'a [u8],
    },
}

/// What became of one [`BatchItem`] in a batch Redis answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchReply {
    /// The write was applied.
    Applied,
    /// The query's answer.
    Answer(LiveAnswer),
    /// How many subscribers took the message (`None`: not sent: a bad node id or an oversized
    /// payload).
    Published(Option<usize>),
}

/// Decodes `SET … NX`'s reply.
pub(crate) fn inserted(v: Option<String>) -> LiveAnswer {
    LiveAnswer::Inserted(v.is_some())
}

/// Decodes a code's `GET`.
pub(crate) fn got_code(
    digest: &assist_session::code::CodeDigest,
    v: Option<Vec<u8>>,
) -> Result<LiveAnswer, LiveError> {
    match v {
        None => Ok(LiveAnswer::Code(None)),
        Some(bytes) => Ok(LiveAnswer::Code(Some((
            digest.clone(),
            decode_code(&bytes)?,
        )))),
    }
}

fn from_value<T: redis::FromRedisValue>(what: &str, v: Value) -> Result<T, LiveError> {
    match v {
        Value::ServerError(e) => Err(redis_error(what, e.into())),
        v => redis::from_redis_value(v).map_err(|e| redis_error(what, e.into())),
    }
}

impl RedisLive {
    /// The commands of a query, in a pipeline.
    fn add_query(&self, q: &LiveQuery, pipe: &mut redis::Pipeline) {
        match q {
            LiveQuery::InsertCode { digest, code } => {
                pipe.cmd("SET")
                    .arg(keys::code(digest))
                    .arg(encode_code(code))
                    .arg("NX")
                    .arg("PX")
                    .arg(self.code_ttl_ms(code));
            }
            LiveQuery::GetCode { digest } => {
                pipe.cmd("GET").arg(keys::code(digest));
            }
            LiveQuery::TakeCodeIf { digest, expected } => {
                // EVAL: a pipeline cannot load a script it finds missing.
                Call::new(&DELETE_IF)
                    .key(keys::code(digest))
                    .arg(encode_code(expected))
                    .add_to(pipe);
            }
        }
    }

    fn answer(q: &LiveQuery, v: Value) -> Result<LiveAnswer, LiveError> {
        match q {
            LiveQuery::InsertCode { .. } => Ok(inserted(from_value("insert code", v)?)),
            LiveQuery::GetCode { digest } => got_code(digest, from_value("get code", v)?),
            LiveQuery::TakeCodeIf { expected, .. } => {
                let deleted: i64 = from_value("take code", v)?;
                Ok(LiveAnswer::Taken((deleted == 1).then(|| expected.clone())))
            }
        }
    }

    /// Carries out `items` in order, in one pipeline (one round trip, within
    /// [`crate::RedisOptions::op_timeout`]); scripts go as EVAL. The outer error: Redis did
    /// not answer (nothing is known to have happened). Otherwise one result per item: an item
    /// Redis refused (a wrong type, a script error) is an error of its own, and the items after
    /// it still ran. A write of several commands is not atomic here (each op's commands run
    /// in order, other clients' commands may run between them), as in
    /// [`RedisLive::reassert`].
    pub async fn run_batch(
        &self,
        items: &[BatchItem<'_>],
    ) -> Result<Vec<Result<BatchReply, LiveError>>, LiveError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        // How many commands each item added.
        let mut counts = Vec::with_capacity(items.len());
        for item in items {
            let before = pipe.len();
            match item {
                BatchItem::Op(op) => match self.step(op) {
                    Step::Plain(p) => {
                        for cmd in p.cmd_iter() {
                            pipe.add_command(cmd.clone());
                        }
                    }
                    Step::Script(call) => call.add_to(&mut pipe),
                },
                BatchItem::Query(q) => self.add_query(q, &mut pipe),
                BatchItem::Publish { to, payload } => {
                    // Refused ones add nothing: their reply is `Published(None)`.
                    crate::bus::add_publish(&mut pipe, *to, payload);
                }
            }
            counts.push(pipe.len() - before);
        }
        let values: Vec<Value> = if pipe.is_empty() {
            Vec::new()
        } else {
            self.conn.pipe("batch", &pipe).await?
        };
        if values.len() != pipe.len() {
            return Err(LiveError(format!(
                "redis batch: {} replies to {} commands",
                values.len(),
                pipe.len()
            )));
        }
        let mut values = values.into_iter();
        let mut out = Vec::with_capacity(items.len());
        for (item, n) in items.iter().zip(counts) {
            let mine: Vec<Value> = values.by_ref().take(n).collect();
            out.push(match item {
                BatchItem::Op(_) => mine
                    .into_iter()
                    .find_map(|v| match v {
                        Value::ServerError(e) => Some(Err(redis_error("write", e.into()))),
                        _ => None,
                    })
                    .unwrap_or(Ok(BatchReply::Applied)),
                BatchItem::Query(q) => match mine.into_iter().next() {
                    Some(v) => Self::answer(q, v).map(BatchReply::Answer),
                    None => Err(LiveError("redis batch: a query had no reply".into())),
                },
                BatchItem::Publish { .. } => match mine.into_iter().next() {
                    None => Ok(BatchReply::Published(None)),
                    Some(v) => {
                        from_value::<usize>("publish", v).map(|n| BatchReply::Published(Some(n)))
                    }
                },
            });
        }
        Ok(out)
    }
}
