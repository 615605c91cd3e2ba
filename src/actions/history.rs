//! `livebase actions versions <object>/<trigger>/<name>` and `livebase actions rollback
//! <object>/<trigger>/<name> --version N`: an action's kept versions on a running
//! server, and saving an earlier one's code as its next version, through
//! `/1/action/config/{id}/versions` and `/rollback`.

use reqwest::Method;
use serde_json::{Value, json};

use super::remote::Remote;
use super::versions::KEPT_VERSIONS;
use crate::config::{RollbackArgs, VersionsArgs};

/// Prints one line per kept version, newest first: version, date, source, first line.
pub async fn versions(args: &VersionsArgs) -> anyhow::Result<()> {
    let remote = Remote::new(&args.server);
    let id = remote.find(&args.action).await?;
    let request = remote
        .request(Method::GET, &format!("/1/action/config/{id}/versions"))
        .query(&[("pageSize", KEPT_VERSIONS.to_string())]);
    let body = remote.send(request, "listing versions").await?;
    for version in body["data"].as_array().into_iter().flatten() {
        println!("{}", line(version));
    }
    Ok(())
}

/// Rolls back and prints the version the action is now at.
pub async fn rollback(args: &RollbackArgs) -> anyhow::Result<()> {
    let remote = Remote::new(&args.server);
    let id = remote.find(&args.action).await?;
    let request = remote
        .request(Method::POST, &format!("/1/action/config/{id}/rollback"))
        .json(&json!({ "version": args.version }));
    let action = remote.send(request, "rollback").await?;
    println!(
        "rolled back {}: version {} now holds the code of version {}",
        args.action.trim_matches('/'),
        action["version"],
        args.version
    );
    Ok(())
}

/// `v3  2026-05-01T10:00:00.000Z  upload  function backandCallback(…) {`
fn line(version: &Value) -> String {
    let code = version["code"].as_str().unwrap_or_default();
    let first = code
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let first: String = first.chars().take(80).collect();
    let number = format!("v{}", version["version"].as_i64().unwrap_or_default());
    format!(
        "{number:<5} {}  {:<8}  {first}",
        version["createdAt"].as_str().unwrap_or("?"),
        version["source"].as_str().unwrap_or("?"),
    )
}
