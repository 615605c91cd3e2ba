//! `livebase actions push [DIR] --url … --master-token … --user-token …`: uploads a folder of action
//! files to a running server through `/1/action/config`. New files are created,
//! changed ones replaced (their next version), the rest left alone. The server compiles
//! each first; one that does not compile is reported and the others still go up.

use reqwest::Method;
use serde_json::{Value, json};

use super::remote::Remote;
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
    let remote = Remote::new(&args.server);
    let existing = remote.actions().await?;
    let mut refused = 0;
    for file in &files {
        let key = (
            file.object.clone(),
            file.trigger.as_str().to_string(),
            file.name.clone(),
        );
        let label = format!("{}/{}/{}", key.0, key.1, key.2);
        // `source` saves the version as pushed, in the action's history.
        let (verb, request) = match existing.get(&key) {
            Some((_, code)) if *code == file.code => {
                println!("unchanged {label}");
                continue;
            }
            Some((id, _)) => (
                "updated",
                remote
                    .request(Method::PUT, &format!("/1/action/config/{id}"))
                    .json(&json!({ "code": file.code, "source": "push" })),
            ),
            None => (
                "created",
                remote
                    .request(Method::POST, "/1/action/config")
                    .json(&json!({
                        "name": file.name,
                        "object": file.object,
                        "trigger": file.trigger.as_str(),
                        "code": file.code,
                        "source": "push",
                    })),
            ),
        };
        let response = request.send().await?;
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
