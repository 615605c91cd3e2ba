//! The app's tokens and signing secret: taken from flags, else generated on first start
//! and kept in `<data-dir>/secrets.json` (mode 0600 on Unix).

use std::path::Path;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::Config;

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

/// The secrets in force, and those generated just now (name, value) that the operator
/// has not seen yet. On first start the file keeps what is in force, flags included, so
/// a later start without the flags behaves the same; on later starts flags override the
/// file without rewriting it.
pub fn load_or_create(config: &Config) -> anyhow::Result<(Secrets, Vec<(&'static str, String)>)> {
    let path = config.data_dir.join(FILE);
    let mut generated = Vec::new();
    let mut pick = |name: &'static str, flag: &Option<String>, make: fn() -> String| match flag {
        Some(v) => v.clone(),
        None => {
            let v = make();
            generated.push((name, v.clone()));
            v
        }
    };
    let mut secrets = if path.exists() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: unreadable: {e}", path.display()))?
    } else {
        let s = Secrets {
            app_name: config.app_name.clone().unwrap_or_else(|| "livebase".into()),
            anonymous_token: pick("anonymous token", &config.anonymous_token, new_token),
            signup_token: pick("signup token", &config.signup_token, new_token),
            master_token: pick("master token", &config.master_token, new_token),
            jwt_secret: pick("jwt secret", &config.jwt_secret, new_secret),
        };
        write_private(&path, &serde_json::to_string_pretty(&s)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        s
    };
    // The signing secret never needs showing: it stays in the file.
    generated.retain(|(name, _)| *name != "jwt secret");
    if let Some(v) = &config.app_name {
        secrets.app_name = v.clone();
    }
    if let Some(v) = &config.anonymous_token {
        secrets.anonymous_token = v.clone();
    }
    if let Some(v) = &config.signup_token {
        secrets.signup_token = v.clone();
    }
    if let Some(v) = &config.master_token {
        secrets.master_token = v.clone();
    }
    if let Some(v) = &config.jwt_secret {
        secrets.jwt_secret = v.clone();
    }
    if secrets.jwt_secret.len() < 16 {
        anyhow::bail!("--jwt-secret must be at least 16 characters");
    }
    Ok((secrets, generated))
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

    #[test]
    fn secrets_are_generated_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default_with(dir.path().to_path_buf(), dir.path().join("schema"));
        let (first, generated) = load_or_create(&config).unwrap();
        let names: Vec<&str> = generated.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["anonymous token", "signup token", "master token"]);
        let (again, generated) = load_or_create(&config).unwrap();
        assert!(generated.is_empty(), "nothing new to show on a later start");
        assert_eq!(first.master_token, again.master_token);
        assert_ne!(first.master_token, first.anonymous_token);
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
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn flags_given_on_first_start_are_kept_and_not_announced() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default_with(dir.path().to_path_buf(), dir.path().join("schema"));
        config.master_token = Some("given-master".into());
        let (secrets, generated) = load_or_create(&config).unwrap();
        assert_eq!(secrets.master_token, "given-master");
        assert!(generated.iter().all(|(n, _)| *n != "master token"));
        config.master_token = None;
        let (later, _) = load_or_create(&config).unwrap();
        assert_eq!(
            later.master_token, "given-master",
            "the file kept what was in force"
        );
    }
}
