//! A deterministic model of the live-state store (BTreeMaps), answering queries at once, with
//! the semantics `assist-live`'s contract suite checks of every real store.

use std::collections::{BTreeMap, BTreeSet};

use assist_session::code::CodeDigest;
use assist_session::{
    ConnId, DeviceRef, LiveAnswer, LiveCode, LiveOp, LiveQuery, LiveSession, SessionId, UserRef,
};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LiveModel {
    pub codes: BTreeMap<CodeDigest, LiveCode>,
    pub users: BTreeMap<UserRef, BTreeSet<ConnId>>,
    pub devices: BTreeMap<DeviceRef, BTreeSet<ConnId>>,
    pub sessions: BTreeMap<SessionId, LiveSession>,
}

impl LiveModel {
    pub fn apply(&mut self, op: LiveOp) {
        match op {
            LiveOp::AddConnection { conn, user, device } => {
                if let Some(u) = user {
                    self.users.entry(u).or_default().insert(conn);
                }
                if let Some(d) = device {
                    self.devices.entry(d).or_default().insert(conn);
                }
            }
            LiveOp::RemoveConnection { conn, user, device } => {
                if let Some(u) = user {
                    remove(&mut self.users, &u, conn);
                }
                if let Some(d) = device {
                    remove(&mut self.devices, &d, conn);
                }
            }
            LiveOp::PutSession { id, session } => {
                self.sessions.insert(id, session);
            }
            LiveOp::RemoveSession { id } => {
                self.sessions.remove(&id);
            }
            LiveOp::ReplaceCode { digest, code } => {
                self.codes.insert(digest, code);
            }
            LiveOp::RemoveCodeIf { digest, expected } => {
                if self.codes.get(&digest) == Some(&expected) {
                    self.codes.remove(&digest);
                }
            }
        }
    }

    pub fn query(&mut self, query: LiveQuery) -> LiveAnswer {
        match query {
            LiveQuery::InsertCode { digest, code } => match self.codes.entry(digest) {
                std::collections::btree_map::Entry::Occupied(_) => LiveAnswer::Inserted(false),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(code);
                    LiveAnswer::Inserted(true)
                }
            },
            LiveQuery::GetCode { digest } => LiveAnswer::Code(
                self.codes
                    .get_key_value(&digest)
                    .map(|(k, v)| (k.clone(), v.clone())),
            ),
            LiveQuery::TakeCodeIf { digest, expected } => {
                if self.codes.get(&digest) == Some(&expected) {
                    LiveAnswer::Taken(self.codes.remove(&digest))
                } else {
                    LiveAnswer::Taken(None)
                }
            }
        }
    }

    pub fn code_count(&self) -> usize {
        self.codes.len()
    }

    pub fn session(&self, id: &SessionId) -> Option<LiveSession> {
        self.sessions.get(id).cloned()
    }

    pub fn tenant_sessions(&self, tenant: &str) -> Vec<(SessionId, LiveSession)> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.tenant_id == tenant)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn user_connections(&self, user: &UserRef) -> Vec<ConnId> {
        self.users
            .get(user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn device_connections(&self, tenant: &str, device: &str) -> Vec<ConnId> {
        let key = DeviceRef {
            tenant_id: tenant.into(),
            device_id: device.into(),
        };
        self.devices
            .get(&key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Pending codes by the session they open.
    pub fn pending_sessions(&self) -> BTreeSet<SessionId> {
        self.codes
            .values()
            .filter_map(|c| match c {
                LiveCode::Pending(sid) => Some(sid.clone()),
                LiveCode::Expired { .. } => None,
            })
            .collect()
    }
}

fn remove<K: Ord>(map: &mut BTreeMap<K, BTreeSet<ConnId>>, key: &K, conn: ConnId) {
    if let Some(set) = map.get_mut(key) {
        set.remove(&conn);
        if set.is_empty() {
            map.remove(key);
        }
    }
}
