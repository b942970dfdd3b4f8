-- PostgreSQL twin of ../0005_drop_sessions_open.sql.
-- `sessions_open (state)` duplicated the first column of `sessions_by_end (state, end_time)`,
-- which serves the same lookups of open sessions (a dead node's sweep, a restart's close), and
-- every session's start and end paid for one more index entry.
DROP INDEX IF EXISTS sessions_open;
