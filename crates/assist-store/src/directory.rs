//! Directory and RBAC objects, stored as their Graph JSON bodies per tenant and kind, and group
//! membership. Every write takes the audit event that records it and stores both in one
//! transaction.

use crate::{audit, AuditEvent, Store, StoreError};
use serde_json::Value;
use sqlx::Row;

/// What kind of object a member of a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// A user.
    User,
    /// A managed device.
    Device,
}

impl MemberKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Device => "managedDevice",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "user" => Ok(Self::User),
            "managedDevice" => Ok(Self::Device),
            other => Err(StoreError::Corrupt(format!("member kind '{other}'"))),
        }
    }
}

fn decode(body: &str) -> Result<Value, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("object body: {e}")))
}

/// A query ready to run on the store's database.
pub(crate) type Write<'q> =
    sqlx::query::Query<'q, sqlx::Sqlite, <sqlx::Sqlite as sqlx::Database>::Arguments>;

impl Store {
    /// Runs one write and, only if it changed a row, appends `audit`, in one transaction.
    /// Returns whether a row changed (a write that changed nothing leaves no audit event).
    pub(crate) async fn audited_write(
        &self,
        tenant_id: &str,
        write: Write<'_>,
        audit: Option<&AuditEvent>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if write.execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(a) = audit {
            audit::insert(&mut tx, tenant_id, a).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// [`Store::audited_write`] of a directory change: also moves the directory generation on.
    async fn directory_write(
        &self,
        tenant_id: &str,
        write: Write<'_>,
        audit: Option<&AuditEvent>,
    ) -> Result<bool, StoreError> {
        let changed = self.audited_write(tenant_id, write, audit).await?;
        if changed {
            self.directory_changed();
        }
        Ok(changed)
    }

    /// Every object of `kind` in the tenant, in creation order.
    pub async fn list_objects(
        &self,
        tenant_id: &str,
        kind: &str,
    ) -> Result<Vec<Value>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM directory_objects WHERE tenant_id = $1 AND kind = $2 ORDER BY seq",
        )
        .bind(tenant_id)
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| decode(&r.try_get::<String, _>(0)?))
            .collect()
    }

    /// Up to `limit` objects of `kind` across every tenant, with their tenant ids, in creation
    /// order (the dev issuer's sign-in page lists the directory's users with it).
    pub async fn list_objects_all_tenants(
        &self,
        kind: &str,
        limit: u32,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, body FROM directory_objects WHERE kind = $1 ORDER BY seq LIMIT $2",
        )
        .bind(kind)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0)?,
                    decode(&r.try_get::<String, _>(1)?)?,
                ))
            })
            .collect()
    }

    /// One object, if it exists.
    pub async fn get_object(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<Value>, StoreError> {
        let row = sqlx::query(
            "SELECT body FROM directory_objects WHERE tenant_id = $1 AND kind = $2 AND id = $3",
        )
        .bind(tenant_id)
        .bind(kind)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
    }

    /// Inserts a new object (its `id` must be unused) with its audit event. Returns false, and
    /// writes nothing, if the id is taken.
    pub async fn insert_object(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
        body: &Value,
        audit: Option<&AuditEvent>,
    ) -> Result<bool, StoreError> {
        let write = sqlx::query(
            "INSERT INTO directory_objects (tenant_id, kind, id, seq, body) \
             SELECT $1, $2, $3, COALESCE(MAX(seq), 0) + 1, $4 FROM directory_objects WHERE tenant_id = $1 AND kind = $2 \
             ON CONFLICT (tenant_id, kind, id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(kind)
        .bind(id)
        .bind(body.to_string());
        self.directory_write(tenant_id, write, audit).await
    }

    /// Replaces an existing object's body with its audit event. Returns false if it does not exist.
    pub async fn update_object(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
        body: &Value,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let write = sqlx::query(
            "UPDATE directory_objects SET body = $4 WHERE tenant_id = $1 AND kind = $2 AND id = $3",
        )
        .bind(tenant_id)
        .bind(kind)
        .bind(id)
        .bind(body.to_string());
        self.directory_write(tenant_id, write, Some(audit)).await
    }

    /// Deletes an object, and its group memberships (as a group or as a member), with its audit
    /// event. Returns false if it does not exist.
    pub async fn delete_object(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "DELETE FROM directory_objects WHERE tenant_id = $1 AND kind = $2 AND id = $3",
        )
        .bind(tenant_id)
        .bind(kind)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "DELETE FROM group_members WHERE tenant_id = $1 AND (group_id = $2 OR member_id = $2)",
        )
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        audit::insert(&mut tx, tenant_id, audit).await?;
        tx.commit().await?;
        self.directory_changed();
        Ok(true)
    }

    /// Adds `member` to `group`. Returns false, writing nothing, if it already is a member.
    pub async fn add_member(
        &self,
        tenant_id: &str,
        group_id: &str,
        member_id: &str,
        kind: MemberKind,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let write = sqlx::query(
            "INSERT INTO group_members (tenant_id, group_id, member_id, member_kind) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, group_id, member_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(group_id)
        .bind(member_id)
        .bind(kind.as_str());
        self.directory_write(tenant_id, write, Some(audit)).await
    }

    /// Removes `member` from `group`. Returns false if it was not a member.
    pub async fn remove_member(
        &self,
        tenant_id: &str,
        group_id: &str,
        member_id: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let write = sqlx::query(
            "DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2 AND member_id = $3",
        )
        .bind(tenant_id)
        .bind(group_id)
        .bind(member_id);
        self.directory_write(tenant_id, write, Some(audit)).await
    }

    /// A group's members, in the order they were added.
    pub async fn members(
        &self,
        tenant_id: &str,
        group_id: &str,
    ) -> Result<Vec<(String, MemberKind)>, StoreError> {
        let rows = sqlx::query("SELECT member_id, member_kind FROM group_members WHERE tenant_id = $1 AND group_id = $2 ORDER BY rowid")
            .bind(tenant_id)
            .bind(group_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0)?,
                    MemberKind::parse(&r.try_get::<String, _>(1)?)?,
                ))
            })
            .collect()
    }

    /// The groups an object (user or device) is a direct member of.
    pub async fn groups_of(
        &self,
        tenant_id: &str,
        member_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT group_id FROM group_members WHERE tenant_id = $1 AND member_id = $2 ORDER BY group_id")
            .bind(tenant_id)
            .bind(member_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::SessionWrite;
    use serde_json::json;

    fn ev() -> AuditEvent {
        AuditEvent::new("test", "Create", "Other")
    }

    #[tokio::test]
    async fn the_generation_moves_on_policy_input_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        let g0 = store.directory_generation();
        store
            .insert_object("t", "group", "g1", &json!({"id":"g1"}), Some(&ev()))
            .await
            .unwrap();
        let g1 = store.directory_generation();
        assert_ne!(g1, g0, "an insert");
        assert!(!store
            .insert_object("t", "group", "g1", &json!({"id":"g1"}), Some(&ev()))
            .await
            .unwrap());
        assert_eq!(
            store.directory_generation(),
            g1,
            "a write that changed nothing"
        );
        store
            .add_member("t", "g1", "u1", MemberKind::User, &ev())
            .await
            .unwrap();
        let g2 = store.directory_generation();
        assert_ne!(g2, g1, "a membership");
        let clone = store.clone();
        clone
            .save_settings("t", &Default::default(), None)
            .await
            .unwrap();
        let g3 = store.directory_generation();
        assert_ne!(g3, g2, "settings, through a clone");
        store.append_audit("t", &ev()).await.unwrap();
        store
            .session_started(
                "t",
                "s1",
                "2026-11-01T00:00:00Z",
                "viewOnly",
                &json!({}),
                None,
            )
            .await
            .unwrap();
        assert_eq!(store.directory_generation(), g3, "audit and session writes");
        store
            .delete_object("t", "group", "g1", &ev())
            .await
            .unwrap();
        assert_ne!(store.directory_generation(), g3, "a delete");
    }

    #[tokio::test]
    async fn batched_audit_events_are_all_stored_in_order_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        store.write_session_batch(&[]).await.unwrap();
        // More than one multi-row statement's worth, across two tenants.
        let events: Vec<SessionWrite> = (0..450)
            .map(|i| {
                let tenant = if i % 3 == 0 { "b" } else { "a" };
                let event = AuditEvent::new(&format!("event {i:03}"), "Action", "Session");
                SessionWrite::Audit {
                    tenant_id: tenant.to_owned(),
                    event,
                }
            })
            .collect();
        store.write_session_batch(&events).await.unwrap();
        let a = store.audit_events("a").await.unwrap();
        let b = store.audit_events("b").await.unwrap();
        assert_eq!((a.len(), b.len()), (300, 150));
        let mut names: Vec<String> = a
            .iter()
            .map(|e| e["activity"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        assert_eq!(names.first().map(String::as_str), Some("event 001"));
        assert_eq!(names.last().map(String::as_str), Some("event 449"));
        assert!(b.iter().all(|e| e["category"] == "Session"));
    }

    #[tokio::test]
    async fn objects_crud_membership_and_audit_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        assert!(store
            .insert_object("t", "user", "u1", &json!({"id":"u1"}), Some(&ev()))
            .await
            .unwrap());
        assert!(store
            .insert_object("t", "user", "u2", &json!({"id":"u2"}), Some(&ev()))
            .await
            .unwrap());
        assert!(!store
            .insert_object("t", "user", "u1", &json!({"id":"dup"}), Some(&ev()))
            .await
            .unwrap());
        assert!(store
            .insert_object("t", "group", "g1", &json!({"id":"g1"}), Some(&ev()))
            .await
            .unwrap());
        assert!(store
            .insert_object("other", "user", "u1", &json!({"id":"u1","t":2}), None)
            .await
            .unwrap());
        let users = store.list_objects("t", "user").await.unwrap();
        assert_eq!(users, vec![json!({"id":"u1"}), json!({"id":"u2"})]);
        assert!(store
            .add_member("t", "g1", "u1", MemberKind::User, &ev())
            .await
            .unwrap());
        assert!(!store
            .add_member("t", "g1", "u1", MemberKind::User, &ev())
            .await
            .unwrap());
        assert_eq!(store.groups_of("t", "u1").await.unwrap(), vec!["g1"]);
        assert!(store.groups_of("other", "u1").await.unwrap().is_empty());
        assert!(store
            .update_object("t", "user", "u1", &json!({"id":"u1","x":1}), &ev())
            .await
            .unwrap());
        assert!(!store
            .update_object("t", "user", "nope", &json!({}), &ev())
            .await
            .unwrap());
        assert_eq!(
            store.get_object("t", "user", "u1").await.unwrap(),
            Some(json!({"id":"u1","x":1}))
        );
        assert!(store.delete_object("t", "user", "u1", &ev()).await.unwrap());
        assert!(
            store.groups_of("t", "u1").await.unwrap().is_empty(),
            "membership went with the user"
        );
        assert!(store.members("t", "g1").await.unwrap().is_empty());
        assert_eq!(
            store.get_object("other", "user", "u1").await.unwrap(),
            Some(json!({"id":"u1","t":2}))
        );
        // 3 inserts + 1 member add + 1 update + 1 delete; the refused writes left nothing.
        assert_eq!(store.audit_events("t").await.unwrap().len(), 6);
    }
}
