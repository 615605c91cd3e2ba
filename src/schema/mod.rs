//! The application's data model: objects, fields, permissions, row security.
//!
//! Owns the in-memory shape of `schema/*.json` once validated. Loading and checking the
//! files is in `load`; checking a client's value against a field is in `field`, and the
//! typed value it yields is `value::SqlValue`. This module knows nothing of SQL: the
//! store turns a `Schema` into tables and binds those values.

mod field;
mod load;
pub mod value;

pub use field::json_has_nul;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use load::{SchemaError, load_dir, load_files};

/// Roles every app has; schema files may declare more in `_roles.json`.
pub const DEFAULT_ROLES: [&str; 4] = ["Admin", "User", "ReadOnly", "Public"];

/// Names that cannot be objects: they are URL segments or internal tables.
pub const RESERVED_OBJECTS: [&str; 3] = ["action", "general", "function"];

/// The built-in users object's own fields, which a `users.json` may not redeclare.
pub const USER_BUILTIN_FIELDS: [&str; 4] = ["email", "firstName", "lastName", "role"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    String,
    Text,
    Int,
    Float,
    Bool,
    Datetime,
    Json,
    /// A reference to a row of the built-in `users` object.
    User,
    /// A reference to a row of another object.
    Ref(String),
}

impl FieldType {
    /// The name used in schema files (and stored to detect type changes).
    pub fn describe(&self) -> String {
        match self {
            FieldType::String => "string".into(),
            FieldType::Text => "text".into(),
            FieldType::Int => "int".into(),
            FieldType::Float => "float".into(),
            FieldType::Bool => "bool".into(),
            FieldType::Datetime => "datetime".into(),
            FieldType::Json => "json".into(),
            FieldType::User => "user".into(),
            FieldType::Ref(o) => format!("ref:{o}"),
        }
    }

    /// Fields that take text search and the string operators.
    pub fn is_textual(&self) -> bool {
        matches!(self, FieldType::String | FieldType::Text)
    }

    /// The object a reference field points to.
    pub fn referenced_object(&self) -> Option<&str> {
        match self {
            FieldType::User => Some("users"),
            FieldType::Ref(o) => Some(o),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    pub required: bool,
    pub unique: bool,
    pub default: Option<serde_json::Value>,
    /// Longest accepted string, in characters (strings default to 255).
    pub max_length: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowSecurity {
    /// Role permissions alone decide.
    None,
    /// Each user reads and writes only the rows they created.
    Owner,
    /// Readers read every row; only the creator updates or deletes.
    OwnerWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Read,
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn verb(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// Which roles may do each operation on an object.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    pub read: Vec<String>,
    pub create: Vec<String>,
    pub update: Vec<String>,
    pub delete: Vec<String>,
}

impl Permissions {
    pub fn roles_for(&self, op: Operation) -> &[String] {
        match op {
            Operation::Read => &self.read,
            Operation::Create => &self.create,
            Operation::Update => &self.update,
            Operation::Delete => &self.delete,
        }
    }

    /// Objects without a `permissions` block are closed: only Admin (and the master
    /// token) may touch them, so forgetting the block never exposes data.
    pub fn admin_only() -> Self {
        let admin = vec!["Admin".to_string()];
        Permissions {
            read: admin.clone(),
            create: admin.clone(),
            update: admin.clone(),
            delete: admin,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ObjectSchema {
    pub name: String,
    /// Fields in column order; `id` is implicit and never listed.
    pub fields: Vec<Field>,
    pub permissions: Permissions,
    pub row_security: RowSecurity,
    /// Extra realtime event styles (`loopback`), used by the realtime layer.
    pub events: Vec<String>,
    /// The file it came from, for error messages.
    pub file: PathBuf,
}

impl ObjectSchema {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn is_users(&self) -> bool {
        self.name == "users"
    }

    /// The object as the dashboard shows it and as nodes compare it: every field with
    /// its type and constraints, permissions, row security and event styles (not the
    /// file it came from).
    pub fn describe(&self) -> serde_json::Value {
        use serde_json::{Value, json};
        let object = self;
        let fields: Vec<Value> = object
            .fields
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "type": match f.ty.referenced_object() {
                        Some(_) if f.ty == crate::schema::FieldType::User => "user".to_string(),
                        Some(_) => "ref".to_string(),
                        None => f.ty.describe(),
                    },
                    "object": f.ty.referenced_object(),
                    "required": f.required,
                    "unique": f.unique,
                    "default": f.default,
                    "maxLength": f.max_length,
                })
            })
            .collect();
        let p = &object.permissions;
        json!({
            "name": object.name,
            "fields": fields,
            "permissions": { "read": p.read, "create": p.create, "update": p.update, "delete": p.delete },
            "rowSecurity": match object.row_security {
                RowSecurity::None => "none",
                RowSecurity::Owner => "owner",
                RowSecurity::OwnerWrite => "ownerWrite",
            },
            "events": object.events,
        })
    }

    /// Whether its changes are also published under LoopBack event names.
    pub fn publishes_loopback(&self) -> bool {
        self.events.iter().any(|e| e == "loopback")
    }
}

/// The validated model. Cloning is shallow: objects are shared behind `Arc`.
#[derive(Debug, Clone)]
pub struct Schema {
    pub objects: BTreeMap<String, Arc<ObjectSchema>>,
    pub roles: Vec<String>,
}

impl Schema {
    pub fn object(&self, name: &str) -> Option<&Arc<ObjectSchema>> {
        self.objects.get(name)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Object and field names become quoted SQL identifiers; this keeps them plain.
pub fn is_valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}
