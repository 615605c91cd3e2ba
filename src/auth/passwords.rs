//! Password hashing with argon2, always off the async threads.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

pub const MIN_PASSWORD_CHARS: usize = 6;
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A password's own rule, checked before anything is hashed or written.
pub fn check_strength(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "password must be at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(())
}

/// At most this many hashes at once (one per core). Each argon2 run takes 19 MiB and a
/// core for tens of milliseconds: unbounded, a burst of sign-ins or sign-ups would grow
/// the process by 19 MiB per concurrent request (up to 512 blocking threads) and starve
/// everything else. Callers past the limit wait their turn.
fn hashing_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    })
}

/// A PHC string (`$argon2id$…`) for `password`.
pub async fn hash(password: String) -> anyhow::Result<String> {
    let _slot = hashing_slots().acquire().await?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
    })
    .await?
}

/// Whether `password` matches `phc`. A malformed stored hash never matches.
pub async fn verify(password: String, phc: String) -> bool {
    let Ok(_slot) = hashing_slots().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), phc.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let a = hash("correct horse".into()).await.unwrap();
        let b = hash("correct horse".into()).await.unwrap();
        assert_ne!(a, b, "salts must differ");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), a.clone()).await);
        assert!(!verify("wrong horse".into(), a).await);
        assert!(!verify("x".into(), "not a hash".into()).await);
    }
}
