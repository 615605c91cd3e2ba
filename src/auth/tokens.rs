//! Signed access and refresh tokens (HS256 JWTs).
//!
//! A token carries the user id and the user's token version at issue time; signing out
//! bumps the version, so every token issued before stops working at once.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Access,
    Refresh,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id, as text: JWT's `sub` is a string, and the validator insists.
    pub sub: String,
    /// Token version of the user when issued.
    pub tv: i64,
    pub kind: TokenKind,
    pub app: String,
    pub iat: u64,
    pub exp: u64,
    /// The sign-in these tokens belong to (kept across refreshes): a password change
    /// keeps its own session signed in and ends the others (`UserAuth::kept_session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl Claims {
    pub fn user_id(&self) -> Option<i64> {
        self.sub.parse().ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid,
}

/// Seconds past `exp` a token is still accepted (clock skew between servers).
pub const LEEWAY_SECS: u64 = 5;

/// Latest `exp` accepted: 9999-12-31T23:59:59Z. Only a holder of the secret can sign a
/// later one (livebase issues `now + ttl`), but it would overflow the arithmetic that
/// turns `exp` into a moment (`exp + leeway`, `UNIX_EPOCH + exp`): a panic in debug
/// builds, a wrapped expiry in release ones.
pub const MAX_EXP_SECS: u64 = 253_402_300_799;

pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Signer {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Signer {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        if data.claims.kind != kind
            || data.claims.user_id().is_none()
            || data.claims.exp > MAX_EXP_SECS
        {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(kind: TokenKind, exp: u64) -> Claims {
        Claims {
            sub: "3".into(),
            tv: 0,
            kind,
            app: "a".into(),
            iat: now_secs(),
            exp,
            sid: None,
        }
    }

    #[test]
    fn tokens_round_trip_and_fail_closed() {
        let signer = Signer::new("0123456789abcdef0123");
        let good = signer.sign(&claims(TokenKind::Access, now_secs() + 60));
        assert_eq!(signer.verify(&good, TokenKind::Access).unwrap().sub, "3");
        assert_eq!(
            signer.verify(&good, TokenKind::Refresh).unwrap_err(),
            TokenError::Invalid
        );
        let old = signer.sign(&claims(TokenKind::Access, now_secs() - 600));
        assert_eq!(
            signer.verify(&old, TokenKind::Access).unwrap_err(),
            TokenError::Expired
        );
        let forged =
            Signer::new("another-secret-0000000").sign(&claims(TokenKind::Access, now_secs() + 60));
        assert_eq!(
            signer.verify(&forged, TokenKind::Access).unwrap_err(),
            TokenError::Invalid
        );
        for garbage in ["", "abc", "a.b.c", &good[..good.len() - 3]] {
            assert_eq!(
                signer.verify(garbage, TokenKind::Access).unwrap_err(),
                TokenError::Invalid
            );
        }
    }

    #[test]
    fn expiry_past_year_9999_is_refused() {
        let signer = Signer::new("0123456789abcdef0123");
        let last = signer.sign(&claims(TokenKind::Access, MAX_EXP_SECS));
        assert_eq!(
            signer.verify(&last, TokenKind::Access).unwrap().exp,
            MAX_EXP_SECS
        );
        for exp in [
            MAX_EXP_SECS + 1,
            i64::MAX as u64 + 1,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let token = signer.sign(&claims(TokenKind::Access, exp));
            assert_eq!(
                signer.verify(&token, TokenKind::Access).unwrap_err(),
                TokenError::Invalid,
                "exp {exp}"
            );
        }
    }
}
