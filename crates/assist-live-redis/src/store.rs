//! [`RedisLive`]: the [`LiveStore`] on Redis.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use assist_live::{LiveError, LiveFuture, LiveStore};
use assist_session::code::CodeDigest;
use assist_session::{
    ConnId, DeviceRef, LiveAnswer, LiveCode, LiveOp, LiveQuery, LiveSession, SessionId, UserRef,
};
use redis::Pipeline;

use crate::batch::{got_code, inserted};
use crate::codec::{decode_code, decode_entry, encode_code, encode_entry, member, split_member};
use crate::scripts::{Call, CODE_OWNER, DELETE_IF, FORGET_NODE, PUT_SESSION, REMOVE_SESSION};
use crate::{check_node_id, connect_manager, keys, Conn, RedisOptions, Registry};

/// The longest TTL a code gets (a day): a `forget_at` further away is clamped (Redis refuses
/// expiry times past its range).
const MAX_CODE_TTL_MS: u64 = 24 * 3600 * 1000;

/// How many ops [`RedisLive::reassert`] sends in one pipeline.
const REASSERT_CHUNK: usize = 500;

/// The live state of a cluster in Redis, as one node sees it: codes and the session directory
/// are shared; presence members are qualified by node (`"<node>/<conn>"`), and the
/// [`LiveStore`] reads of connections return this node's. Cheap to clone (one multiplexed
/// connection, reconnected with bounded backoff).
#[derive(Clone)]
pub struct RedisLive {
    pub(crate) conn: Conn,
    node: Arc<str>,
    opts: Arc<RedisOptions>,
}

impl fmt::Debug for RedisLive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLive")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// What one op does, as plain commands or one script call.
pub(crate) enum Step {
    Plain(Pipeline),
    Script(Call),
}

impl RedisLive {
    /// Connects to `url` (`redis://[:password@]host:port/db`) as node `node_id` (see
    /// [`check_node_id`]), within [`RedisOptions::op_timeout`].
    pub async fn connect(
        url: &str,
        node_id: &str,
        opts: RedisOptions,
    ) -> Result<RedisLive, LiveError> {
        check_node_id(node_id)?;
        let conn = connect_manager(url, &opts).await?;
        Ok(RedisLive {
            conn,
            node: node_id.into(),
            opts: Arc::new(opts),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// The node registry on the same connection.
    pub fn registry(&self) -> Registry {
        Registry::new(self.conn.clone(), &self.node)
    }

    pub(crate) fn code_ttl_ms(&self, code: &LiveCode) -> u64 {
        match code {
            LiveCode::Pending(_) => ms(self.opts.pending_code_ttl),
            LiveCode::Expired { forget_at } => forget_at
                .as_millis()
                .saturating_sub(wall_ms())
                .clamp(ms(self.opts.min_code_ttl), MAX_CODE_TTL_MS),
        }
    }

    fn presence_keys(user: &Option<UserRef>, device: &Option<DeviceRef>) -> Vec<String> {
        let mut out = Vec::with_capacity(2);
        if let Some(d) = device {
            out.push(keys::device(d));
        }
        if let Some(u) = user {
            out.push(keys::user(u));
        }
        out
    }

    pub(crate) fn step(&self, op: &LiveOp) -> Step {
        match op {
            LiveOp::AddConnection { conn, user, device } => {
                let m = member(&self.node, *conn);
                let index = keys::node_presence(&self.node);
                let mut p = redis::pipe();
                p.atomic();
                for key in Self::presence_keys(user, device) {
                    p.sadd(&key, &m).ignore();
                    p.sadd(&index, format!("{m}\n{key}")).ignore();
                }
                Step::Plain(p)
            }
            LiveOp::RemoveConnection { conn, user, device } => {
                let m = member(&self.node, *conn);
                let index = keys::node_presence(&self.node);
                let mut p = redis::pipe();
                p.atomic();
                for key in Self::presence_keys(user, device) {
                    p.srem(&key, &m).ignore();
                    p.srem(&index, format!("{m}\n{key}")).ignore();
                }
                Step::Plain(p)
            }
            LiveOp::PutSession { id, session } => Step::Script(
                Call::new(&PUT_SESSION)
                    .key(keys::SESSIONS)
                    .key(keys::tenant_sessions(&session.tenant_id))
                    .key(keys::node_sessions(&self.node))
                    .arg(id.0.as_str())
                    .arg(encode_entry(&self.node, session))
                    .arg(keys::TENANT_SESSIONS)
                    .arg(keys::NODE_SESSIONS),
            ),
            LiveOp::RemoveSession { id } => Step::Script(
                Call::new(&REMOVE_SESSION)
                    .key(keys::SESSIONS)
                    .arg(id.0.as_str())
                    .arg(keys::TENANT_SESSIONS)
                    .arg(keys::NODE_SESSIONS),
            ),
            LiveOp::ReplaceCode { digest, code } => {
                let mut p = redis::pipe();
                p.cmd("SET")
                    .arg(keys::code(digest))
                    .arg(encode_code(code))
                    .arg("PX")
                    .arg(self.code_ttl_ms(code))
                    .ignore();
                Step::Plain(p)
            }
            LiveOp::RemoveCodeIf { digest, expected } => Step::Script(
                Call::new(&DELETE_IF)
                    .key(keys::code(digest))
                    .arg(encode_code(expected)),
            ),
        }
    }

    async fn apply_op(&self, op: LiveOp) -> Result<(), LiveError> {
        match self.step(&op) {
            Step::Plain(p) => self.conn.exec("write", &p).await,
            Step::Script(call) => {
                self.conn.script::<redis::Value>("write", &call).await?;
                Ok(())
            }
        }
    }

    async fn query_op(&self, query: LiveQuery) -> Result<LiveAnswer, LiveError> {
        match query {
            LiveQuery::InsertCode { digest, code } => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(keys::code(&digest))
                    .arg(encode_code(&code))
                    .arg("NX")
                    .arg("PX")
                    .arg(self.code_ttl_ms(&code));
                Ok(inserted(self.conn.cmd("insert code", &cmd).await?))
            }
            LiveQuery::GetCode { digest } => {
                let mut cmd = redis::cmd("GET");
                cmd.arg(keys::code(&digest));
                got_code(&digest, self.conn.cmd("get code", &cmd).await?)
            }
            LiveQuery::TakeCodeIf { digest, expected } => {
                let call = Call::new(&DELETE_IF)
                    .key(keys::code(&digest))
                    .arg(encode_code(&expected));
                let deleted: i64 = self.conn.script("take code", &call).await?;
                Ok(LiveAnswer::Taken((deleted == 1).then_some(expected)))
            }
        }
    }

    async fn entry(&self, id: &SessionId) -> Result<Option<(String, LiveSession)>, LiveError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(keys::SESSIONS).arg(id.0.as_str());
        let got: Option<Vec<u8>> = self.conn.cmd("get session", &cmd).await?;
        got.map(|b| decode_entry(&b)).transpose()
    }

    async fn members(&self, key: String) -> Result<Vec<String>, LiveError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(key);
        self.conn.cmd("presence", &cmd).await
    }

