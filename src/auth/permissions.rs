//! The one permission decision.
//!
//! REST reads and writes, database channels and Sails subscriptions all ask `access`;
//! nothing else in livebase decides who may see or change a row. The answer is a scope
//! rather than a yes/no so that a list can turn it into a `WHERE` and the realtime layer
//! into a room choice, without a per-row query.

use super::Identity;
use crate::schema::{ObjectSchema, Operation, RowSecurity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The caller may not do this at all.
    Denied,
    /// Every row.
    All,
    /// Only rows this user created.
    Own(i64),
}

impl Access {
    /// Whether the scope covers a row created by `owner`.
    pub fn permits_row(self, owner: Option<i64>) -> bool {
        match self {
            Access::Denied => false,
            Access::All => true,
            Access::Own(me) => owner == Some(me),
        }
    }
}

/// What `who` may do with `op` on `object`. Admin and the master token pass everything.
pub fn access(who: &Identity, object: &ObjectSchema, op: Operation) -> Access {
    if who.is_admin() {
        return Access::All;
    }
    if !object.permissions.roles_for(op).contains(&who.role) {
        return Access::Denied;
    }
    let owned = match who.user_id {
        Some(id) => Access::Own(id),
        // Anonymous callers own nothing, so owner security leaves them nothing.
        None => Access::Denied,
    };
    match (object.row_security, op) {
        (RowSecurity::None, _) => Access::All,
        (RowSecurity::OwnerWrite, Operation::Read) => Access::All,
        (_, Operation::Create) => match owned {
            Access::Denied => Access::Denied,
            _ => Access::All,
        },
        (RowSecurity::Owner | RowSecurity::OwnerWrite, _) => owned,
    }
}

/// Whether `who` may run a named query open to `roles`. Admin and the master token may
/// run every query.
pub fn may_run(who: &Identity, roles: &[String]) -> bool {
    who.is_admin() || roles.contains(&who.role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Permissions;

    fn object(row_security: RowSecurity) -> ObjectSchema {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect();
        ObjectSchema {
            name: "items".into(),
            fields: vec![],
            permissions: Permissions {
                read: roles(&["User", "ReadOnly", "Public"]),
                create: roles(&["User", "Public"]),
                update: roles(&["User"]),
                delete: roles(&[]),
            },
            row_security,
            events: vec![],
            file: "items.json".into(),
        }
    }

    fn who(role: &str, id: Option<i64>) -> Identity {
        Identity {
            user_id: id,
            username: "u".into(),
            role: role.into(),
            master: false,
            session: None,
        }
    }

    #[test]
    fn decision_table() {
        use Access::*;
        use Operation::*;
        let admin = who("Admin", Some(1));
        let user = who("User", Some(7));
        let reader = who("ReadOnly", Some(8));
        let guest = who("Public", None);
        let table = [
            (RowSecurity::None, &admin, Delete, All),
            (RowSecurity::None, &user, Read, All),
            (RowSecurity::None, &user, Update, All),
            (RowSecurity::None, &user, Delete, Denied),
            (RowSecurity::None, &reader, Update, Denied),
            (RowSecurity::None, &guest, Create, All),
            (RowSecurity::Owner, &user, Read, Own(7)),
            (RowSecurity::Owner, &user, Create, All),
            (RowSecurity::Owner, &user, Update, Own(7)),
            (RowSecurity::Owner, &reader, Read, Own(8)),
            (RowSecurity::Owner, &guest, Read, Denied),
            (RowSecurity::Owner, &guest, Create, Denied),
            (RowSecurity::Owner, &admin, Update, All),
            (RowSecurity::OwnerWrite, &user, Read, All),
            (RowSecurity::OwnerWrite, &user, Update, Own(7)),
            (RowSecurity::OwnerWrite, &guest, Read, All),
            (RowSecurity::OwnerWrite, &reader, Update, Denied),
        ];
        for (rs, who, op, want) in table {
            assert_eq!(
                access(who, &object(rs), op),
                want,
                "{rs:?} {} {op:?}",
                who.role
            );
        }
        let master = Identity {
            master: true,
            ..who("ReadOnly", Some(9))
        };
        assert_eq!(access(&master, &object(RowSecurity::Owner), Delete), All);
        assert!(Own(7).permits_row(Some(7)));
        assert!(!Own(7).permits_row(Some(8)));
        assert!(!Own(7).permits_row(None));
    }
}
