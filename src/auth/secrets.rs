//! The app's tokens and signing secret, taken from flags, else generated on first start.
//!
//! On PostgreSQL they live in `lb_secrets`, so every node on the database signs and
//! checks with the same ones. The first start fills the table (from
//! `<data-dir>/secrets.json` when there is one, else from the flags, else generated);
//! later starts read it. A flag that differs from the kept value is written through
//! while no other node runs, and refuses the start while one does: two nodes signing
//! with different secrets would refuse each other's tokens.
//!
//! On SQLite, one node's file, they live in `<data-dir>/secrets.json` (mode 0600 on
//! Unix), and flags override it without rewriting it.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::schema::FieldType;
use crate::schema::value::SqlValue;
use crate::store::nodes::{self, Node};
use crate::store::{Dialect, Store, Tx, migrate};

const FILE: &str = "secrets.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secrets {
    pub app_name: String,
    pub anonymous_token: String,
    pub signup_token: String,
    pub master_token: String,
    pub jwt_secret: String,
}

/// What a start settled on.
pub struct Loaded {
    pub secrets: Secrets,
    /// Generated just now, (name, value), for the operator to see once.
    pub generated: Vec<(&'static str, String)>,
    /// Where they are kept, for that one announcement.
    pub kept_in: String,
}

/// One secret: its key in `secrets.json` and `lb_secrets`, its flag, and what a first
/// start without the flag takes.
struct Item {
    key: &'static str,
    flag: &'static str,
    given: fn(&Config) -> Option<&String>,
    make: fn() -> String,
    /// The name it is announced under when generated; `None` for what never needs
    /// showing (the app name's default, the signing secret).
    shown: Option<&'static str>,
}

const ITEMS: [Item; 5] = [
    Item {
        key: "appName",
        flag: "--app-name",
        given: |c| c.app_name.as_ref(),
        make: || "livebase".to_string(),
        shown: None,
    },
    Item {
        key: "anonymousToken",
        flag: "--anonymous-token",
        given: |c| c.anonymous_token.as_ref(),
        make: new_token,
        shown: Some("anonymous token"),
    },
    Item {
        key: "signupToken",
        flag: "--signup-token",
        given: |c| c.signup_token.as_ref(),
        make: new_token,
        shown: Some("signup token"),
    },
    Item {
        key: "masterToken",
        flag: "--master-token",
        given: |c| c.master_token.as_ref(),
        make: new_token,
        shown: Some("master token"),
    },
    Item {
        key: "jwtSecret",
        flag: "--jwt-secret",
        given: |c| c.jwt_secret.as_ref(),
        make: new_secret,
        shown: None,
    },
];

/// A Backand-style token: a random UUID-shaped string.
pub fn new_token() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn new_secret() -> String {
    let mut b = [0u8; 48];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The secrets in force. On PostgreSQL `node` joins `lb_nodes` in the same transaction
/// under the start lock, so a start after this one sees it live when it compares its
/// flags.
pub async fn load_or_create(config: &Config, store: &Store, node: &Node) -> anyhow::Result<Loaded> {
    let short = |v: &str| v.len() < 16;
    if config.jwt_secret.as_deref().is_some_and(short) {
        anyhow::bail!("--jwt-secret must be at least 16 characters");
    }
    let loaded = match store.dialect() {
        Dialect::Sqlite => from_file(config)?,
        Dialect::Postgres => from_table(config, store, node).await?,
    };
    if short(&loaded.secrets.jwt_secret) {
        anyhow::bail!(
            "the jwtSecret kept in {} must be at least 16 characters",
            loaded.kept_in
        );
    }
    Ok(loaded)
}

/// A first start's value: the flag, else made (and, if it is shown, noted for showing).
fn first(item: &Item, config: &Config, generated: &mut Vec<(&'static str, String)>) -> String {
    if let Some(v) = (item.given)(config) {
        return v.clone();
    }
    let v = (item.make)();
    if let Some(name) = item.shown {
        generated.push((name, v.clone()));
    }
    v
}

type Kept = BTreeMap<&'static str, String>;

fn to_secrets(kept: &Kept) -> anyhow::Result<Secrets> {
    let map = kept
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    Ok(serde_json::from_value(Value::Object(map))?)
}

fn read_file(path: &Path) -> anyhow::Result<Kept> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let secrets: Secrets = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: unreadable: {e}", path.display()))?;
    let Value::Object(map) = serde_json::to_value(secrets)? else {
        unreachable!("a struct serializes to an object")
    };
    Ok(ITEMS
        .iter()
        .filter_map(|i| Some((i.key, map.get(i.key)?.as_str()?.to_string())))
        .collect())
}

/// On first start the file keeps what is in force, flags included, so a later start
/// without the flags behaves the same; on later starts flags override the file without
/// rewriting it.
fn from_file(config: &Config) -> anyhow::Result<Loaded> {
    let path = config.data_dir.join(FILE);
    let mut generated = Vec::new();
    let mut kept = if path.exists() {
        read_file(&path)?
    } else {
        let kept: Kept = ITEMS
            .iter()
            .map(|i| (i.key, first(i, config, &mut generated)))
            .collect();
        let text = serde_json::to_string_pretty(&to_secrets(&kept)?)?;
        write_private(&path, &text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        kept
    };
    for item in &ITEMS {
        if let Some(v) = (item.given)(config) {
            kept.insert(item.key, v.clone());
        }
    }
    Ok(Loaded {
        secrets: to_secrets(&kept)?,
        generated,
        kept_in: path.display().to_string(),
    })
}

async fn from_table(config: &Config, store: &Store, node: &Node) -> anyhow::Result<Loaded> {
    let failed = |e: sqlx::Error| anyhow::anyhow!("keeping the secrets in lb_secrets: {e}");
    let mut tx = store.begin().await.map_err(failed)?;
    migrate::lock(&mut tx).await.map_err(failed)?;
    let mut sql = tx.sql();
    sql.push("SELECT name, value FROM lb_secrets");
    let rows = tx
        .fetch(&sql, &[FieldType::Text, FieldType::Text])
        .await
        .map_err(failed)?;
    let mut kept: Kept = rows
        .iter()
        .filter_map(|r| {
            let item = ITEMS.iter().find(|i| r[0].as_str() == Some(i.key))?;
            Some((item.key, r[1].as_str()?.to_string()))
        })
        .collect();
    let mut write: Vec<&'static str> = Vec::new();
    let path = config.data_dir.join(FILE);
    if kept.is_empty() && path.exists() {
        kept = read_file(&path)?;
        write.extend(kept.keys().copied());
        tracing::info!(
            "imported the secrets of {} into lb_secrets; the file is no longer used",
            path.display()
        );
    } else if path.exists() && read_file(&path).is_ok_and(|file| file != kept) {
        tracing::warn!(
            "{} is not used: the secrets in force are those in lb_secrets, shared by every node",
            path.display()
        );
    }
    let mut generated = Vec::new();
    for item in &ITEMS {
        if !kept.contains_key(item.key) {
            kept.insert(item.key, first(item, config, &mut generated));
            write.push(item.key);
        }
    }
    let differing: Vec<(&Item, &String)> = ITEMS
        .iter()
        .filter_map(|i| Some(i).zip((i.given)(config)))
        .filter(|(i, v)| kept[i.key] != **v)
        .collect();
    if let Some((item, _)) = differing.first() {
        if nodes::others_live(&mut tx, node).await.map_err(failed)? {
            anyhow::bail!(
                "{} differs from the value the running nodes use (lb_secrets); stop them first or drop the flag",
                item.flag
            );
        }
        for (item, value) in differing {
            tracing::info!("{} replaces the value kept in lb_secrets", item.flag);
            kept.insert(item.key, value.clone());
            write.push(item.key);
        }
    }
    for key in write {
        upsert(&mut tx, key, &kept[key]).await.map_err(failed)?;
    }
    node.join(&mut tx).await.map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    Ok(Loaded {
        secrets: to_secrets(&kept)?,
        generated,
        kept_in: "the lb_secrets table of the database (--database-url)".to_string(),
    })
}

async fn upsert(tx: &mut Tx, key: &str, value: &str) -> Result<(), sqlx::Error> {
    let mut sql = tx.sql();
    sql.push("INSERT INTO lb_secrets (name, value) VALUES (")
        .bind(SqlValue::Text(key.to_string()))
        .push(", ")
        .bind(SqlValue::Text(value.to_string()))
        .push(") ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value");
    tx.execute(&sql).await.map(|_| ())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    options.open(path)?.write_all(text.as_bytes())
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config and a SQLite store of its own in `dir`, and this process as a node.
    async fn sqlite(dir: &Path) -> (Config, Store, std::sync::Arc<Node>) {
        let config = Config::default_with(dir.to_path_buf(), dir.join("schema"));
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let store = Store::connect(&url, 1).await.unwrap();
        let node = Node::new(&config.listen);
        (config, store, node)
    }

    #[tokio::test]
    async fn secrets_are_generated_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let (config, store, node) = sqlite(dir.path()).await;
        let first = load_or_create(&config, &store, &node).await.unwrap();
        let names: Vec<&str> = first.generated.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["anonymous token", "signup token", "master token"]);
        assert_eq!(first.kept_in, dir.path().join(FILE).display().to_string());
        let again = load_or_create(&config, &store, &node).await.unwrap();
        assert!(
            again.generated.is_empty(),
            "nothing new to show on a later start"
        );
        assert_eq!(first.secrets.master_token, again.secrets.master_token);
        assert_eq!(first.secrets.jwt_secret, again.secrets.jwt_secret);
        assert_ne!(first.secrets.master_token, first.secrets.anonymous_token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }

    #[tokio::test]
    async fn flags_given_on_first_start_are_kept_and_not_announced() {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, store, node) = sqlite(dir.path()).await;
        config.master_token = Some("given-master".into());
        let loaded = load_or_create(&config, &store, &node).await.unwrap();
        assert_eq!(loaded.secrets.master_token, "given-master");
        assert!(loaded.generated.iter().all(|(n, _)| *n != "master token"));
        config.master_token = None;
        let later = load_or_create(&config, &store, &node).await.unwrap();
        assert_eq!(
            later.secrets.master_token, "given-master",
            "the file kept what was in force"
        );
        // A later flag overrides the file for this start only.
        config.master_token = Some("later-master".into());
        let flagged = load_or_create(&config, &store, &node).await.unwrap();
        assert_eq!(flagged.secrets.master_token, "later-master");
        config.master_token = None;
        let after = load_or_create(&config, &store, &node).await.unwrap();
        assert_eq!(after.secrets.master_token, "given-master");
    }

    #[tokio::test]
    async fn a_short_signing_secret_is_refused_by_its_flag() {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, store, node) = sqlite(dir.path()).await;
        config.jwt_secret = Some("short".into());
        let err = load_or_create(&config, &store, &node)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--jwt-secret"), "{err}");
        assert!(!dir.path().join(FILE).exists(), "nothing written");
    }
}
