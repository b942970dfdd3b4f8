-- Per-tenant Remote Help settings. A tenant without a row reads the defaults (disabled, false, false).
CREATE TABLE remote_assistance_settings (
    tenant_id TEXT PRIMARY KEY NOT NULL,
    remote_assistance_state TEXT NOT NULL CHECK (remote_assistance_state IN ('disabled', 'enabled')),
    allow_sessions_to_unenrolled_devices INTEGER NOT NULL,
    block_chat INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);

-- Append-only audit trail in Graph's auditEvent shape (the JSON body), indexed by tenant and time.
CREATE TABLE audit_events (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    activity_date_time TEXT NOT NULL,
    category TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_events_by_time ON audit_events (tenant_id, activity_date_time);