    /// This node's connections in a presence set, ascending.
    async fn own_connections(&self, key: String) -> Result<Vec<ConnId>, LiveError> {
        let mut out = Vec::new();
        for m in self.members(key).await? {
            match split_member(&m) {
                Some((node, conn)) if node == &*self.node => out.push(conn),
                Some(_) => {}
                None => {
                    return Err(LiveError(format!(
                        "a presence member does not decode: {m:?}"
                    )))
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The nodes in a presence set, sorted and deduplicated.
    async fn nodes_in(&self, key: String) -> Result<Vec<String>, LiveError> {
        let mut out: Vec<String> = self
            .members(key)
            .await?
            .iter()
            .filter_map(|m| split_member(m).map(|(node, _)| node.to_owned()))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// A code (by digest) and, when it is pending and its session is listed, the node that
    /// owns that session, in one round trip (how a node finds where a redeemed code's session
    /// lives). `None`: no such code.
    pub async fn code_and_owner(
        &self,
        digest: &CodeDigest,
    ) -> Result<Option<(LiveCode, Option<String>)>, LiveError> {
        let call = Call::new(&CODE_OWNER)
            .key(keys::code(digest))
            .key(keys::SESSIONS);
        let got: Vec<Vec<u8>> = self.conn.script("code owner", &call).await?;
        let mut got = got.into_iter();
        let Some(code) = got.next() else {
            return Ok(None);
        };
        let code = decode_code(&code)?;
        let owner = got.next().map(|e| decode_entry(&e)).transpose()?;
        Ok(Some((code, owner.map(|(node, _)| node))))
    }

    /// The node that wrote a session's directory entry (its owner), if it is listed.
    pub async fn session_owner(&self, id: &SessionId) -> Result<Option<String>, LiveError> {
        Ok(self.entry(id).await?.map(|(node, _)| node))
    }

    /// Which of `ids` the session directory lists, in order, in one round trip (a pipeline of
    /// `HEXISTS`; the stale-session sweep asks for up to a thousand at once).
    pub async fn sessions_listed(&self, ids: &[SessionId]) -> Result<Vec<bool>, LiveError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HEXISTS").arg(keys::SESSIONS).arg(id.0.as_str());
        }
        self.conn.pipe("sessions listed", &pipe).await
    }

    /// The nodes where a device has connections, sorted and deduplicated.
    pub async fn device_nodes(&self, device: &DeviceRef) -> Result<Vec<String>, LiveError> {
        self.nodes_in(keys::device(device)).await
    }

    /// The nodes where a user has connections, sorted and deduplicated.
    pub async fn user_nodes(&self, user: &UserRef) -> Result<Vec<String>, LiveError> {
        self.nodes_in(keys::user(user)).await
    }

    /// Forgets node `node_id` (a dead one, once its heartbeat expired): removes every presence
    /// member it added and every directory entry it still owns, atomically, and returns those
    /// sessions' ids (ascending) for the caller to close their records.
    pub async fn forget_node(&self, node_id: &str) -> Result<Vec<SessionId>, LiveError> {
        check_node_id(node_id)?;
        let call = Call::new(&FORGET_NODE)
            .key(keys::SESSIONS)
            .key(keys::node_sessions(node_id))
            .key(keys::node_presence(node_id))
            .arg(node_id)
            .arg(keys::TENANT_SESSIONS);
        let ids: Vec<String> = self.conn.script("forget node", &call).await?;
        let mut ids: Vec<SessionId> = ids.into_iter().map(SessionId).collect();
        ids.sort();
        Ok(ids)
    }

    /// Applies a batch of ops in order, pipelined ([`REASSERT_CHUNK`] per round trip, each
    /// within [`RedisOptions::op_timeout`]): how a node re-writes its presence, sessions and
    /// codes after Redis came back empty. On an error, the ops of earlier chunks are applied.
    pub async fn reassert(&self, ops: Vec<LiveOp>) -> Result<(), LiveError> {
        for chunk in ops.chunks(REASSERT_CHUNK) {
            let mut pipe = redis::pipe();
            for op in chunk {
                match self.step(op) {
                    Step::Plain(p) => {
                        // The op's own commands, without its MULTI (the batch is not atomic).
                        for cmd in p.cmd_iter() {
                            pipe.add_command(cmd.clone()).ignore();
                        }
                    }
                    Step::Script(call) => {
                        call.add_to(&mut pipe);
                        pipe.ignore();
                    }
                }
            }
            self.conn.exec("reassert", &pipe).await?;
        }
        Ok(())
    }

    async fn tenant_sessions_of(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<(SessionId, LiveSession)>, LiveError> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(keys::tenant_sessions(tenant_id)).arg(0).arg(-1);
        let ids: Vec<String> = self.conn.cmd("tenant sessions", &cmd).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(keys::SESSIONS).arg(&ids);
        let values: Vec<Option<Vec<u8>>> = self.conn.cmd("tenant sessions", &cmd).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, value) in ids.into_iter().zip(values) {
            // An index member whose entry is gone (a race with a removal) is skipped.
            if let Some(bytes) = value {
                let (_, session) = decode_entry(&bytes)?;
                if session.tenant_id == tenant_id {
                    out.push((SessionId(id), session));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn count_codes(&self) -> Result<usize, LiveError> {
        // SCAN the code keys (diagnostics and tests: it walks the key space).
        let mut cursor: u64 = 0;
        let mut n = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(keys::CODE_PATTERN)
                .arg("COUNT")
                .arg(1000);
            let (next, found): (u64, Vec<String>) = self.conn.cmd("count codes", &cmd).await?;
            n += found.len();
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }

    async fn count_sessions(&self) -> Result<usize, LiveError> {
        let mut cmd = redis::cmd("HLEN");
        cmd.arg(keys::SESSIONS);
        self.conn.cmd("count sessions", &cmd).await
    }
}

impl LiveStore for RedisLive {
    fn apply(&self, op: LiveOp) -> LiveFuture<'_, ()> {
        Box::pin(self.apply_op(op))
    }

    fn query(&self, query: LiveQuery) -> LiveFuture<'_, LiveAnswer> {
        Box::pin(self.query_op(query))
    }

    fn session<'a>(&'a self, id: &'a SessionId) -> LiveFuture<'a, Option<LiveSession>> {
        Box::pin(async move { Ok(self.entry(id).await?.map(|(_, s)| s)) })
    }

    fn tenant_sessions<'a>(
        &'a self,
        tenant_id: &'a str,
    ) -> LiveFuture<'a, Vec<(SessionId, LiveSession)>> {
        Box::pin(self.tenant_sessions_of(tenant_id))
    }

    fn session_count(&self) -> LiveFuture<'_, usize> {
        Box::pin(self.count_sessions())
    }

    fn code_count(&self) -> LiveFuture<'_, usize> {
        Box::pin(self.count_codes())
    }

    fn device_connections<'a>(&'a self, device: &'a DeviceRef) -> LiveFuture<'a, Vec<ConnId>> {
        Box::pin(self.own_connections(keys::device(device)))
    }

    fn user_connections<'a>(&'a self, user: &'a UserRef) -> LiveFuture<'a, Vec<ConnId>> {
        Box::pin(self.own_connections(keys::user(user)))
    }
}
