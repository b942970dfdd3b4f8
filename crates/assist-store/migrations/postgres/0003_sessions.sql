-- PostgreSQL twin of ../0003_sessions.sql.
-- Remote Help sessions, recorded when they become active and closed when they end. `body` holds
-- Graph's remoteAssistanceReporting fields; the columns are what queries, recovery and retention need.
CREATE TABLE sessions (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'ended')),
    start_time TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    end_time TIMESTAMPTZ,
    mode TEXT NOT NULL,
    end_reason TEXT,
    ended_by TEXT,
    body JSONB NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX sessions_by_start ON sessions (tenant_id, start_time);
CREATE INDEX sessions_open ON sessions (state);
-- Merges of relay counters find a session by id alone.
CREATE INDEX sessions_by_id ON sessions (id);
