-- PostgreSQL twin of ../0002_directory.sql.
-- The per-tenant directory and RBAC objects (users, groups, managed devices, role definitions,
-- role assignments, verified domains), stored as their Graph JSON bodies. `seq` orders them by
-- creation so paging is stable.
CREATE TABLE directory_objects (
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    body JSONB NOT NULL,
    PRIMARY KEY (tenant_id, kind, id)
);
CREATE INDEX directory_objects_by_seq ON directory_objects (tenant_id, kind, seq);

-- Group membership: users and managed devices in groups. `seq` keeps the order members were
-- added in (SQLite uses its rowid for that).
CREATE TABLE group_members (
    tenant_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    member_kind TEXT NOT NULL,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (tenant_id, group_id, member_id)
);
CREATE INDEX group_members_by_member ON group_members (tenant_id, member_id);
