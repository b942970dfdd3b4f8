-- Version 4 gives SQLite the indexes PostgreSQL's schema already had (sessions by id, audit events
-- by time alone) and both an index for retention's delete of ended sessions by end time.
CREATE INDEX IF NOT EXISTS sessions_by_id ON sessions (id);
CREATE INDEX IF NOT EXISTS audit_events_by_time_only ON audit_events (activity_date_time);
CREATE INDEX IF NOT EXISTS sessions_by_end ON sessions (state, end_time);
