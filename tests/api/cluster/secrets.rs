//! Nodes on one PostgreSQL database share one set of secrets (`lb_secrets`): what one
//! node issues or prints works on every other; a `secrets.json` is imported once; a
//! flag that would split the nodes is refused while another node runs; and nodes
//! started together make one first Admin. Each check is by behaviour over HTTP, never
//! by reading the table.

use reqwest::Method;
use serde_json::{Value, json};

use super::{ADMIN_EMAIL, ADMIN_PASSWORD, ADMIN_USER_TOKEN, Cluster};
use crate::common::{Cred, q};
use crate::process::{client, printed};

/// Each user sees only their own notes.
const NOTES: &str = r#"{ "name": "notes", "fields": { "text": { "type": "string" } },
  "permissions": { "read": ["User"], "create": ["User"] }, "rowSecurity": "owner" }"#;

const PROFILE: &str = "/api/account/profile";

fn admin_with(master: &str) -> Cred {
    Cred::Basic(master.into(), ADMIN_USER_TOKEN.into())
}

/// `POST /1/user/signup` on node `i` with `signup_token`: the status and answer.
async fn sign_up(cluster: &Cluster, i: usize, signup_token: &str, email: &str) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/1/user/signup", cluster.nodes[i].base))
        .header("SignUpToken", signup_token)
        .json(&json!({ "email": email, "password": format!("pw-{email}"),
                       "firstName": "F", "lastName": "L" }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn what_one_node_issues_or_prints_works_on_the_other() {
    let Some(mut cluster) = Cluster::empty(&[("schema/notes.json", NOTES)], &[]).await else {
        return;
    };
    // One after the other: A fills lb_secrets, B finds them.
    cluster.add(1);
    cluster.add(1);
    let (a, b) = (cluster.nodes[0].output(), cluster.nodes[1].output());
    let master = printed(&a, "master token").unwrap_or_else(|| panic!("A generated: {a}"));
    let signup = printed(&a, "signup token").unwrap_or_else(|| panic!("A generated: {a}"));
    assert!(
        a.contains("kept in the lb_secrets table"),
        "A says where they are kept: {a}"
    );
    assert_eq!(
        printed(&b, "master token"),
        None,
        "B generated nothing: {b}"
    );
    assert!(!b.contains(&master), "B shows no secret: {b}");

    // A user signs up on A; A's access token reads the user's row and profile on B.
    let (status, answer) = sign_up(&cluster, 0, &signup, "ann@x.test").await;
    assert_eq!(status, 200, "{answer}");
    let ann = Cred::Bearer(answer["access_token"].as_str().unwrap().to_string());
    let (status, created) = cluster
        .req(
            0,
            Method::POST,
            "/1/objects/notes",
            &ann,
            Some(json!({ "text": "from A" })),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["__metadata"]["id"].as_str().unwrap().to_string();
    let (status, row) = cluster
        .get(1, &format!("/1/objects/notes/{id}"), &ann)
        .await;
    assert_eq!((status, &row["text"]), (200, &json!("from A")), "{row}");
    let (status, profile) = cluster.get(1, PROFILE, &ann).await;
    assert_eq!((status, &profile["username"]), (200, &json!("ann@x.test")));

    // The other way round, and with the signup token A printed.
    let (status, answer) = sign_up(&cluster, 1, &signup, "bob@x.test").await;
    assert_eq!(status, 200, "A's signup token on B: {answer}");
    let bob = cluster.sign_in(1, "bob@x.test", "pw-bob@x.test").await;
    let (status, profile) = cluster.get(0, PROFILE, &Cred::Bearer(bob)).await;
    assert_eq!((status, &profile["username"]), (200, &json!("bob@x.test")));

    // The master token A printed acts on B; another one does not.
    let (status, profile) = cluster.get(1, PROFILE, &admin_with(&master)).await;
    assert_eq!(
        (status, &profile["role"]),
        (200, &json!("Admin")),
        "{profile}"
    );
    let (status, _) = cluster.get(1, PROFILE, &admin_with("not-the-master")).await;
    assert_eq!(status, 401);
    let (status, _) = cluster
        .get(1, PROFILE, &Cred::Bearer("not.a.token".into()))
        .await;
    assert_eq!(status, 401);
}

/// A `secrets.json` as a single node would have kept it.
fn secrets_file(master: &str) -> String {
    json!({
        "appName": "livebase",
        "anonymousToken": format!("anonymous-{master}"),
        "signupToken": format!("signup-{master}"),
        "masterToken": master,
        "jwtSecret": format!("jwt-secret-of-{master}-0123456789"),
    })
    .to_string()
}

#[tokio::test]
async fn a_secrets_file_is_imported_by_the_first_node_only() {
    let Some(mut cluster) = Cluster::empty(&[], &[]).await else {
        return;
    };
    let broken_file = cluster.dir(0).join("data/secrets.json");
    let first_file = cluster.dir(1).join("data/secrets.json");
    let second_file = cluster.dir(2).join("data/secrets.json");
    for (path, text) in [
        (&broken_file, r#"{ "masterToken": 1 }"#.to_string()),
        (&first_file, secrets_file("imported-master")),
        (&second_file, secrets_file("other-master")),
    ] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    // A file that cannot be imported stops the start, naming it, and imports nothing
    // (else the next node would find the table filled).
    let refused = cluster.refused(&[]);
    let line = refused.stderr.trim();
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        line.lines().count() == 1
            && line.starts_with("livebase: ")
            && line.contains(&format!("{}: unreadable", broken_file.display())),
        "{line}"
    );

    cluster.add(1);
    let a = cluster.nodes[0].output();
    assert!(
        a.contains("imported the secrets of") && a.contains(&first_file.display().to_string()),
        "A says it imported, and from where: {a}"
    );
    assert_eq!(printed(&a, "master token"), None, "nothing generated: {a}");
    let (status, _) = cluster
        .get(0, PROFILE, &admin_with("imported-master"))
        .await;
    assert_eq!(status, 200, "the imported master token works");

    cluster.add(1);
    let b = cluster.nodes[1].output();
    assert!(!b.contains("imported the secrets of"), "{b}");
    assert!(
        b.contains(&format!("{} is not used", second_file.display())),
        "B says its file is not used: {b}"
    );
    for node in [0, 1] {
        let (status, _) = cluster
            .get(node, PROFILE, &admin_with("imported-master"))
            .await;
        assert_eq!(status, 200, "node {node}: the first file's master token");
        let (status, _) = cluster
            .get(node, PROFILE, &admin_with("other-master"))
            .await;
        assert_eq!(status, 401, "node {node}: the second file's master token");
    }
    let anonymous = Cred::Anonymous("anonymous-imported-master".into());
    let (status, profile) = cluster.get(1, PROFILE, &anonymous).await;
    assert_eq!((status, &profile["username"]), (200, &json!("Guest")));
}

#[tokio::test]
async fn nodes_started_together_make_one_first_admin() {
    let Some(cluster) = Cluster::start(3, &[], &[]).await else {
        return;
    };
    let outputs: Vec<String> = cluster.nodes.iter().map(|n| n.output()).collect();
    let all = outputs.join("\n----\n");
    let blocks = outputs
        .iter()
        .filter(|o| o.contains("livebase created the first Admin user"))
        .count();
    assert_eq!(blocks, 1, "one node announces the first Admin: {all}");
    let masters: Vec<String> = outputs
        .iter()
        .filter_map(|o| printed(o, "master token"))
        .collect();
    assert_eq!(masters.len(), 1, "one node generated the secrets: {all}");
    let only_admin = json!([{ "fieldName": "role", "operator": "equals", "value": "Admin" }]);
    for node in 0..3 {
        let path = format!("/1/objects/users?filter={}", q(&only_admin));
        let (status, body) = cluster.get(node, &path, &admin_with(&masters[0])).await;
        assert_eq!(status, 200, "node {node}: {body}");
        assert_eq!(body["totalRows"], 1, "node {node}: one Admin: {body}");
        cluster.sign_in(node, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    }
}

#[tokio::test]
async fn a_differing_signing_secret_is_refused_beside_a_live_node_and_kept_without_one() {
    let Some(mut cluster) = Cluster::empty(&[], &[]).await else {
        return;
    };
    const GIVEN: &str = "a-signing-secret-given-later-0123456789";
    cluster.add(1);
    let before = Cred::Bearer(cluster.sign_in(0, ADMIN_EMAIL, ADMIN_PASSWORD).await);
    // Longer than a node stays live on the row it wrote at start: A is live by its
    // heartbeat.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;

    let refused = cluster.refused(&[("--jwt-secret", GIVEN)]);
    let line = refused.stderr.trim();
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert_eq!(
        line,
        "livebase: --jwt-secret differs from the value the running nodes use (lb_secrets); \
         stop them first or drop the flag"
    );
    assert!(
        !refused.stdout.contains(GIVEN) && !refused.stdout.contains("listening"),
        "{refused:?}"
    );
    let (status, _) = cluster.get(0, PROFILE, &before).await;
    assert_eq!(status, 200, "the running node's tokens still hold");

    // With no node running (the last one stopped cleanly, leaving lb_nodes), the flag
    // replaces the kept secret: tokens signed before no longer verify.
    cluster.nodes[0].terminate();
    cluster.add_with(&[("--jwt-secret", GIVEN)]);
    let (status, _) = cluster.get(1, PROFILE, &before).await;
    assert_eq!(status, 401, "a token signed with the replaced secret");
    let after = Cred::Bearer(cluster.sign_in(1, ADMIN_EMAIL, ADMIN_PASSWORD).await);

    // A node without the flag takes the kept one; so does one given the same value.
    cluster.add(1);
    cluster.add_with(&[("--jwt-secret", GIVEN)]);
    for node in [2, 3] {
        let (status, _) = cluster.get(node, PROFILE, &after).await;
        assert_eq!(
            status, 200,
            "node {node}: a token signed with the kept secret"
        );
        let (status, _) = cluster.get(node, PROFILE, &before).await;
        assert_eq!(
            status, 401,
            "node {node}: one signed with the replaced secret"
        );
    }
}
