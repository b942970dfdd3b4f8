-- SQLite's version 4 adds the id index that PostgreSQL's sessions table has had since version 3;
-- here it is already there.
CREATE INDEX IF NOT EXISTS sessions_by_id ON sessions (id);
