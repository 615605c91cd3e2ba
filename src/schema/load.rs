//! Reading `schema/*.json` into a validated `Schema`.
//!
//! Every error names the file and, where there is one, the field, so a person can fix
//! it without reading code. Nothing here touches the database.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{
    DEFAULT_ROLES, Field, FieldType, ObjectSchema, Operation, Permissions, RESERVED_OBJECTS,
    RowSecurity, Schema, USER_BUILTIN_FIELDS, is_valid_identifier,
};

/// File in the schema directory that declares extra roles: `{ "roles": ["Editor"] }`.
const ROLES_FILE: &str = "_roles.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub file: PathBuf,
    pub field: Option<String>,
    pub message: String,
}

impl SchemaError {
    pub fn new(file: &Path, field: Option<&str>, message: impl Into<String>) -> Self {
        SchemaError {
            file: file.to_path_buf(),
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{}: field `{field}`: {}",
                self.file.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for SchemaError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObject {
    name: String,
    #[serde(default)]
    fields: BTreeMap<String, RawField>,
    permissions: Option<RawPermissions>,
    #[serde(rename = "rowSecurity")]
    row_security: Option<String>,
    #[serde(default)]
    events: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    unique: bool,
    default: Option<Value>,
    object: Option<String>,
    #[serde(rename = "maxLength")]
    max_length: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    create: Vec<String>,
    #[serde(default)]
    update: Vec<String>,
    #[serde(default)]
    delete: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    roles: Vec<String>,
}

/// Loads every `*.json` in `dir`. A missing directory is an empty app (just `users`).
pub fn load_dir(dir: &Path) -> Result<Schema, SchemaError> {
    let mut files = Vec::new();
    if dir.exists() {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            SchemaError::new(
                dir,
                None,
                format!("cannot read the schema directory (--schema-dir): {e}"),
            )
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| SchemaError::new(&path, None, format!("cannot read: {e}")))?;
            files.push((path, text));
        }
    }
    load_files(dir, files)
}

/// The schema `load_dir(dir)` builds from these files, given as (path, text) in the
/// order to read them, without touching the disk (the fuzz targets in `fuzz/` feed it).
pub fn load_files(
    dir: &Path,
    files: impl IntoIterator<Item = (PathBuf, String)>,
) -> Result<Schema, SchemaError> {
    let mut roles: Vec<String> = DEFAULT_ROLES.iter().map(|r| r.to_string()).collect();
    let mut raws: Vec<(PathBuf, RawObject)> = Vec::new();
    for (path, text) in files {
        if path.file_name().is_some_and(|n| n == ROLES_FILE) {
            let raw: RawRoles = serde_json::from_str(&text)
                .map_err(|e| SchemaError::new(&path, None, format!("invalid JSON: {e}")))?;
            for role in raw.roles {
                if !is_valid_identifier(&role) {
                    return Err(SchemaError::new(
                        &path,
                        None,
                        format!("role `{role}` must be letters, digits and _"),
                    ));
                }
                if !roles.contains(&role) {
                    roles.push(role);
                }
            }
            continue;
        }
        let raw: RawObject = serde_json::from_str(&text)
            .map_err(|e| SchemaError::new(&path, None, format!("invalid JSON: {e}")))?;
        raws.push((path, raw));
    }
    if !raws.iter().any(|(_, r)| r.name == "users") {
        raws.push((
            dir.join("users.json"),
            RawObject {
                name: "users".into(),
                fields: BTreeMap::new(),
                permissions: None,
                row_security: None,
                events: Vec::new(),
            },
        ));
    }

    let names: Vec<String> = raws.iter().map(|(_, r)| r.name.clone()).collect();
    let mut objects = BTreeMap::new();
    for (path, raw) in raws {
        let object = build_object(&path, raw, &names, &roles)?;
        if objects.contains_key(&object.name) {
            return Err(SchemaError::new(
                &path,
                None,
                format!("object `{}` is defined twice", object.name),
            ));
        }
        objects.insert(object.name.clone(), Arc::new(object));
    }
    Ok(Schema { objects, roles })
}

fn build_object(
    path: &Path,
    raw: RawObject,
    object_names: &[String],
    roles: &[String],
) -> Result<ObjectSchema, SchemaError> {
    let name = raw.name;
    check_object_name(path, &name, object_names)?;
    let is_users = name == "users";
    let mut fields = Vec::new();
    if is_users {
        fields.extend(users_builtin_fields());
    }
    for (field_name, rf) in raw.fields {
        let field = build_field(path, field_name, rf, &fields, is_users, object_names)?;
        fields.push(field);
    }
    let permissions = permissions_of(path, raw.permissions, roles)?;
    let row_security = row_security_of(path, raw.row_security.as_deref())?;
    for style in &raw.events {
        if style != "loopback" {
            return Err(SchemaError::new(
                path,
                None,
                format!("events: unknown style `{style}` (expected loopback)"),
            ));
        }
    }
    Ok(ObjectSchema {
        name,
        fields,
        permissions,
        row_security,
        events: raw.events,
        file: path.to_path_buf(),
    })
}

/// An identifier, not reserved, not a case variant of another object, and the name of
/// its file.
fn check_object_name(path: &Path, name: &str, object_names: &[String]) -> Result<(), SchemaError> {
    let err = |msg: String| SchemaError::new(path, None, msg);
    if !is_valid_identifier(name) {
        return Err(err(format!(
            "object name `{name}` must start with a letter and hold only letters, digits and _ (at most 63)"
        )));
    }
    // SQLite compares table and column names ignoring ASCII case, so `LB_schema` is
    // the internal `lb_schema` table and `Items` the `items` table there (PostgreSQL
    // keeps them apart): names that differ only in case are refused on both, or the
    // server would alter its own tables, or fail to start with a bare SQL error.
    if RESERVED_OBJECTS.contains(&name) || has_internal_prefix(name) {
        return Err(err(format!("object name `{name}` is reserved")));
    }
    if let Some(other) = object_names
        .iter()
        .find(|other| **other != name && other.eq_ignore_ascii_case(name))
    {
        return Err(err(format!(
            "object name `{name}` differs from `{other}` only in letter case; SQLite would store both in one table"
        )));
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != name {
        return Err(err(format!(
            "the file must be named after its object: `{name}.json`"
        )));
    }
    Ok(())
}

/// One declared field, checked against the fields before it (`fields`).
fn build_field(
    path: &Path,
    field_name: String,
    rf: RawField,
    fields: &[Field],
    is_users: bool,
    object_names: &[String],
) -> Result<Field, SchemaError> {
    let fname = field_name.as_str();
    let err = |msg: String| SchemaError::new(path, Some(fname), msg);
    if !is_valid_identifier(fname) {
        return Err(err(
            "field names must start with a letter and hold only letters, digits and _".into(),
        ));
    }
    if fname.eq_ignore_ascii_case("id") || has_internal_prefix(fname) {
        return Err(err("this field name is reserved".into()));
    }
    if is_users
        && USER_BUILTIN_FIELDS
            .iter()
            .any(|b| b.eq_ignore_ascii_case(fname))
    {
        return Err(err(
            "is a built-in field of users and cannot be redeclared".into()
        ));
    }
    if let Some(other) = fields.iter().find(|f| f.name.eq_ignore_ascii_case(fname)) {
        return Err(err(format!(
            "differs from field `{}` only in letter case; SQLite would make them one column",
            other.name
        )));
    }
    let ty = field_type(&rf, object_names).map_err(err)?;
    if rf.max_length.is_some() && !ty.is_textual() {
        return Err(err(
            "`maxLength` applies only to string and text fields".into()
        ));
    }
    let field = Field {
        name: field_name.clone(),
        ty,
        required: rf.required,
        unique: rf.unique,
        default: rf.default,
        max_length: rf.max_length,
    };
    if let Some(default) = &field.default {
        field
            .check_value(default)
            .map_err(|m| err(format!("default does not fit the type: {m}")))?;
    }
    Ok(field)
}

/// A field's `type` (and `object`, for a `ref`), or what is wrong with them.
fn field_type(rf: &RawField, object_names: &[String]) -> Result<FieldType, String> {
    Ok(match (rf.ty.as_str(), &rf.object) {
        ("string", None) => FieldType::String,
        ("text", None) => FieldType::Text,
        ("int", None) => FieldType::Int,
        ("float", None) => FieldType::Float,
        ("bool", None) => FieldType::Bool,
        ("datetime", None) => FieldType::Datetime,
        ("json", None) => FieldType::Json,
        ("user", None) => FieldType::User,
        ("ref", Some(target)) => {
            if !object_names.contains(target) {
                return Err(format!(
                    "refers to object `{target}`, which no schema file defines"
                ));
            }
            FieldType::Ref(target.clone())
        }
        ("ref", None) => return Err("a `ref` field needs `\"object\": \"<name>\"`".into()),
        (_, Some(_)) => return Err("`object` is only allowed on `ref` fields".into()),
        (other, None) => {
            return Err(format!(
                "unknown type `{other}` (expected string, text, int, float, bool, datetime, json, user or ref)"
            ));
        }
    })
}

/// Admin only when not given; every role named must exist.
fn permissions_of(
    path: &Path,
    raw: Option<RawPermissions>,
    roles: &[String],
) -> Result<Permissions, SchemaError> {
    let permissions = match raw {
        None => Permissions::admin_only(),
        Some(p) => Permissions {
            read: p.read,
            create: p.create,
            update: p.update,
            delete: p.delete,
        },
    };
    for op in [
        Operation::Read,
        Operation::Create,
        Operation::Update,
        Operation::Delete,
    ] {
        for role in permissions.roles_for(op) {
            if !roles.contains(role) {
                return Err(SchemaError::new(
                    path,
                    None,
                    format!(
                        "permissions.{}: unknown role `{role}` (known: {}; declare more in {ROLES_FILE})",
                        op.verb(),
                        roles.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(permissions)
}

fn row_security_of(path: &Path, raw: Option<&str>) -> Result<RowSecurity, SchemaError> {
    match raw {
        None | Some("none") => Ok(RowSecurity::None),
        Some("owner") => Ok(RowSecurity::Owner),
        Some("ownerWrite") => Ok(RowSecurity::OwnerWrite),
        Some(other) => Err(SchemaError::new(
            path,
            None,
            format!("rowSecurity `{other}` is not one of none, owner, ownerWrite"),
        )),
    }
}

/// `lb_…` names belong to livebase's own tables, columns and indexes, in any case.
fn has_internal_prefix(name: &str) -> bool {
    name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("lb_"))
}

fn users_builtin_fields() -> Vec<Field> {
    let text = |name: &str, required: bool, unique: bool| Field {
        name: name.to_string(),
        ty: FieldType::String,
        required,
        unique,
        default: (name == "role").then(|| Value::String("User".into())),
        max_length: None,
    };
    vec![
        text("email", true, true),
        text("firstName", false, false),
        text("lastName", false, false),
        text("role", true, false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<Schema, SchemaError> {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        load_dir(dir.path())
    }

    #[test]
    fn a_good_file_loads_with_users_added() {
        let schema = load(&[(
            "items.json",
            r#"{"name":"items","fields":{"name":{"type":"string","required":true},
                "owner":{"type":"user"}},
                "permissions":{"read":["User"],"create":["User"]},"rowSecurity":"owner"}"#,
        )])
        .unwrap();
        let items = schema.object("items").unwrap();
        assert_eq!(items.row_security, RowSecurity::Owner);
        assert_eq!(items.fields.len(), 2);
        assert!(schema.object("users").unwrap().field("email").is_some());
    }

    #[test]
    fn bad_files_name_the_file_and_field() {
        let cases: &[(&str, &str, Option<&str>, &str)] = &[
            ("items.json", "{not json", None, "invalid JSON"),
            (
                "items.json",
                r#"{"name":"items","fields":{"a":{"type":"money"}}}"#,
                Some("a"),
                "unknown type `money`",
            ),
            (
                "items.json",
                r#"{"name":"items","fields":{"a":{"type":"ref","object":"nope"}}}"#,
                Some("a"),
                "no schema file defines",
            ),
            (
                "items.json",
                r#"{"name":"items","fields":{"a":{"type":"int","default":"x"}}}"#,
                Some("a"),
                "default does not fit",
            ),
            (
                "items.json",
                r#"{"name":"items","permissions":{"read":["Wizard"]}}"#,
                None,
                "unknown role `Wizard`",
            ),
            (
                "items.json",
                r#"{"name":"items","rowSecurity":"mine"}"#,
                None,
                "rowSecurity",
            ),
            (
                "items.json",
                r#"{"name":"items","colour":"red"}"#,
                None,
                "unknown field `colour`",
            ),
            (
                "items.json",
                r#"{"name":"things"}"#,
                None,
                "named after its object",
            ),
            (
                "items.json",
                r#"{"name":"items","fields":{"a b":{"type":"int"}}}"#,
                Some("a b"),
                "letters",
            ),
            (
                "users.json",
                r#"{"name":"users","fields":{"email":{"type":"int"}}}"#,
                Some("email"),
                "built-in",
            ),
            ("general.json", r#"{"name":"general"}"#, None, "reserved"),
            // Case variants SQLite would confuse with a livebase table or column, or
            // with another field.
            (
                "LB_schema.json",
                r#"{"name":"LB_schema"}"#,
                None,
                "reserved",
            ),
            (
                "items.json",
                r#"{"name":"items","fields":{"ID":{"type":"int"}}}"#,
                Some("ID"),
                "reserved",
            ),
            (
                "items.json",
                r#"{"name":"items","fields":{"Lb_owner":{"type":"int"}}}"#,
                Some("Lb_owner"),
                "reserved",
            ),
            (
                "items.json",
                r#"{"name":"items","fields":{"a":{"type":"int"},"A":{"type":"int"}}}"#,
                Some("a"),
                "only in letter case",
            ),
            (
                "users.json",
                r#"{"name":"users","fields":{"Email":{"type":"string"}}}"#,
                Some("Email"),
                "built-in",
            ),
            (
                "Users.json",
                r#"{"name":"Users"}"#,
                None,
                "only in letter case",
            ),
        ];
        for (file, body, field, needle) in cases {
            let e = load(&[(file, body)]).expect_err(body);
            assert!(e.file.ends_with(file), "{e}");
            assert_eq!(e.field.as_deref(), *field, "{e}");
            assert!(e.to_string().contains(needle), "`{e}` lacks `{needle}`");
        }
    }

    #[test]
    fn objects_differing_only_in_case_are_refused() {
        let e = load(&[
            ("Items.json", r#"{"name":"Items"}"#),
            ("items.json", r#"{"name":"items"}"#),
        ])
        .expect_err("Items and items would be one SQLite table");
        assert!(e.file.ends_with("Items.json"), "{e}");
        assert!(e.to_string().contains("only in letter case"), "{e}");
    }

    #[test]
    fn declared_roles_can_be_used() {
        let schema = load(&[
            ("_roles.json", r#"{"roles":["Editor"]}"#),
            (
                "posts.json",
                r#"{"name":"posts","permissions":{"update":["Editor"]}}"#,
            ),
        ])
        .unwrap();
        assert!(schema.has_role("Editor"));
    }
}
