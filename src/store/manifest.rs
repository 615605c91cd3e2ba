//! What every node of one app must serve alike: the schema (each object as
//! `ObjectSchema::describe` gives it, and the roles) and the named queries (each file's
//! text). A node whose files differ from a running node's would answer the same
//! request differently, so it is refused before it changes anything, naming the first
//! difference. With no running node the start goes on: that is how a new schema is
//! deployed (stop every node, start the new ones).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::nodes::{self, Node};
use super::{Dialect, Store, migrate};
use crate::schema::Schema;
use crate::schema::value::SqlValue;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    objects: BTreeMap<String, Value>,
    roles: Vec<String>,
    /// `<name>.sql` → its text.
    queries: BTreeMap<String, String>,
}

impl Manifest {
    /// This node's files. An unreadable queries directory is left to `Queries::load`,
    /// which names the file.
    pub fn of(schema: &Schema, queries_dir: &Path) -> Manifest {
        let mut queries = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(queries_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !name.ends_with(".sql") {
                    continue;
                }
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    queries.insert(name, text);
                }
            }
        }
        Manifest {
            objects: schema
                .objects
                .iter()
                .map(|(name, o)| (name.clone(), o.describe()))
                .collect(),
            roles: schema.roles.clone(),
            queries,
        }
    }

    /// The first way `self` (this node) differs from `other` (a running node), said
    /// from this node's side; `None` when they agree.
    pub fn difference(&self, other: &Manifest) -> Option<String> {
        for (name, mine) in &self.objects {
            let Some(theirs) = other.objects.get(name) else {
                return Some(format!("schema object `{name}` is here but not there"));
            };
            if let Some(what) = object_difference(mine, theirs) {
                return Some(format!("schema object `{name}`: {what}"));
            }
        }
        if let Some(name) = other
            .objects
            .keys()
            .find(|n| !self.objects.contains_key(*n))
        {
            return Some(format!("schema object `{name}` is there but not here"));
        }
        if self.roles != other.roles {
            return Some(format!(
                "roles: {:?} here, {:?} there",
                self.roles, other.roles
            ));
        }
        for (file, text) in &self.queries {
            match other.queries.get(file) {
                None => return Some(format!("queries/{file} is here but not there")),
                Some(theirs) if theirs != text => {
                    return Some(format!("queries/{file} differs"));
                }
                Some(_) => {}
            }
        }
        if let Some(file) = other
            .queries
            .keys()
            .find(|f| !self.queries.contains_key(*f))
        {
            return Some(format!("queries/{file} is there but not here"));
        }
        None
    }
}

/// The first difference between two `describe`d objects, field by field first.
fn object_difference(mine: &Value, theirs: &Value) -> Option<String> {
    if mine == theirs {
        return None;
    }
    let fields = |v: &Value| -> BTreeMap<String, Value> {
        v["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["name"].as_str()?.to_string(), f.clone())))
            .collect()
    };
    let (my_fields, their_fields) = (fields(mine), fields(theirs));
    for (name, field) in &my_fields {
        match their_fields.get(name) {
            None => return Some(format!("field `{name}` is here but not there")),
            Some(other) if other != field => {
                if field["type"] != other["type"] {
                    return Some(format!(
                        "field `{name}`: {} here, {} there",
                        field["type"], other["type"]
                    ));
                }
                return Some(format!("field `{name}`: {field} here, {other} there"));
            }
            Some(_) => {}
        }
    }
    if let Some(name) = their_fields.keys().find(|n| !my_fields.contains_key(*n)) {
        return Some(format!("field `{name}` is there but not here"));
    }
    for part in ["permissions", "rowSecurity", "events", "fields"] {
        if mine[part] != theirs[part] {
            return Some(format!(
                "{part}: {} here, {} there",
                mine[part], theirs[part]
            ));
        }
    }
    Some("differs".into())
}

/// Refuses the start when a running node serves other files; else records this node's
/// manifest beside its `lb_nodes` row, under the start lock, so of two nodes starting
/// together with different files the second is refused. PostgreSQL only.
pub async fn agree(store: &Store, node: &Node, manifest: &Manifest) -> anyhow::Result<()> {
    if store.dialect() != Dialect::Postgres {
        return Ok(());
    }
    let failed =
        |e: sqlx::Error| anyhow::anyhow!("comparing this node's app with the running nodes': {e}");
    let mut tx = store.begin().await.map_err(failed)?;
    migrate::lock(&mut tx).await.map_err(failed)?;
    for (other, listen, text) in nodes::others_manifests(&mut tx, node)
        .await
        .map_err(failed)?
    {
        let Ok(theirs) = serde_json::from_str::<Manifest>(&text) else {
            // A node of another version: its manifest is not comparable.
            tracing::warn!(node = %other, "a running node's manifest is unreadable; not compared");
            continue;
        };
        if let Some(what) = manifest.difference(&theirs) {
            // A refused node is no node: its row (written with the secrets) goes.
            let mut sql = tx.sql();
            sql.push("DELETE FROM lb_nodes WHERE node_id = ")
                .bind(SqlValue::Text(node.id.clone()));
            tx.execute(&sql).await.map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            anyhow::bail!(
                "this node's app differs from the running node {other} (at {listen}): {what}. Nodes of one app serve the same schema/ and queries/ files: deploy the same files, or stop every node to change them (a node killed without SIGTERM counts as running for 5 s)"
            );
        }
    }
    let mut sql = tx.sql();
    sql.push("UPDATE lb_nodes SET manifest = ")
        .bind(SqlValue::Text(
            serde_json::to_string(manifest).expect("a manifest serialises"),
        ))
        .push(" WHERE node_id = ")
        .bind(SqlValue::Text(node.id.clone()));
    tx.execute(&sql).await.map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(price: &str, queries: &[(&str, &str)]) -> Manifest {
        Manifest {
            objects: BTreeMap::from([(
                "items".to_string(),
                json!({ "name": "items", "fields": [
                    { "name": "name", "type": "string" },
                    { "name": "price", "type": price },
                ], "permissions": {}, "rowSecurity": "none", "events": [] }),
            )]),
            roles: vec!["Admin".into(), "User".into()],
            queries: queries
                .iter()
                .map(|(f, t)| (f.to_string(), t.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_first_difference_is_named() {
        let here = manifest("float", &[("top.sql", "SELECT 1")]);
        assert_eq!(here.difference(&here.clone()), None);
        assert_eq!(
            here.difference(&manifest("int", &[("top.sql", "SELECT 1")])),
            Some(r#"schema object `items`: field `price`: "float" here, "int" there"#.into())
        );
        assert_eq!(
            here.difference(&manifest("float", &[("top.sql", "SELECT 2")])),
            Some("queries/top.sql differs".into())
        );
        assert_eq!(
            here.difference(&manifest("float", &[])),
            Some("queries/top.sql is here but not there".into())
        );
        let mut fewer = here.clone();
        fewer.objects.clear();
        assert_eq!(
            fewer.difference(&here),
            Some("schema object `items` is there but not here".into())
        );
        let mut roles = here.clone();
        roles.roles.push("Editor".into());
        assert!(roles.difference(&here).unwrap().starts_with("roles:"));
    }
}
