//! A running server as the `livebase actions` commands see it: its URL, the Basic
//! `masterToken:userToken` credentials they send, its actions by
//! `<object>/<trigger>/<name>`, and its refusals turned into errors naming the status
//! and message. Only the command-line client uses this; the server never does.

use std::collections::HashMap;

use base64::Engine;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use crate::config::ServerArgs;

/// `(object, trigger, name)`.
pub type ActionKey = (String, String, String);

pub struct Remote {
    client: reqwest::Client,
    base: String,
    auth: String,
}

impl Remote {
    pub fn new(args: &ServerArgs) -> Remote {
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", args.master_token, args.user_token))
        );
        // A build that turns on reqwest's rustls without a provider (the test build of
        // this binary, through the dev-dependencies) panics building a client unless a
        // process-wide provider is installed; ring is linked anyway for `--tls-cert`.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        Remote {
            client: reqwest::Client::new(),
            base: args.url.trim_end_matches('/').to_string(),
            auth,
        }
    }

    /// A request to `path` on the server, with the credentials.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
    }

    /// Sends `request`; its JSON answer, or an error naming what the server said.
    pub async fn send(&self, request: RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!(
                "{}: {what} answered {status}: {}",
                self.base,
                body["Message"].as_str().unwrap_or("no message")
            );
        }
        Ok(body)
    }

    /// Every action on the server: (object, trigger, name) → (id, code).
    pub async fn actions(&self) -> anyhow::Result<HashMap<ActionKey, (i64, String)>> {
        let mut all = HashMap::new();
        for page in 1.. {
            let request = self
                .request(Method::GET, "/1/action/config")
                .query(&[("pageSize", "1000"), ("pageNumber", &page.to_string())]);
            let body = self.send(request, "listing actions").await?;
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

    /// The id of the action `<object>/<trigger>/<name>`.
    pub async fn find(&self, label: &str) -> anyhow::Result<i64> {
        let parts: Vec<&str> = label.trim_matches('/').split('/').collect();
        let [object, trigger, name] = parts.as_slice() else {
            anyhow::bail!(
                "`{label}`: name the action as <object>/<trigger>/<name>, e.g. items/onDemand/notify"
            );
        };
        let name = name.strip_suffix(".js").unwrap_or(name);
        let key = (object.to_string(), trigger.to_string(), name.to_string());
        let all = self.actions().await?;
        all.get(&key)
            .map(|(id, _)| *id)
            .ok_or_else(|| anyhow::anyhow!("{}: no action {object}/{trigger}/{name}", self.base))
    }
}
