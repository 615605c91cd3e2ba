//! `livebase actions push [DIR] --url … --master-token … --user-token …`: uploads a folder of action
//! files to a running server through `/1/action/config`. New files are created,
//! changed ones replaced (their next version), the rest left alone. The server compiles
//! each first; one that does not compile is reported and the others still go up.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Value, json};

use super::store::read_dir;
use crate::config::PushArgs;

/// Pushes, printing one line per action; fails if any action was refused.
pub async fn push(args: &PushArgs) -> anyhow::Result<()> {
    let files = read_dir(&args.dir, None)?;
    if files.is_empty() {
        anyhow::bail!(
            "{}: no actions found (expected <object>/<trigger>/<name>.js)",
            args.dir.display()
        );
    }
    let base = args.url.trim_end_matches('/').to_string();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", args.master_token, args.user_token))
    );
    let client = reqwest::Client::new();
    let existing = list(&client, &base, &auth).await?;
    let mut refused = 0;
    for file in &files {
        let key = (
            file.object.clone(),
            file.trigger.as_str().to_string(),
            file.name.clone(),
        );
        let label = format!("{}/{}/{}", key.0, key.1, key.2);
        let (verb, request) = match existing.get(&key) {
            Some((_, code)) if *code == file.code => {
                println!("unchanged {label}");
                continue;
            }
            Some((id, _)) => (
                "updated",
                client
                    .put(format!("{base}/1/action/config/{id}"))
                    .json(&json!({ "code": file.code })),
            ),
            None => (
                "created",
                client.post(format!("{base}/1/action/config")).json(&json!({
                    "name": file.name,
                    "object": file.object,
                    "trigger": file.trigger.as_str(),
                    "code": file.code,
                })),
            ),
        };
        let response = request.header("Authorization", &auth).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            println!("{verb} {label} (version {})", body["version"]);
        } else {
            refused += 1;
            let message = body["Message"].as_str().unwrap_or("no message");
            eprintln!("refused {label} ({}): {message}", file.path.display());
        }
    }
    if refused > 0 {
        anyhow::bail!("{refused} action(s) refused");
    }
    Ok(())
}

/// Every action on the server: (object, trigger, name) → (id, code).
async fn list(
    client: &reqwest::Client,
    base: &str,
    auth: &str,
) -> anyhow::Result<HashMap<(String, String, String), (i64, String)>> {
    let mut all = HashMap::new();
    for page in 1.. {
        let response = client
            .get(format!("{base}/1/action/config"))
            .query(&[("pageSize", "1000"), ("pageNumber", &page.to_string())])
            .header("Authorization", auth)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{base}: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!(
                "{base}: listing actions answered {status}: {}",
                body["Message"].as_str().unwrap_or("no message")
            );
        }
        let rows = body["data"].as_array().cloned().unwrap_or_default();
        let total = body["totalRows"].as_u64().unwrap_or_default() as usize;
        for row in &rows {
            let text = |k: &str| row[k].as_str().unwrap_or_default().to_string();
            all.insert(
                (text("object"), text("trigger"), text("name")),
                (row["id"].as_i64().unwrap_or_default(), text("code")),
            );
        }
        // The server may page by less than asked (`--max-page-size`).
        if rows.is_empty() || all.len() >= total {
            break;
        }
    }
    Ok(all)
}
