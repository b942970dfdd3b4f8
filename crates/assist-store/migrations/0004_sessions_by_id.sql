-- Indexes PostgreSQL's schema had and SQLite's lacked, found by the soak (benches/soak.sh):
-- - session writes that know only the session id (a relay's report merged into the body, a dead
--   node's sessions closed) scanned the whole sessions table, so every relay session's end read
--   the entire database file;
-- - retention's hourly deletes scanned whole tables while holding the write lock (11.7 s for the
--   audit trail after an hour's soak), so admin writes meanwhile failed with `database is locked`.
CREATE INDEX IF NOT EXISTS sessions_by_id ON sessions (id);
CREATE INDEX IF NOT EXISTS audit_events_by_time_only ON audit_events (activity_date_time);
CREATE INDEX IF NOT EXISTS sessions_by_end ON sessions (state, end_time);
