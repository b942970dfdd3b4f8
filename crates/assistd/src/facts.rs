//! Loads the facts the policy decides on (settings, the helper's and sharer's groups, the
//! device, role definitions and assignments) from the store, and adds users just in time.

use assist_graph::settings::{RemoteAssistanceSettings, RemoteAssistanceState};
use assist_identity::Identity;
use assist_policy::{
    ComplianceState, Device, Helper, RemoteAssistanceState as PolicyState, RoleAssignment,
    RoleDefinition, ScopeType, Sharer, TenantPolicy, TenantSettings,
};
use assist_store::{Store, StoreError};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The policy's view of the tenant settings.
pub fn policy_settings(tenant: &str, s: &RemoteAssistanceSettings) -> TenantSettings {
    TenantSettings {
        tenant_id: tenant.to_owned(),
        remote_assistance_state: match s.state {
            RemoteAssistanceState::Enabled => PolicyState::Enabled,
            RemoteAssistanceState::Disabled => PolicyState::Disabled,
        },
        allow_sessions_to_unenrolled_devices: s.allow_sessions_to_unenrolled_devices,
        block_chat: s.block_chat,
    }
}

fn strings(v: &Value, key: &str) -> BTreeSet<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Everything tenant-wide the policy needs.
pub async fn tenant_policy(store: &Store, tenant: &str) -> Result<TenantPolicy, StoreError> {
    let settings = policy_settings(tenant, &store.settings(tenant).await?);
    let mut role_definitions = RoleDefinition::built_ins();
    for v in store.list_objects(tenant, "roleDefinition").await? {
        let shaped = json!({
            "id": v["id"], "displayName": v["displayName"], "isBuiltIn": false,
            "rolePermissions": v.get("rolePermissions").cloned().unwrap_or(json!([])),
        });
        match serde_json::from_value::<RoleDefinition>(shaped) {
            Ok(r) => role_definitions.push(r),
            Err(e) => {
                return Err(StoreError::Corrupt(format!(
                    "role definition {}: {e}",
                    v["id"]
                )))
            }
        }
    }
    let mut role_assignments = Vec::new();
    for v in store.list_objects(tenant, "roleAssignment").await? {
        let scope_type: ScopeType = serde_json::from_value(
            v.get("scopeType")
                .cloned()
                .unwrap_or(json!("resourceScope")),
        )
        .map_err(|e| StoreError::Corrupt(format!("role assignment {}: {e}", v["id"])))?;
        let mut scope_group_ids = strings(&v, "resourceScopes");
        scope_group_ids.extend(strings(&v, "scopeMembers"));
        role_assignments.push(RoleAssignment {
            id: v["id"].as_str().unwrap_or_default().to_owned(),
            display_name: v["displayName"].as_str().unwrap_or_default().to_owned(),
            role_definition_id: v["_roleDefinitionId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            member_group_ids: strings(&v, "members"),
            scope_type,
            scope_group_ids,
        });
    }
    Ok(TenantPolicy {
        settings,
        role_definitions,
        role_assignments,
    })
}

/// An object of `kind` by id, else the first whose `key` property equals `reference`
/// (ignoring ASCII case).
async fn find_by(
    store: &Store,
    tenant: &str,
    kind: &str,
    key: &str,
    reference: &str,
) -> Result<Option<Value>, StoreError> {
    if let Some(o) = store.get_object(tenant, kind, reference).await? {
        return Ok(Some(o));
    }
    // One object at a time, stopping at the match.
    let mut found = None;
    store
        .for_each_object(tenant, kind, &mut |o| {
            if o[key]
                .as_str()
                .is_some_and(|x| x.eq_ignore_ascii_case(reference))
            {
                found = Some(o);
            }
            found.is_none()
        })
        .await?;
    Ok(found)
}

/// A user of the tenant by object id or (case-insensitive) UPN.
pub async fn find_user(
    store: &Store,
    tenant: &str,
    id_or_upn: &str,
) -> Result<Option<Value>, StoreError> {
    find_by(store, tenant, "user", "userPrincipalName", id_or_upn).await
}

/// Adds the signed-in user from the token's claims if the directory does not know them yet
/// (by object id or UPN), and returns the directory's record.
pub async fn ensure_user(store: &Store, id: &Identity) -> Result<Value, StoreError> {
    if let Some(u) = store
        .get_object(&id.tenant_id, "user", &id.object_id)
        .await?
    {
        return Ok(u);
    }
    if let Some(u) = find_user(store, &id.tenant_id, &id.user_principal_name).await? {
        return Ok(u);
    }
    let user = json!({
        "id": id.object_id,
        "userPrincipalName": id.user_principal_name,
        "displayName": id.display_name.clone().unwrap_or_else(|| id.user_principal_name.clone()),
        "givenName": id.given_name,
        "surname": id.family_name,
        "accountEnabled": true,
    });
    // A concurrent first sign-in may have inserted it: either way the row exists now.
    store
        .insert_object(&id.tenant_id, "user", &id.object_id, &user, None)
        .await?;
    tracing::info!("added a signed-in user to the directory");
    Ok(user)
}

/// The helper's facts.
pub async fn helper(store: &Store, tenant: &str, user_id: &str) -> Result<Helper, StoreError> {
    Ok(Helper {
        tenant_id: tenant.to_owned(),
        user_id: user_id.to_owned(),
        group_ids: store
            .groups_of(tenant, user_id)
            .await?
            .into_iter()
            .collect(),
    })
}

/// The facts of the signed-in caller as a helper: the stored memberships of their directory
/// record (`user_id`) plus the token's `groups` claim.
pub async fn helper_signed_in(
    store: &Store,
    id: &Identity,
    user_id: &str,
) -> Result<Helper, StoreError> {
    let mut h = helper(store, &id.tenant_id, user_id).await?;
    h.group_ids.extend(id.groups.iter().cloned());
    Ok(h)
}

/// The sharer's facts.
pub async fn sharer(store: &Store, tenant: &str, user_id: &str) -> Result<Sharer, StoreError> {
    Ok(Sharer {
        tenant_id: tenant.to_owned(),
        user_id: user_id.to_owned(),
        group_ids: store
            .groups_of(tenant, user_id)
            .await?
            .into_iter()
            .collect(),
    })
}

/// A managed device of the tenant by its id or its `azureADDeviceId`.
pub async fn find_device(
    store: &Store,
    tenant: &str,
    reference: &str,
) -> Result<Option<Value>, StoreError> {
    find_by(store, tenant, "managedDevice", "azureADDeviceId", reference).await
}

/// The device's facts. A device id the tenant does not manage is an unenrolled device of
/// `tenant_if_unknown` (the claimed tenant), with unknown compliance and no groups.
pub async fn device(
    store: &Store,
    tenant: &str,
    reference: &str,
    tenant_if_unknown: &str,
) -> Result<Device, StoreError> {
    let Some(d) = find_device(store, tenant, reference).await? else {
        return Ok(Device {
            id: reference.to_owned(),
            tenant_id: tenant_if_unknown.to_owned(),
            enrolled: false,
            compliance: ComplianceState::Unknown,
            primary_user_id: None,
            group_ids: BTreeSet::new(),
        });
    };
    let id = d["id"].as_str().unwrap_or(reference).to_owned();
    Ok(Device {
        enrolled: d["enrollmentState"] == "enrolled" && d["managementState"] == "managed",
        compliance: match d["complianceState"].as_str() {
            Some("compliant") => ComplianceState::Compliant,
            Some("noncompliant" | "conflict" | "error" | "inGracePeriod") => {
                ComplianceState::NonCompliant
            }
            _ => ComplianceState::Unknown,
        },
        primary_user_id: d["userId"].as_str().map(str::to_owned),
        group_ids: store.groups_of(tenant, &id).await?.into_iter().collect(),
        tenant_id: tenant.to_owned(),
        id,
    })
}

/// What each side of a session is shown of the other: display name, job title, company, and
/// the UPN's domain when the tenant lists it as verified (else `null`, so a look-alike domain is
/// never presented as trusted).
pub async fn profile(store: &Store, tenant: &str, user: &Value) -> Result<Value, StoreError> {
    let upn = user["userPrincipalName"].as_str().unwrap_or_default();
    let domain = upn.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
    let verified = match &domain {
        Some(d) => store
            .get_object(tenant, "domain", d)
            .await?
            .is_some_and(|v| v["isVerified"] == true),
        None => false,
    };
    Ok(json!({
        "displayName": user["displayName"],
        "jobTitle": user.get("jobTitle").cloned().unwrap_or(Value::Null),
        "companyName": user.get("companyName").cloned().unwrap_or(Value::Null),
        "verifiedDomain": if verified { domain.map(Value::String).unwrap_or(Value::Null) } else { Value::Null },
    }))
}

/// How long cached policy facts are trusted at most. Changes made through this process are
/// seen at once (the store's directory generation moves on); this bounds how long a change
/// made by another process sharing the database can go unseen.
pub const FACTS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// Entries kept at most; the cache starts over when full.
const FACTS_MAX_ENTRIES: usize = 10_000;

/// Caches the facts the broker's policy evaluations load (tenant policy, group memberships,
/// devices), so a burst of pairings does not reload them from the store each time. Every entry
/// is dropped when the store's directory generation moves on (any change to settings,
/// directory objects or memberships made through this process) and after [`FACTS_MAX_AGE`].
#[derive(Debug)]
pub struct FactsCache {
    inner: std::sync::Mutex<CacheInner>,
    /// One load at a time per fact (single flight): when the cache starts over, the
    /// evaluations that miss the same fact wait for one load instead of each running it
    /// against the store (a cluster's PostgreSQL pool is 8 connections per node).
    flights:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// Groups named by the latest token of each (tenant, user), with when it was seen: kept
    /// across directory changes (they come from the issuer, not the store), for
    /// [`TOKEN_GROUPS_MAX_AGE`], bounded by [`FACTS_MAX_ENTRIES`].
    token_groups: std::sync::Mutex<TokenGroups>,
}

/// (tenant, user id) → the groups of that user's last token and when it was presented.
type TokenGroups =
    std::collections::HashMap<(String, String), (BTreeSet<String>, std::time::Instant)>;

/// How long the groups of a user's last token count after it was presented (a token lives
/// about an hour; a connection re-authenticates before its token expires).
pub const TOKEN_GROUPS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// When a load started: the store's directory generation and the cache's invalidation epoch.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    generation: u64,
    epoch: u64,
}

