//! Room names: the whole delivery policy of livebase's realtime layer is which rooms a
//! socket joins, so every name is made here and nowhere else.
//!
//! Row filtering is by room layout, not by a loop over sockets: a socket whose user may
//! read every row of an object joins that object's shared room for a delivery kind; a
//! socket whose user may read only its own rows (owner row security) joins the object's
//! room for that user. A committed change then goes to the shared room plus the room of
//! the row's owner: one emit, whatever the number of sockets, and the same emit works
//! across nodes through an adapter.

use crate::auth::Access;
use crate::schema::{ObjectSchema, RowSecurity};

/// Every authenticated socket.
pub const AUTHENTICATED: &str = "all";

/// A delivery kind that is filtered by the permission function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// `db-<object>` channel members (`db_created` / `db_updated` / `db_deleted`).
    DbChannel,
    /// Sockets that listed an object through a Sails `get` and so watch its new rows.
    SailsWatch,
    /// LoopBack `/<Object>/POST` names, joined automatically for opted-in objects.
    LoopBack,
}

impl Feed {
    fn prefix(self) -> &'static str {
        match self {
            Feed::DbChannel => "db",
            Feed::SailsWatch => "sw",
            Feed::LoopBack => "lb",
        }
    }
}

/// The socket's user (usernames are unique emails, stored in lower case, or `Guest`
/// for anonymous sockets), so `emitUsers(["Ann@Example.com"])` finds ann@example.com.
pub fn user(username: &str) -> String {
    format!("user:{}", username.to_lowercase())
}

pub fn role(role: &str) -> String {
    format!("role:{role}")
}

/// The sockets of one sign-in (an access token's session), which a password change
/// made by that sign-in leaves connected.
pub fn session(session: &str) -> String {
    format!("{SESSION_PREFIX}{session}")
}

const SESSION_PREFIX: &str = "sess:";

/// Whether the socket list (`GET /1/admin/sockets`) may show `room`: a session's room
/// names the session id its access token carries, which leaves the server in no answer.
/// Every other room names only what the list shows anyway (a user, a role, a channel,
/// an object, a row, the socket's public id).
pub fn is_listed(room: &str) -> bool {
    !room.starts_with(SESSION_PREFIX)
}

/// One socket alone, by its public id: how an emit leaves out a socket that is behind.
pub fn socket(public_id: &str) -> String {
    format!("{SOCKET_PREFIX}{public_id}")
}

const SOCKET_PREFIX: &str = "sock:";

/// The public id a socket's own room (`socket`) names; `None` for any other room.
pub fn socket_of(room: &str) -> Option<&str> {
    room.strip_prefix(SOCKET_PREFIX)
}

/// The name clients `join` for an object's database channel: `db-<object>`.
pub fn db_channel(object: &str) -> String {
    format!("{DB_CHANNEL_PREFIX}{object}")
}

/// The object a `db-<object>` channel name is for; `None` for a plain channel.
pub fn db_channel_object(name: &str) -> Option<&str> {
    name.strip_prefix(DB_CHANNEL_PREFIX)
}

const DB_CHANNEL_PREFIX: &str = "db-";

/// A StaticBackend channel joined by name.
pub fn channel(name: &str) -> String {
    format!("chan:{name}")
}

/// Whether `room` is one a socket joined by name with `join` (a channel or a db
/// channel's reader room), the rooms `--socket-max-channels` counts.
pub fn is_joined_channel(room: &str) -> bool {
    room.starts_with("chan:")
        || room
            .strip_prefix(Feed::DbChannel.prefix())
            .is_some_and(|rest| rest.starts_with(':'))
}

/// The name a client joined `room` by, if `room` is one `join` puts sockets in: `chan:x`
/// is `x`; a db channel's reader room (shared or per user) is `db-<object>`.
pub fn joined_channel_name(room: &str) -> Option<String> {
    if let Some(name) = room.strip_prefix("chan:") {
        return Some(name.to_string());
    }
    let rest = room
        .strip_prefix(Feed::DbChannel.prefix())?
        .strip_prefix(':')?;
    let object = rest.split(':').next().filter(|o| !o.is_empty())?;
    Some(db_channel(object))
}

/// Sockets subscribed to one row through a Sails `get` or `post`.
pub fn row(object: &str, id: i64) -> String {
    format!("row:{object}:{id}")
}

/// The room a reader with `access` joins for `feed` of `object`; `None` if it may not read.
pub fn reader(feed: Feed, object: &ObjectSchema, access: Access) -> Option<String> {
    let prefix = feed.prefix();
    match access {
        Access::Denied => None,
        Access::All => Some(format!("{prefix}:{}", object.name)),
        Access::Own(user) => Some(format!("{prefix}:{}:{user}", object.name)),
    }
}

