-- PostgreSQL twin of ../0001_settings_and_audit.sql: the same tables with PostgreSQL's own types.
-- Per-tenant Remote Help settings. A tenant without a row reads the defaults (disabled, false, false).
CREATE TABLE remote_assistance_settings (
    tenant_id TEXT PRIMARY KEY NOT NULL,
    remote_assistance_state TEXT NOT NULL CHECK (remote_assistance_state IN ('disabled', 'enabled')),
    allow_sessions_to_unenrolled_devices BOOLEAN NOT NULL,
    block_chat BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Append-only audit trail in Graph's auditEvent shape (the JSON body), indexed by tenant and time.
CREATE TABLE audit_events (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    activity_date_time TIMESTAMPTZ NOT NULL,
    category TEXT NOT NULL,
    body JSONB NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_events_by_time ON audit_events (tenant_id, activity_date_time);
-- Retention deletes by time across tenants.
CREATE INDEX audit_events_by_time_only ON audit_events (activity_date_time);
