//! Versioned schema migrations, embedded in the binary and applied in order on open (see
//! `backend.rs`'s `migrate`).
//!
//! Each database has its own list with the same versions: the SQLite files in `migrations/`,
//! their PostgreSQL twins (same tables, PostgreSQL's types: `BOOLEAN`, `TIMESTAMPTZ`, `JSONB`)
//! in `migrations/postgres/`. A new version is added to both. Each migration runs in its own
//! transaction together with the row that records it, so a crash mid-way leaves the database at
//! the previous version.

/// (version, name, SQL). Versions are dense and never reused; a released migration never changes.
pub(crate) type Migrations = &'static [(i64, &'static str, &'static str)];

/// SQLite's migrations.
pub(crate) const SQLITE: Migrations = &[
    (
        1,
        "settings_and_audit",
        include_str!("../migrations/0001_settings_and_audit.sql"),
    ),
    (
        2,
        "directory",
        include_str!("../migrations/0002_directory.sql"),
    ),
    (
        3,
        "sessions",
        include_str!("../migrations/0003_sessions.sql"),
    ),
    (
        4,
        "sessions_by_id",
        include_str!("../migrations/0004_sessions_by_id.sql"),
    ),
    (
        5,
        "drop_sessions_open",
        include_str!("../migrations/0005_drop_sessions_open.sql"),
    ),
];

/// PostgreSQL's, version for version the same schema.
pub(crate) const POSTGRES: Migrations = &[
    (
        1,
        "settings_and_audit",
        include_str!("../migrations/postgres/0001_settings_and_audit.sql"),
    ),
    (
        2,
        "directory",
        include_str!("../migrations/postgres/0002_directory.sql"),
    ),
    (
        3,
        "sessions",
        include_str!("../migrations/postgres/0003_sessions.sql"),
    ),
    (
        4,
        "sessions_by_id",
        include_str!("../migrations/postgres/0004_sessions_by_id.sql"),
    ),
    (
        5,
        "drop_sessions_open",
        include_str!("../migrations/postgres/0005_drop_sessions_open.sql"),
    ),
];

#[cfg(test)]
mod tests {
    #[test]
    fn both_databases_have_the_same_versions() {
        let v = |m: super::Migrations| m.iter().map(|(v, n, _)| (*v, *n)).collect::<Vec<_>>();
        assert_eq!(v(super::SQLITE), v(super::POSTGRES));
        for (i, (version, _, _)) in super::SQLITE.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1, "versions are dense from 1");
        }
    }
}