#[derive(Debug)]
struct CacheInner {
    generation: u64,
    /// Moves on at each [`FactsCache::invalidate`]: a load that started before one does not
    /// store what it read (it may be older than the change that caused the invalidation).
    epoch: u64,
    since: std::time::Instant,
    policies: std::collections::HashMap<String, std::sync::Arc<TenantPolicy>>,
    groups: std::collections::HashMap<(String, String), BTreeSet<String>>,
    devices: std::collections::HashMap<(String, String, String), Device>,
}

impl CacheInner {
    fn len(&self) -> usize {
        self.policies.len() + self.groups.len() + self.devices.len()
    }

    /// Starts over if the store moved on to `generation` or the entries are too old; returns
    /// whether entries loaded at `generation` may be stored.
    fn refresh(&mut self, generation: u64) -> bool {
        if generation > self.generation || self.since.elapsed() > FACTS_MAX_AGE {
            self.generation = self.generation.max(generation);
            self.since = std::time::Instant::now();
            self.policies.clear();
            self.groups.clear();
            self.devices.clear();
        }
        generation == self.generation
    }
}

impl Default for FactsCache {
    fn default() -> Self {
        Self {
            inner: std::sync::Mutex::new(CacheInner {
                generation: 0,
                epoch: 0,
                since: std::time::Instant::now(),
                policies: Default::default(),
                groups: Default::default(),
                devices: Default::default(),
            }),
            token_groups: Default::default(),
            flights: Default::default(),
        }
    }
}

