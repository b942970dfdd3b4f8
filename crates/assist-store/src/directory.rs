//! Directory and RBAC objects, stored as their Graph JSON bodies per tenant and kind, and group
//! membership. Every write takes the audit event that records it and stores both in one
//! transaction. Admin read-modify-writes (read, check, write) run in an
//! [`AdminTransaction`], which holds the locks that keep them correct with writers on other
//! nodes.

use crate::{on_pool, on_tx, postgres_db, AuditEvent, Store, StoreError, Tx};
use assist_graph::settings::RemoteAssistanceSettings;
use serde_json::Value;

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

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "user" => Ok(Self::User),
            "managedDevice" => Ok(Self::Device),
            other => Err(StoreError::Corrupt(format!("member kind '{other}'"))),
        }
    }
}

/// One tenant's admin read-modify-write, in one database transaction: what it reads cannot be
/// changed by another writer (on this node or another sharing the database) before it commits.
///
/// - SQLite: the transaction starts with `BEGIN IMMEDIATE`, so it holds the database's write
///   lock from its first read to its commit.
/// - PostgreSQL: it takes a transaction-scoped advisory lock on the tenant (admin writers of one
///   tenant take turns, which also covers checks over rows that do not exist yet: uniqueness,
///   references), and the `*_for_update` reads lock their row (`SELECT … FOR UPDATE`).
///
/// Dropped without [`AdminTransaction::commit`], it rolls back. Keep it short: it holds a
/// connection and, on SQLite, every writer waits for it.
pub struct AdminTransaction {
    tx: Tx,
    store: Store,
    tenant_id: String,
    policy_changed: bool,
}

impl Store {
    /// Begins an admin read-modify-write transaction on `tenant_id` (see [`AdminTransaction`]).
    pub async fn admin_transaction(&self, tenant_id: &str) -> Result<AdminTransaction, StoreError> {
        let mut tx = self.begin(true).await?;
        on_tx!(tx, lock_tenant(tenant_id))?;
        Ok(AdminTransaction {
            tx,
            store: self.clone(),
            tenant_id: tenant_id.to_owned(),
            policy_changed: false,
        })
    }

    /// Every object of `kind` in the tenant, in creation order.
    pub async fn list_objects(
        &self,
        tenant_id: &str,
        kind: &str,
    ) -> Result<Vec<Value>, StoreError> {
        on_pool!(self, list_objects(tenant_id, kind))
    }

    /// Streams every object of `kind` in the tenant, in creation order, to `visit`, one at a
    /// time, until `visit` returns `false` (the admin API's listings: one page in memory).
    pub async fn for_each_object(
        &self,
        tenant_id: &str,
        kind: &str,
        visit: &mut (dyn FnMut(Value) -> bool + Send),
    ) -> Result<(), StoreError> {
        on_pool!(self, for_each_object(tenant_id, kind, visit))
    }

    /// Up to `limit` objects of `kind` across every tenant, with their tenant ids, in creation
    /// order (the dev issuer's sign-in page lists the directory's users with it).
    pub async fn list_objects_all_tenants(
        &self,
        kind: &str,
        limit: u32,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        on_pool!(self, list_objects_all_tenants(kind, limit))
    }

