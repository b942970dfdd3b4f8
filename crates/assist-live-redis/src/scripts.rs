//! The Lua scripts: each runs atomically in Redis. Called one at a time with EVALSHA (and
//! SCRIPT LOAD then EVALSHA again when Redis does not know it: after a restart), and in
//! pipelines ([`crate::RedisLive::reassert`]) with EVAL.
//!
//! The session scripts derive index keys from the entry they read (its `t` tenant and `n` node,
//! through `cjson`), so they assume one Redis (or a primary with replicas), not Redis Cluster.

use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::{Pipeline, Script};

/// A script and its source (for EVAL in pipelines).
pub(crate) struct Lua {
    src: &'static str,
    script: Script,
}

impl Lua {
    fn new(src: &'static str) -> Self {
        Lua {
            src,
            script: Script::new(src),
        }
    }
}

/// One call of a script with its keys and arguments.
pub(crate) struct Call {
    lua: &'static Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call {
    pub(crate) fn new(lua: &'static LazyLock<Lua>) -> Self {
        Call {
            lua,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub(crate) fn key(mut self, k: impl Into<Vec<u8>>) -> Self {
        self.keys.push(k.into());
        self
    }

    pub(crate) fn arg(mut self, a: impl Into<Vec<u8>>) -> Self {
        self.args.push(a.into());
        self
    }

    /// EVALSHA, loading the script first if Redis does not have it.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
    ) -> redis::RedisResult<T> {
        let mut inv = self.lua.script.prepare_invoke();
        for k in &self.keys {
            inv.key(k.as_slice());
        }
        for a in &self.args {
            inv.arg(a.as_slice());
        }
        inv.invoke_async(conn).await
    }

    /// Adds the call to a pipeline as EVAL (no script cache needed).
    pub(crate) fn add_to(&self, pipe: &mut Pipeline) {
        pipe.cmd("EVAL")
            .arg(self.lua.src)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
    }
}

/// Compare-and-delete. KEYS[1]: the key; ARGV[1]: the expected value. Returns 1 if deleted.
pub(crate) static DELETE_IF: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// Puts a session entry and keeps the indexes exact. KEYS: the sessions hash, the new tenant
/// index, the new node index; ARGV: session id, encoded entry, tenant index prefix, node index
/// prefix.
pub(crate) static PUT_SESSION: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ok, e = pcall(cjson.decode, old)
  if ok and type(e) == 'table' then
    if type(e.t) == 'string' and ARGV[3] .. e.t ~= KEYS[2] then
      redis.call('ZREM', ARGV[3] .. e.t, ARGV[1])
    end
    if type(e.n) == 'string' and ARGV[4] .. e.n ~= KEYS[3] then
      redis.call('SREM', ARGV[4] .. e.n, ARGV[1])
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"#,
    )
});

/// Removes a session entry and its index members. KEYS: the sessions hash; ARGV: session id,
/// tenant index prefix, node index prefix. Returns 1 if there was an entry.
pub(crate) static REMOVE_SESSION: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local ok, e = pcall(cjson.decode, old)
if ok and type(e) == 'table' then
  if type(e.t) == 'string' then redis.call('ZREM', ARGV[2] .. e.t, ARGV[1]) end
  if type(e.n) == 'string' then redis.call('SREM', ARGV[3] .. e.n, ARGV[1]) end
end
return 1
"#,
    )
});

/// Forgets a node: every presence member in its presence index, and every directory entry in
/// its session index that it still owns. KEYS: the sessions hash, the node's session index, the
/// node's presence index; ARGV: node id, tenant index prefix. Returns the session ids removed.
pub(crate) static FORGET_NODE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
for _, e in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local i = string.find(e, '\n', 1, true)
  if i then redis.call('SREM', string.sub(e, i + 1), string.sub(e, 1, i - 1)) end
end
redis.call('DEL', KEYS[3])
local out = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local v = redis.call('HGET', KEYS[1], sid)
  if v then
    local ok, e = pcall(cjson.decode, v)
    if ok and type(e) == 'table' and e.n == ARGV[1] then
      redis.call('HDEL', KEYS[1], sid)
      if type(e.t) == 'string' then redis.call('ZREM', ARGV[2] .. e.t, sid) end
      table.insert(out, sid)
    end
  end
end
redis.call('DEL', KEYS[2])
return out
"#,
    )
});

/// A code and, when it is pending, its session's directory entry, in one round trip. KEYS: the
/// code, the sessions hash. Returns `{code}` or `{code, entry}`, or an empty array when there
/// is no code.
pub(crate) static CODE_OWNER: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local code = redis.call('GET', KEYS[1])
if not code then
  return {}
end
local ok, c = pcall(cjson.decode, code)
if ok and type(c) == 'table' and type(c.p) == 'string' then
  local entry = redis.call('HGET', KEYS[2], c.p)
  if entry then
    return {code, entry}
  end
end
return {code}
"#,
    )
});
