//! What the fuzz targets share: the example app's schema (the repository's `schema/`,
//! read without touching the disk) and the checks every parsed list query must pass
//! once it is turned into SQL for both databases.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use livebase::schema::{ObjectSchema, Schema, load_files};
use livebase::store::statements::{self, Condition, FilterOp, ListQuery};
use livebase::schema::value::SqlValue;
use livebase::store::{Dialect, Sql};

/// The example app's schema files, as `fuzz/run` and CI see them.
pub const SCHEMA_FILES: [(&str, &str); 4] = [
    ("items.json", include_str!("../../schema/items.json")),
    ("lists.json", include_str!("../../schema/lists.json")),
    ("notes.json", include_str!("../../schema/notes.json")),
    ("users.json", include_str!("../../schema/users.json")),
];

/// The example app's validated schema (every field type, every row security).
pub fn example_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let files = SCHEMA_FILES
            .iter()
            .map(|(name, text)| (Path::new("schema").join(name), text.to_string()));
        load_files(Path::new("schema"), files).expect("the example schema loads")
    })
}

/// The example objects, in a fixed order a selector byte can index.
pub fn example_objects() -> &'static [Arc<ObjectSchema>] {
    static OBJECTS: OnceLock<Vec<Arc<ObjectSchema>>> = OnceLock::new();
    OBJECTS.get_or_init(|| example_schema().objects.values().cloned().collect())
}

/// A path in the schema directory, for `load_files`.
pub fn schema_path(name: &str) -> PathBuf {
    Path::new("schema").join(name)
}

/// Everything that must hold for a `ListQuery` that `records::query::parse` accepted:
/// building its SQL never panics, on either database; every value is a bound parameter
/// (placeholders and arguments agree); no NUL reaches the database; and every text
/// pattern matches the very value it was built from, with its regex (SQLite) compiling
/// as the database will compile it.
pub fn check_list_query(object: &ObjectSchema, query: &ListQuery, max_page_size: u32) {
    assert!((1..=max_page_size).contains(&query.page_size), "{query:?}");
    assert!(query.page_number >= 1, "{query:?}");
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        let mut sql = Sql::new(dialect);
        statements::list(&mut sql, object, query);
        check_sql(&sql);
        let mut sql = Sql::new(dialect);
        statements::count(&mut sql, object, query);
        check_sql(&sql);
    }
    for condition in &query.conditions {
        assert!(
            condition.field == "id" || object.field(&condition.field).is_some(),
            "{condition:?}"
        );
        check_text_match(object, condition);
    }
    if let Some(term) = &query.search {
        assert!(!term.contains('\0'));
        let probe = Condition {
            field: "search".into(),
            ty: livebase::schema::FieldType::Text,
            op: FilterOp::Contains,
            values: vec![SqlValue::Text(term.clone())],
        };
        check_patterns(&probe, term, "search");
    }
}

/// Placeholders and arguments agree, and no argument carries a NUL.
fn check_sql(sql: &Sql) {
    let placeholders = match sql.dialect {
        Dialect::Sqlite => sql.text.matches('?').count(),
        Dialect::Postgres => sql.text.matches('$').count(),
    };
    assert_eq!(placeholders, sql.args.len(), "{}", sql.text);
    for arg in &sql.args {
        let has_nul = match arg {
            SqlValue::Text(s) => s.contains('\0'),
            SqlValue::Json(v) => livebase::schema::json_has_nul(v),
            _ => false,
        };
        assert!(!has_nul, "a NUL reached the database: {arg:?}");
        if let SqlValue::Float(f) = arg {
            assert!(f.is_finite(), "non-finite float bound: {f}");
        }
    }
}

fn check_text_match(object: &ObjectSchema, condition: &Condition) {
    if !matches!(
        condition.op,
        FilterOp::StartsWith | FilterOp::EndsWith | FilterOp::Contains | FilterOp::NotContains
    ) {
        return;
    }
    let Some(SqlValue::Text(value)) = condition.values.first() else {
        panic!("a text operator without a text value: {condition:?}");
    };
    assert!(
        object
            .field(&condition.field)
            .is_some_and(|f| f.ty.is_textual()),
        "{condition:?}"
    );
    check_patterns(condition, value, &condition.field);
}

/// Builds `condition` alone on both databases and checks the one pattern each binds.
fn check_patterns(condition: &Condition, value: &str, field: &str) {
    let mut condition = condition.clone();
    condition.field = if field == "search" {
        "probe".into()
    } else {
        field.into()
    };
    let query = ListQuery {
        conditions: vec![condition.clone()],
        page_size: 1,
        page_number: 1,
        ..ListQuery::default()
    };
    let object = probe_object(&condition.field);
    // SQLite: `"field" REGEXP ?` with the regex crate, as sqlx registers it.
    let mut sql = Sql::new(Dialect::Sqlite);
    statements::count(&mut sql, &object, &query);
    let [SqlValue::Text(pattern)] = sql.args.as_slice() else {
        panic!("expected one pattern: {sql:?}");
    };
    let regex = regex::Regex::new(pattern)
        .unwrap_or_else(|e| panic!("pattern for {value:?} does not compile: {e}"));
    let (probe, inside) = match condition.op {
        FilterOp::StartsWith => (format!("{value}tail"), "starts"),
        FilterOp::EndsWith => (format!("head{value}"), "ends"),
        _ => (format!("head{value}tail"), "contains"),
    };
    assert!(regex.is_match(value), "{pattern} does not match {value:?}");
    assert!(
        regex.is_match(&probe),
        "{pattern} ({inside}) misses {probe:?}"
    );
    let upper = value.to_uppercase();
    if upper.chars().count() == value.chars().count()
        && upper.to_lowercase() == value.to_lowercase()
    {
        assert!(
            regex.is_match(&upper),
            "{pattern} is case-sensitive for {value:?}"
        );
    }
    // PostgreSQL: `LOWER("field") LIKE ? ESCAPE '\'`; unescaped, it is the value.
    let mut sql = Sql::new(Dialect::Postgres);
    statements::count(&mut sql, &object, &query);
    let [SqlValue::Text(pattern)] = sql.args.as_slice() else {
        panic!("expected one pattern: {sql:?}");
    };
    let inner = match condition.op {
        FilterOp::StartsWith => pattern.strip_suffix('%'),
        FilterOp::EndsWith => pattern.strip_prefix('%'),
        _ => pattern.strip_prefix('%').and_then(|p| p.strip_suffix('%')),
    }
    .unwrap_or_else(|| panic!("LIKE pattern {pattern:?} lacks its wildcard"));
    let mut literal = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => literal.push(chars.next().expect("dangling escape in a LIKE pattern")),
            '%' | '_' => panic!("unescaped wildcard in {pattern:?} for {value:?}"),
            c => literal.push(c),
        }
    }
    assert_eq!(literal, value.to_lowercase(), "LIKE pattern {pattern:?}");
}

/// An object with one text field, to build a single condition's SQL.
fn probe_object(field: &str) -> ObjectSchema {
    let object = example_schema().object("notes").expect("notes exists");
    let mut object = (**object).clone();
    object.fields = vec![livebase::schema::Field {
        name: field.to_string(),
        ty: livebase::schema::FieldType::Text,
        required: false,
        unique: false,
        default: None,
        max_length: None,
    }];
    object
}
