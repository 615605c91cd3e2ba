//! `db-<object>` channels: delivered exactly to sockets whose user may read the row.

use serde_json::json;

use super::{id_of, start};
use crate::common::backends;

#[tokio::test]
async fn owner_rows_reach_their_owner_and_admins_only() {
    for backend in backends() {
        let app = start(&backend).await;
        let admin = app.admin().await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut sa = app.socket(&alice.token).await;
        let mut sb = app.socket(&bob.token).await;
        let mut sadmin = app.socket(&admin.token).await;
        for s in [&sa, &sb, &sadmin] {
            assert_eq!(s.call("join", json!("db-notes")).await["ok"], json!(true));
        }
        let (status, created) = app
            .post(
                "/1/objects/notes",
                &alice.cred(),
                json!({ "title": "mine" }),
            )
            .await;
        assert_eq!(status, 200, "{created}");
        let id = id_of(&created);
        let got = sa.expect("db_created").await;
        assert_eq!(got["channel"], "db-notes");
        assert_eq!(got["data"]["id"], json!(id));
        assert_eq!(got["data"]["title"], "mine");
        assert_eq!(sadmin.expect("db_created").await["data"]["id"], json!(id));
        sb.assert_none(&app, "db_created").await;
    }
}