/// The rooms a change to a row created by `owner` goes to: exactly the readers
/// `reader` placed, so a socket gets the event only if `access(..).permits_row(owner)`.
pub fn readers_of_row(feed: Feed, object: &ObjectSchema, owner: Option<i64>) -> Vec<String> {
    let mut rooms = vec![format!("{}:{}", feed.prefix(), object.name)];
    if let (RowSecurity::Owner | RowSecurity::OwnerWrite, Some(owner)) =
        (object.row_security, owner)
    {
        rooms.push(format!("{}:{}:{owner}", feed.prefix(), object.name));
    }
    rooms
}

/// Whom one emit is for. Its rooms are `rooms()`, and the admin trace explains a
/// delivery by the same value (`trace`), so what was addressed and how it is explained
/// cannot drift apart.
#[derive(Debug, Clone, Copy)]
pub enum Audience<'a> {
    /// `emitUsers`: the sockets of these usernames.
    Users(&'a [String]),
    /// `emitRole`.
    Role(&'a str),
    /// `emitAll`: every authenticated socket.
    Authenticated,
    /// The members of a channel joined by name (`chan_in`, an action's `broadcast`).
    Channel(&'a str),
    /// The readers of row `id` through `feed` (`readers_of_row`); for Sails also the
    /// sockets subscribed to that row.
    Readers {
        feed: Feed,
        object: &'a ObjectSchema,
        owner: Option<i64>,
        id: i64,
    },
}

impl Audience<'_> {
    pub fn rooms(&self) -> Vec<String> {
        match *self {
            Audience::Users(users) => users.iter().map(|u| user(u)).collect(),
            Audience::Role(name) => vec![role(name)],
            Audience::Authenticated => vec![AUTHENTICATED.to_string()],
            Audience::Channel(name) => vec![channel(name)],
            Audience::Readers {
                feed,
                object,
                owner,
                id,
            } => {
                let mut rooms = readers_of_row(feed, object, owner);
                if feed == Feed::SailsWatch {
                    rooms.push(row(&object.name, id));
                }
                rooms
            }
        }
    }

    /// The `kind` label of `livebase_socket_emits_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Audience::Users(_) => "users",
            Audience::Role(_) => "role",
            Audience::Authenticated => "all",
            Audience::Channel(_) => "channel",
            Audience::Readers { feed, .. } => match feed {
                Feed::DbChannel => "db",
                Feed::SailsWatch => "sails",
                Feed::LoopBack => "loopback",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Identity, access};
    use crate::schema::{Operation, Permissions};

    fn object(row_security: RowSecurity) -> ObjectSchema {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect();
        ObjectSchema {
            name: "notes".into(),
            fields: vec![],
            permissions: Permissions {
                read: roles(&["User", "ReadOnly"]),
                create: roles(&["User"]),
                update: roles(&["User"]),
                delete: roles(&[]),
            },
            row_security,
            events: vec![],
            file: "notes.json".into(),
        }
    }

    fn who(role: &str, id: i64) -> Identity {
        Identity {
            user_id: Some(id),
            username: format!("u{id}@x"),
            role: role.into(),
            master: false,
            session: None,
        }
    }

    #[test]
    fn joined_rooms_name_the_channel_the_client_joined() {
        let object = object(RowSecurity::Owner);
        assert_eq!(
            joined_channel_name(&channel("room1")).as_deref(),
            Some("room1")
        );
        for scope in [Access::All, Access::Own(7)] {
            let room = reader(Feed::DbChannel, &object, scope).unwrap();
            assert_eq!(joined_channel_name(&room).as_deref(), Some("db-notes"));
        }
        for other in [
            user("a@x"),
            role("User"),
            AUTHENTICATED.to_string(),
            socket("abc"),
            row("notes", 1),
            reader(Feed::SailsWatch, &object, Access::All).unwrap(),
            reader(Feed::LoopBack, &object, Access::Own(7)).unwrap(),
        ] {
            assert_eq!(joined_channel_name(&other), None, "{other}");
        }
    }

    /// The room layout agrees with `permits_row` for every mode, role and owner.
    #[test]
    fn rooms_deliver_exactly_what_access_permits() {
        for mode in [
            RowSecurity::None,
            RowSecurity::Owner,
            RowSecurity::OwnerWrite,
        ] {
            let object = object(mode);
            for reader_identity in [
                who("Admin", 1),
                who("User", 2),
                who("User", 3),
                who("ReadOnly", 4),
                who("Public", 5),
            ] {
                let scope = access(&reader_identity, &object, Operation::Read);
                let joined = reader(Feed::DbChannel, &object, scope);
                for owner in [None, Some(1), Some(2), Some(3), Some(4)] {
                    let targets = readers_of_row(Feed::DbChannel, &object, owner);
                    let delivered = joined.as_ref().is_some_and(|r| targets.contains(r));
                    assert_eq!(
                        delivered,
                        scope.permits_row(owner),
                        "{mode:?} {} owner {owner:?}",
                        reader_identity.role
                    );
                }
            }
        }
    }
}