    /// One object, if it exists.
    pub async fn get_object(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<Value>, StoreError> {
        on_pool!(self, get_object(tenant_id, kind, id, false))
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
        let mut tx = self.admin_transaction(tenant_id).await?;
        let done = tx.insert_object(kind, id, body, audit).await?;
        tx.commit().await?;
        Ok(done)
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
        let mut tx = self.admin_transaction(tenant_id).await?;
        let done = tx.update_object(kind, id, body, audit).await?;
        tx.commit().await?;
        Ok(done)
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
        let mut tx = self.admin_transaction(tenant_id).await?;
        let done = tx.delete_object(kind, id, audit).await?;
        tx.commit().await?;
        Ok(done)
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
        let mut tx = self.admin_transaction(tenant_id).await?;
        let done = tx.add_member(group_id, member_id, kind, audit).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Removes `member` from `group`. Returns false if it was not a member.
    pub async fn remove_member(
        &self,
        tenant_id: &str,
        group_id: &str,
        member_id: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.admin_transaction(tenant_id).await?;
        let done = tx.remove_member(group_id, member_id, audit).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// A group's members, in the order they were added.
    pub async fn members(
        &self,
        tenant_id: &str,
        group_id: &str,
    ) -> Result<Vec<(String, MemberKind)>, StoreError> {
        on_pool!(self, members(tenant_id, group_id))
    }

    /// The groups an object (user or device) is a direct member of.
    pub async fn groups_of(
        &self,
        tenant_id: &str,
        member_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        on_pool!(self, groups_of(tenant_id, member_id))
    }
}

impl AdminTransaction {
    /// The tenant this transaction writes.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Appends `audit` if a write changed a row, and notes a policy-input change.
    async fn changed(&mut self, rows: u64, audit: Option<&AuditEvent>) -> Result<bool, StoreError> {
        if rows == 0 {
            return Ok(false);
        }
        if let Some(a) = audit {
            let t = self.tenant_id.as_str();
            on_tx!(self.tx, audit_insert(t, a))?;
        }
        self.policy_changed = true;
        Ok(true)
    }

    /// The tenant's settings (the defaults if never configured), locked until commit.
    pub async fn settings_for_update(&mut self) -> Result<RemoteAssistanceSettings, StoreError> {
        let t = self.tenant_id.as_str();
        if let Tx::Postgres(c) = &mut self.tx {
            // A row to lock even for a tenant still on the defaults (rolled back with the rest
            // if the change is refused).
            postgres_db::save_settings(c, t, &RemoteAssistanceSettings::default(), true).await?;
        }
        Ok(on_tx!(self.tx, settings(t, true))?.unwrap_or_default())
    }

    /// Replaces the tenant's settings, with `audit`.
    pub async fn save_settings(
        &mut self,
        settings: &RemoteAssistanceSettings,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let t = self.tenant_id.as_str();
        on_tx!(self.tx, save_settings(t, settings, false))?;
        self.changed(1, audit).await?;
        Ok(())
    }

    /// Every object of `kind` in the tenant, in creation order, as this transaction sees them.
    pub async fn list_objects(&mut self, kind: &str) -> Result<Vec<Value>, StoreError> {
        let t = self.tenant_id.as_str();
        on_tx!(self.tx, list_objects(t, kind))
    }

    /// Streams every object of `kind` in the tenant, in creation order, as this transaction
    /// sees them, to `visit`, one at a time, until `visit` returns `false`.
    pub async fn for_each_object(
        &mut self,
        kind: &str,
        visit: &mut (dyn FnMut(Value) -> bool + Send),
    ) -> Result<(), StoreError> {
        let t = self.tenant_id.as_str();
        on_tx!(self.tx, for_each_object(t, kind, visit))
    }

    /// One object, as this transaction sees it (not locked).
    pub async fn get_object(&mut self, kind: &str, id: &str) -> Result<Option<Value>, StoreError> {
        let t = self.tenant_id.as_str();
        on_tx!(self.tx, get_object(t, kind, id, false))
    }

    /// One object, its row locked until commit: the read of a read-modify-write.
    pub async fn get_object_for_update(
        &mut self,
        kind: &str,
        id: &str,
    ) -> Result<Option<Value>, StoreError> {
        let t = self.tenant_id.as_str();
        on_tx!(self.tx, get_object(t, kind, id, true))
    }

    /// [`Store::insert_object`] inside this transaction.
    pub async fn insert_object(
        &mut self,
        kind: &str,
        id: &str,
        body: &Value,
        audit: Option<&AuditEvent>,
    ) -> Result<bool, StoreError> {
        let t = self.tenant_id.as_str();
        let rows = on_tx!(self.tx, insert_object(t, kind, id, body))?;
        self.changed(rows, audit).await
    }

    /// [`Store::update_object`] inside this transaction.
    pub async fn update_object(
        &mut self,
        kind: &str,
        id: &str,
        body: &Value,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let t = self.tenant_id.as_str();
        let rows = on_tx!(self.tx, update_object(t, kind, id, body))?;
        self.changed(rows, Some(audit)).await
    }

    /// [`Store::delete_object`] inside this transaction.
    pub async fn delete_object(
        &mut self,
        kind: &str,
        id: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let t = self.tenant_id.as_str();
        let rows = on_tx!(self.tx, delete_object(t, kind, id))?;
        self.changed(rows, Some(audit)).await
    }

    /// [`Store::add_member`] inside this transaction.
    pub async fn add_member(
        &mut self,
        group_id: &str,
        member_id: &str,
        kind: MemberKind,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let t = self.tenant_id.as_str();
        let rows = on_tx!(self.tx, add_member(t, group_id, member_id, kind))?;
        self.changed(rows, Some(audit)).await
    }

    /// [`Store::remove_member`] inside this transaction.
    pub async fn remove_member(
        &mut self,
        group_id: &str,
        member_id: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let t = self.tenant_id.as_str();
        let rows = on_tx!(self.tx, remove_member(t, group_id, member_id))?;
        self.changed(rows, Some(audit)).await
    }

    /// Commits; the directory generation moves on if a policy input changed.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        if self.policy_changed {
            self.store.directory_changed();
        }
        Ok(())
    }
}

// Behaviours are tested on both databases in tests/conformance.rs.