impl FactsCache {
    fn with<T>(&self, f: impl FnOnce(&mut CacheInner) -> T) -> T {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut inner)
    }

    /// The cached entry `f` finds, if the entries are of `generation`; and the stamp a load
    /// started now stores its result with ([`FactsCache::put`]).
    fn get<T>(
        &self,
        generation: u64,
        f: impl FnOnce(&CacheInner) -> Option<T>,
    ) -> (Option<T>, Stamp) {
        self.with(|i| {
            let hit = if i.refresh(generation) { f(i) } else { None };
            let stamp = Stamp {
                generation,
                epoch: i.epoch,
            };
            (hit, stamp)
        })
    }

    /// Stores what a load stamped `stamp` read, unless the store has moved on since or the
    /// cache was invalidated after the load started.
    fn put(&self, stamp: Stamp, f: impl FnOnce(&mut CacheInner)) {
        self.with(|i| {
            if i.refresh(stamp.generation) && i.epoch == stamp.epoch {
                if i.len() >= FACTS_MAX_ENTRIES {
                    i.policies.clear();
                    i.groups.clear();
                    i.devices.clear();
                }
                f(i)
            }
        })
    }

    /// Drops every cached fact at once (cluster mode: another node changed the directory or
    /// the settings, which this node's store generation does not see).
    pub fn invalidate(&self) {
        self.with(|i| {
            i.epoch = i.epoch.wrapping_add(1);
            i.since = std::time::Instant::now();
            i.policies.clear();
            i.groups.clear();
            i.devices.clear();
        })
    }

    /// The lock a load of `key` holds, so concurrent misses of one fact load it once.
    fn flight(&self, key: String) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut m = self
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() >= FACTS_MAX_ENTRIES {
            // Forget the locks nobody holds or waits for.
            m.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
        }
        m.entry(key).or_default().clone()
    }

    /// [`tenant_policy`], cached; concurrent misses load it once.
    pub async fn tenant_policy(
        &self,
        store: &Store,
        tenant: &str,
    ) -> Result<std::sync::Arc<TenantPolicy>, StoreError> {
        let g = store.directory_generation();
        if let (Some(p), _) = self.get(g, |i| i.policies.get(tenant).cloned()) {
            return Ok(p);
        }
        let flight = self.flight(format!("policy\0{tenant}"));
        let _loading = flight.lock().await;
        // Another caller may have loaded it while this one waited.
        let g = store.directory_generation();
        let (hit, stamp) = self.get(g, |i| i.policies.get(tenant).cloned());
        if let Some(p) = hit {
            return Ok(p);
        }
        let p = std::sync::Arc::new(tenant_policy(store, tenant).await?);
        self.put(stamp, |i| {
            i.policies.insert(tenant.to_owned(), p.clone());
        });
        Ok(p)
    }

    /// Remembers the `groups` claim of a token `identity` presented (replacing the previous
    /// token's), so [`FactsCache::groups_of`] counts them for `user_id`, the directory record
    /// the token was matched to (by object id or UPN; see [`ensure_user`]).
    pub fn note_token_groups(&self, identity: &Identity, user_id: &str) {
        let mut m = self
            .token_groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (identity.tenant_id.clone(), user_id.to_owned());
        if identity.groups.is_empty() {
            m.remove(&key);
            return;
        }
        if m.len() >= FACTS_MAX_ENTRIES {
            m.retain(|_, (_, at)| at.elapsed() < TOKEN_GROUPS_MAX_AGE);
            if m.len() >= FACTS_MAX_ENTRIES {
                m.clear();
            }
        }
        let groups = identity.groups.iter().cloned().collect();
        m.insert(key, (groups, std::time::Instant::now()));
    }

    fn token_groups_of(&self, tenant: &str, member: &str) -> BTreeSet<String> {
        let m = self
            .token_groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.get(&(tenant.to_owned(), member.to_owned()))
            .filter(|(_, at)| at.elapsed() < TOKEN_GROUPS_MAX_AGE)
            .map(|(g, _)| g.clone())
            .unwrap_or_default()
    }

    /// The groups `member` (a user or device id) belongs to: the stored memberships (cached)
    /// and the `groups` claim of the member's last token ([`FactsCache::note_token_groups`]).
    pub async fn groups_of(
        &self,
        store: &Store,
        tenant: &str,
        member: &str,
    ) -> Result<BTreeSet<String>, StoreError> {
        let mut groups = self.stored_groups_of(store, tenant, member).await?;
        groups.extend(self.token_groups_of(tenant, member));
        Ok(groups)
    }

    async fn stored_groups_of(
        &self,
        store: &Store,
        tenant: &str,
        member: &str,
    ) -> Result<BTreeSet<String>, StoreError> {
        let g = store.directory_generation();
        let key = (tenant.to_owned(), member.to_owned());
        if let (Some(groups), _) = self.get(g, |i| i.groups.get(&key).cloned()) {
            return Ok(groups);
        }
        let flight = self.flight(format!("groups\0{tenant}\0{member}"));
        let _loading = flight.lock().await;
        let g = store.directory_generation();
        let (hit, stamp) = self.get(g, |i| i.groups.get(&key).cloned());
        if let Some(groups) = hit {
            return Ok(groups);
        }
        let groups: BTreeSet<String> = store.groups_of(tenant, member).await?.into_iter().collect();
        self.put(stamp, |i| {
            i.groups.insert(key, groups.clone());
        });
        Ok(groups)
    }

    /// [`device`], cached.
    pub async fn device(
        &self,
        store: &Store,
        tenant: &str,
        reference: &str,
        tenant_if_unknown: &str,
    ) -> Result<Device, StoreError> {
        let g = store.directory_generation();
        let key = (
            tenant.to_owned(),
            reference.to_owned(),
            tenant_if_unknown.to_owned(),
        );
        let (hit, stamp) = self.get(g, |i| i.devices.get(&key).cloned());
        if let Some(d) = hit {
            return Ok(d);
        }
        let d = device(store, tenant, reference, tenant_if_unknown).await?;
        self.put(stamp, |i| {
            i.devices.insert(key, d.clone());
        });
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use assist_store::directory::MemberKind;
    use assist_store::AuditEvent;

    fn ev() -> AuditEvent {
        AuditEvent::new("test", "Create", "Test")
    }

    fn identity(groups: &[&str]) -> Identity {
        Identity {
            tenant_id: "t".into(),
            object_id: "u1".into(),
            user_principal_name: "u1@t.example".into(),
            display_name: None,
            given_name: None,
            family_name: None,
            roles: vec![],
            scopes: vec![],
            device_id: None,
            directory_roles: vec![],
            is_device: false,
            expires_at: u64::MAX,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn token_groups_add_to_stored_memberships() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        let cache = FactsCache::default();
        store
            .add_member("t", "g-stored", "u1", MemberKind::User, &ev())
            .await
            .unwrap();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            cache.groups_of(&store, "t", "u1").await.unwrap(),
            set(&["g-stored"])
        );
        cache.note_token_groups(&identity(&["g-token"]), "u1");
        assert_eq!(
            cache.groups_of(&store, "t", "u1").await.unwrap(),
            set(&["g-stored", "g-token"])
        );
        // Only that user of that tenant.
        assert!(cache.groups_of(&store, "t", "u2").await.unwrap().is_empty());
        assert!(cache
            .groups_of(&store, "t2", "u1")
            .await
            .unwrap()
            .is_empty());
        // A later token replaces the earlier one's groups, also one without any.
        cache.note_token_groups(&identity(&["g-other"]), "u1");
        assert_eq!(
            cache.groups_of(&store, "t", "u1").await.unwrap(),
            set(&["g-stored", "g-other"])
        );
        cache.note_token_groups(&identity(&[]), "u1");
        assert_eq!(
            cache.groups_of(&store, "t", "u1").await.unwrap(),
            set(&["g-stored"])
        );
        // The admin API's view of the caller.
        let h = helper_signed_in(&store, &identity(&["g-token"]), "u1")
            .await
            .unwrap();
        assert_eq!(h.group_ids, set(&["g-stored", "g-token"]));
    }

    #[tokio::test]
    async fn cached_facts_follow_every_directory_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        let cache = FactsCache::default();

        let p = cache.tenant_policy(&store, "t").await.unwrap();
        assert!(p.role_assignments.is_empty());
        assert!(cache.groups_of(&store, "t", "u1").await.unwrap().is_empty());
        let d = cache.device(&store, "t", "dev-1", "t").await.unwrap();
        assert!(!d.enrolled);

        // Served from the cache while nothing changes.
        let again = cache.tenant_policy(&store, "t").await.unwrap();
        assert!(std::sync::Arc::ptr_eq(&p, &again));

        // Each kind of change is seen by the next evaluation.
        store
            .insert_object(
                "t",
                "roleAssignment",
                "a1",
                &json!({"id": "a1", "displayName": "A", "members": ["g1"], "scopeType": "allLicensedUsers", "_roleDefinitionId": "builtin-help-desk-operator"}),
                Some(&ev()),
            )
            .await
            .unwrap();
        let p = cache.tenant_policy(&store, "t").await.unwrap();
        assert_eq!(p.role_assignments.len(), 1);

        store
            .insert_object("t", "group", "g1", &json!({"id": "g1"}), Some(&ev()))
            .await
            .unwrap();
        store
            .add_member("t", "g1", "u1", MemberKind::User, &ev())
            .await
            .unwrap();
        assert_eq!(
            cache.groups_of(&store, "t", "u1").await.unwrap(),
            BTreeSet::from(["g1".to_owned()])
        );

        store
            .insert_object(
                "t",
                "managedDevice",
                "dev-1",
                &json!({"id": "dev-1", "enrollmentState": "enrolled", "managementState": "managed", "complianceState": "compliant"}),
                Some(&ev()),
            )
            .await
            .unwrap();
        assert!(
            cache
                .device(&store, "t", "dev-1", "t")
                .await
                .unwrap()
                .enrolled
        );

        let mut settings = store.settings("t").await.unwrap();
        settings.block_chat = !settings.block_chat;
        store.save_settings("t", &settings, None).await.unwrap();
        assert_eq!(
            cache
                .tenant_policy(&store, "t")
                .await
                .unwrap()
                .settings
                .block_chat,
            settings.block_chat
        );

        assert!(store
            .delete_object("t", "roleAssignment", "a1", &ev())
            .await
            .unwrap());
        assert!(cache
            .tenant_policy(&store, "t")
            .await
            .unwrap()
            .role_assignments
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_of_one_fact_load_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        let cache = std::sync::Arc::new(FactsCache::default());
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (cache, store) = (cache.clone(), store.clone());
                tokio::spawn(async move { cache.tenant_policy(&store, "t").await.unwrap() })
            })
            .collect();
        let mut policies = Vec::new();
        for t in tasks {
            policies.push(t.await.unwrap());
        }
        // One load: every caller got the very policy it stored (each load makes its own Arc).
        assert!(policies
            .iter()
            .all(|p| std::sync::Arc::ptr_eq(p, &policies[0])));
    }

    #[tokio::test]
    async fn a_load_in_flight_when_the_cache_is_invalidated_does_not_store_what_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        let cache = FactsCache::default();
        let g = store.directory_generation();
        let stale = std::sync::Arc::new(tenant_policy(&store, "t").await.unwrap());

        // A load starts (a miss), another node's change invalidates the cache, then the load
        // finishes: what it read is not stored.
        let (hit, stamp) = cache.get(g, |i| i.policies.get("t").cloned());
        assert!(hit.is_none());
        cache.invalidate();
        cache.put(stamp, |i| {
            i.policies.insert("t".into(), stale.clone());
        });
        let (hit, stamp) = cache.get(g, |i| i.policies.get("t").cloned());
        assert!(
            hit.is_none(),
            "a load older than the invalidation was stored"
        );

        // A load that started after it is stored.
        cache.put(stamp, |i| {
            i.policies.insert("t".into(), stale.clone());
        });
        let (hit, _) = cache.get(g, |i| i.policies.get("t").cloned());
        assert!(hit.is_some_and(|p| std::sync::Arc::ptr_eq(&p, &stale)));
    }
}
