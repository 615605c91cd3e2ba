//! Named queries (`queries/<name>.sql`): the REST endpoint, refusing to start on a bad
//! file, the read-only guarantee, and `db.query` from actions.

mod actions;
mod rest;
mod start;

use crate::common::{Backend, Spawn};

/// Users of one role, the seed's "call the Query to obtain the users".
pub const BY_ROLE: &str = r#"-- Users with a role, for emitUsers.
-- roles: Admin, User
-- params: role
SELECT "id", "email", "role"
FROM "users"
WHERE "role" = {{role}}
ORDER BY "email";
"#;

/// Its parameter back, as the database saw it.
pub const ECHO: &str = "-- roles: User\n-- params: t\nSELECT {{t}} AS t\n";

/// One value of each kind a column may hold.
pub const KINDS: &str = r#"-- roles: User
-- params: n
SELECT 1 AS i, 2.5 AS f, 'x' AS t, NULL AS empty, COUNT(*) AS c,
       CAST({{n}} AS INTEGER) + 1 AS next
FROM "users"
"#;

pub fn spawn(backend: &Backend) -> Spawn<'_> {
    Spawn::new(backend)
        .query("users_by_role.sql", BY_ROLE)
        .query("echo.sql", ECHO)
        .query("kinds.sql", KINDS)
}
