//! Nodes of one app serve the same schema and queries: a node whose files differ from
//! a running node's is refused before it changes anything, naming the difference; with
//! no node running, the new files are a deploy and go through.

use reqwest::Method;
use serde_json::json;

use crate::common::Cred;

fn items(price: &str) -> String {
    json!({
        "name": "items",
        "fields": { "name": { "type": "string" }, "price": { "type": price } },
        "permissions": { "read": ["Admin"], "create": ["Admin"], "update": ["Admin"], "delete": ["Admin"] }
    })
    .to_string()
}

const TOP: &str = "-- roles: Admin\nSELECT COUNT(*) AS n FROM items\n";

#[tokio::test]
async fn a_node_with_other_schema_or_queries_is_refused_beside_a_running_one() {
    let float = items("float");
    let Some(mut c) = super::on_redis(
        1,
        &[("schema/items.json", &float), ("queries/top.sql", TOP)],
        &[],
    )
    .await
    else {
        return;
    };
    let admin = c
        .sign_in(0, super::ADMIN_EMAIL, super::ADMIN_PASSWORD)
        .await;
    // The next node's files: `price` is an int there.
    std::fs::write(c.dir(1).join("schema/items.json"), items("int")).unwrap();
    let refused = c.refused(&[]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains(r#"schema object `items`: field `price`: "int" here, "float" there"#),
        "{refused:?}"
    );
    // Nothing changed: the running node still stores a fractional price.
    let (status, row) = c
        .req(
            0,
            Method::POST,
            "/1/objects/items",
            &Cred::Bearer(admin.clone()),
            Some(json!({ "name": "a", "price": 1.5 })),
        )
        .await;
    assert_eq!(status, 200, "{row}");
    let (status, row) = c
        .get(0, "/1/objects/items/1", &Cred::Bearer(admin.clone()))
        .await;
    assert_eq!((status, &row["price"]), (200, &json!(1.5)), "{row}");

    // Same schema, another query text.
    std::fs::write(
        c.dir(2).join("queries/top.sql"),
        "-- roles: Admin\nSELECT 1 AS n\n",
    )
    .unwrap();
    let refused = c.refused(&[]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("queries/top.sql differs"),
        "{refused:?}"
    );

    // Same files: a second node joins, and each lists both as live.
    c.add(1);
    let (status, _) = c
        .get(1, "/1/objects/items", &Cred::Bearer(admin.clone()))
        .await;
    assert_eq!(status, 200);
    let mut ids = Vec::new();
    for i in 0..2 {
        let (status, body) = c
            .get(i, "/1/admin/nodes", &Cred::Bearer(admin.clone()))
            .await;
        assert_eq!(status, 200, "{body}");
        let listed = body["data"].as_array().unwrap();
        assert_eq!(listed.len(), 2, "refused nodes are not listed: {body}");
        assert!(listed.iter().all(|n| n["live"] == json!(true)), "{body}");
        let me: Vec<_> = listed.iter().filter(|n| n["self"] == json!(true)).collect();
        assert_eq!(me.len(), 1, "{body}");
        assert_eq!(me[0]["node"], body["node"], "{body}");
        ids.push(body["node"].clone());
    }
    assert_ne!(ids[0], ids[1], "two nodes, two ids");

    // Every node stopped: the changed schema is a deploy.
    for node in &mut c.nodes {
        node.terminate();
    }
    let mut more = serde_json::from_str::<serde_json::Value>(&float).unwrap();
    more["fields"]["note"] = json!({ "type": "text" });
    std::fs::write(c.dir(3).join("schema/items.json"), more.to_string()).unwrap();
    c.add_with(&[]);
    let (status, row) = c.get(2, "/1/objects/items/1", &Cred::Bearer(admin)).await;
    assert_eq!((status, &row["note"]), (200, &json!(null)), "{row}");
}
