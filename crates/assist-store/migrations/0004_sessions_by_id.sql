-- Session writes that know only the session id (a relay's report merged into the body, a dead
-- node's sessions closed) look rows up by id alone: without this index each such write scanned the
-- whole table, so every relay session's end read the entire database file (benches/soak.sh).
CREATE INDEX IF NOT EXISTS sessions_by_id ON sessions (id);
