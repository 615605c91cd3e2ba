//! Turning a client's JSON body into checked column values for one object.
//!
//! Unknown fields, wrong types, missing required fields and (for `users`) role changes
//! by non-admins are refused here, before anything touches the database.

use serde_json::{Map, Value};

use crate::auth::Identity;
use crate::error::ApiError;
use crate::schema::value::SqlValue;
use crate::schema::{ObjectSchema, Schema};

/// Keys a client may send back unchanged from a read, which are not fields.
const METADATA_KEY: &str = "__metadata";

pub type Values = Vec<(String, SqlValue)>;

pub fn for_create(
    schema: &Schema,
    object: &ObjectSchema,
    input: &Map<String, Value>,
    who: &Identity,
) -> Result<Values, ApiError> {
    if input.contains_key("id") {
        return Err(ApiError::bad(
            "`id` is assigned by the server; leave it out",
        ));
    }
    let mut values = checked_fields(schema, object, input, who)?;
    for field in &object.fields {
        if input.contains_key(&field.name) {
            continue;
        }
        if let Some(default) = &field.default {
            let value = field.check_value(default).map_err(ApiError::BadRequest)?;
            values.push((field.name.clone(), value));
        }
    }
    for field in object.fields.iter().filter(|f| f.required) {
        let present = values
            .iter()
            .any(|(name, v)| *name == field.name && *v != SqlValue::Null);
        if !present {
            return Err(ApiError::bad(format!("field `{}` is required", field.name)));
        }
    }
    Ok(values)
}

pub fn for_update(
    schema: &Schema,
    object: &ObjectSchema,
    id: i64,
    input: &Map<String, Value>,
    who: &Identity,
) -> Result<Values, ApiError> {
    if let Some(given) = input.get("id") {
        let same = given.as_i64() == Some(id) || given.as_str() == Some(id.to_string().as_str());
        if !same {
            return Err(ApiError::bad(
                "`id` in the body differs from the id in the path",
            ));
        }
    }
    let values = checked_fields(schema, object, input, who)?;
    for (name, value) in &values {
        let required = object.field(name).is_some_and(|f| f.required);
        if required && *value == SqlValue::Null {
            return Err(ApiError::bad(format!(
                "field `{name}` is required and cannot be null"
            )));
        }
    }
    Ok(values)
}

fn checked_fields(
    schema: &Schema,
    object: &ObjectSchema,
    input: &Map<String, Value>,
    who: &Identity,
) -> Result<Values, ApiError> {
    let mut values = Vec::with_capacity(input.len());
    for (key, raw) in input {
        if key == METADATA_KEY || key == "id" {
            continue;
        }
        let Some(field) = object.field(key) else {
            if object.is_users() && key == "password" {
                return Err(ApiError::bad(
                    "passwords are changed through /1/user/changePassword, not on the users row",
                ));
            }
            return Err(ApiError::bad(format!(
                "unknown field `{key}` for object `{}`",
                object.name
            )));
        };
        let mut value = field.check_value(raw).map_err(ApiError::BadRequest)?;
        if object.is_users() {
            value = check_user_field(schema, key, value, who)?;
        }
        values.push((key.clone(), value));
    }
    Ok(values)
}

fn check_user_field(
    schema: &Schema,
    key: &str,
    value: SqlValue,
    who: &Identity,
) -> Result<SqlValue, ApiError> {
    match (key, value) {
        ("email", SqlValue::Text(email)) => {
            let email = email.trim().to_lowercase();
            let looks_right = email.len() >= 3
                && email.contains('@')
                && !email.starts_with('@')
                && !email.ends_with('@')
                && !email.chars().any(char::is_whitespace);
            if !looks_right {
                return Err(ApiError::bad(format!("`{email}` is not an email address")));
            }
            Ok(SqlValue::Text(email))
        }
        ("role", SqlValue::Text(role)) => {
            if !who.is_admin() {
                return Err(ApiError::Forbidden(
                    "only Admin may set a user's role".into(),
                ));
            }
            if !schema.has_role(&role) {
                return Err(ApiError::bad(format!(
                    "unknown role `{role}` (known: {})",
                    schema.roles.join(", ")
                )));
            }
            Ok(SqlValue::Text(role))
        }
        (_, value) => Ok(value),
    }
}
