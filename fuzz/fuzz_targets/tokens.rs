//! Credentials: `Authorization: Bearer …` / `Basic …` and `AnonymousToken` headers
//! through `Auth::identify` (what every REST request and the Backand `login` event
//! use), bare access tokens through `Auth::identify_bearer` (handshake `auth.token`,
//! LoopBack `authentication`), refresh tokens through `Auth::refresh_grant`, and
//! `tokens::Signer::verify` itself, against a real SQLite database holding one Admin
//! whose secrets the target knows.
//!
//! Whatever is accepted is checked independently: a token only if it is HS256 over its
//! own first two segments with the server's secret, not expired, of the right kind and
//! naming the Admin at its current token version; Basic only with the exact master and
//! user tokens; AnonymousToken only with the exact anonymous token. Forged tokens
//! (mode 3, built by `arbitrary`) cover alg confusion (`none`, HS384/HS512 signed with
//! the right secret, asymmetric names), wrong keys, extra header fields and claims,
//! wrong kinds, apps and versions, expiry on both sides, other base64 flavours and
//! single-byte mutations; the canonical forgery must be accepted and the expired one
//! refused as expired.
//!
//! Input: one mode byte (0 Authorization header, 1 bearer token, 2 AnonymousToken
//! header, 3 forged), then the header value or token (modes 0–2) or `arbitrary` bytes.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use livebase::auth::secrets::Secrets;
use livebase::auth::tokens::{MAX_EXP_SECS, Signer, TokenError, TokenKind, now_secs};
use livebase::auth::{Auth, Identity, credentials};
use livebase::error::{ApiError, INVALID_TOKEN};
use livebase::store::statements;
use livebase::schema::value::SqlValue;
use livebase::store::{Store, migrate};
use livebase_fuzz::example_schema;
use serde_json::{Map, Value, json};

const SECRET: &str = "fuzz-jwt-secret-0123456789abcdef";
const MASTER: &str = "fuzz-master-token";
const ANONYMOUS: &str = "fuzz-anonymous-token";
const USER_TOKEN: &str = "fuzz-admin-user-token";
const APP: &str = "fuzzapp";
const EMAIL: &str = "admin@fuzz.example";

struct World {
    rt: tokio::runtime::Runtime,
    auth: Auth,
    signer: Signer,
    admin_id: i64,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!("sqlite://{}", dir.path().join("fuzz.db").display());
        let (auth, admin_id) = rt.block_on(async {
            let schema = example_schema();
            let store = Store::connect(&url, 2).await.expect("SQLite");
            migrate::apply_schema(&store, schema, false)
                .await
                .expect("schema applies");
            let users = schema.object("users").expect("users");
            let mut tx = store.begin().await.expect("tx");
            let mut sql = tx.sql();
            let row = vec![
                ("email".to_string(), SqlValue::Text(EMAIL.into())),
                ("firstName".to_string(), SqlValue::Text("Fuzz".into())),
                ("role".to_string(), SqlValue::Text("Admin".into())),
            ];
            statements::insert(&mut sql, users, None, row);
            let admin = tx.fetch_records(&sql, users).await.expect("insert")[0].id;
            credentials::insert(&mut tx, admin, None, USER_TOKEN.into())
                .await
                .expect("credentials");
            tx.commit().await.expect("commit");
            let secrets = Secrets {
                app_name: APP.into(),
                anonymous_token: ANONYMOUS.into(),
                signup_token: "fuzz-signup-token".into(),
                master_token: MASTER.into(),
                jwt_secret: SECRET.into(),
            };
            (Auth::new(secrets, store, 3600, 86400), admin)
        });
        World {
            rt,
            auth,
            signer: Signer::new(SECRET),
            admin_id,
            _dir: dir,
        }
    })
}

fn hs256(message: &str) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// What a token `Signer::verify` accepts must be, checked without jsonwebtoken: three
/// segments, an HS256 header, the server's signature over the first two, claims of
/// `kind` with a numeric user id, not expired (5 s leeway). With `current`, as `Auth`
/// accepts it: also the Admin's id, token version 0 and this app.
fn assert_genuine(token: &str, kind: &str, current: bool) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted a token of {} parts", parts.len());
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap())
        .expect("accepted header is JSON");
    assert_eq!(header["alg"], "HS256", "accepted alg {}", header["alg"]);
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .expect("signature is base64url");
    assert_eq!(
        signature,
        hs256(&format!("{}.{}", parts[0], parts[1])),
        "accepted a signature the secret did not make"
    );
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
        .expect("accepted claims are JSON");
    assert_eq!(claims["kind"], kind);
    let sub = claims["sub"].as_str().expect("sub is text");
    assert!(sub.parse::<i64>().is_ok(), "accepted sub {sub:?}");
    let exp = claims["exp"].as_u64().expect("exp is a number");
    assert!(
        exp.saturating_add(5) >= now_secs(),
        "accepted an expired token"
    );
    assert!(exp <= MAX_EXP_SECS, "accepted exp {exp}, past year 9999");
    if current {
        assert_eq!(sub.parse::<i64>().ok(), Some(world().admin_id));
        assert_eq!(claims["tv"], 0);
        assert_eq!(claims["app"], APP);
    }
}

fn assert_admin(who: &Identity, master: bool) {
    assert_eq!(who.user_id, Some(world().admin_id));
    assert_eq!(who.username, EMAIL);
    assert_eq!(who.role, "Admin");
    assert_eq!(who.master, master);
}

/// Every refusal of a credential is a 401, never a 500 or a panic.
fn assert_refusal(e: &ApiError) {
    assert!(
        matches!(e, ApiError::Unauthorized(_)),
        "credential refused with {e:?}"
    );
}

fn bearer_of(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Authorization header through `identify`.
fn authorization(value: &[u8]) {
    let w = world();
    let Ok(header) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("authorization", header);
    match w.rt.block_on(w.auth.identify(&headers)) {
        Err(e) => assert_refusal(&e),
        Ok(who) => {
            let text = std::str::from_utf8(value).expect("accepted headers are text");
            if let Some(token) = bearer_of(text) {
                let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
                assert_genuine(token, "access", true);
                assert_admin(&who, false);
            } else {
                let (_, encoded) = text.trim().split_once(' ').expect("a scheme");
                let decoded = STANDARD.decode(encoded.trim()).expect("Basic is base64");
                let expected = format!("{MASTER}:{USER_TOKEN}");
                assert_eq!(decoded, expected.as_bytes(), "accepted Basic credentials");
                assert_admin(&who, true);
            }
        }
    }
}

/// A bare token, as the socket handshake and LoopBack `authentication` present it, and
/// as a refresh token.
fn bearer(token: &str) {
    let w = world();
    match w.rt.block_on(w.auth.identify_bearer(token)) {
        Err(e) => assert_refusal(&e),
        Ok(who) => {
            let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
            assert_genuine(token, "access", true);
            assert_admin(&who, false);
        }
    }
    for (kind, name) in [
        (TokenKind::Access, "access"),
        (TokenKind::Refresh, "refresh"),
    ] {
        if w.signer.verify(token, kind).is_ok() {
            assert_genuine(token, name, false);
        }
    }
    match w.rt.block_on(w.auth.refresh_grant(token)) {
        Err(e) => assert_refusal(&e),
        Ok(answer) => {
            assert_genuine(token.trim(), "refresh", true);
            assert_eq!(answer.user_id, w.admin_id.to_string());
        }
    }
}

fn anonymous(value: &[u8]) {
    let w = world();
    let Ok(header) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("anonymoustoken", header);
    match w.rt.block_on(w.auth.identify(&headers)) {
        Err(e) => assert_refusal(&e),
        Ok(who) => {
            assert_eq!(std::str::from_utf8(value).map(str::trim), Ok(ANONYMOUS));
            assert_eq!(who, Identity::guest());
        }
    }
}

#[derive(Arbitrary, Debug, PartialEq)]
enum Alg {
    Hs256,
    Hs384,
    Hs512,
    None,
    NoneUpper,
    Rs256,
    Es256,
    EdDsa,
    Missing,
    Other(String),
}

#[derive(Arbitrary, Debug, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Text(String),
}

impl Scalar {
    fn json(&self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => json!(b),
            Scalar::Int(i) => json!(i),
            Scalar::Text(s) => json!(s),
        }
    }
}

#[derive(Arbitrary, Debug, PartialEq)]
enum Claim<T> {
    Right,
    Other(T),
    Wrong(Scalar),
    Missing,
}

#[derive(Arbitrary, Debug, PartialEq)]
enum Expiry {
    /// 60 s to 18 h ahead.
    Future(u16),
    /// At least 60 s ago.
    Past(u32),
    Absolute(u64),
    Negative(i64),
    Fraction(f64),
    Text(String),
    Missing,
}

#[derive(Arbitrary, Debug, PartialEq)]
enum Key {
    Right,
    Wrong(Vec<u8>),
    /// The signature bytes themselves.
    Raw(Vec<u8>),
    NoSignature,
}

#[derive(Arbitrary, Debug, PartialEq)]
enum Mac_ {
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Arbitrary, Debug, PartialEq)]
enum Encoding {
    UrlNoPad,
    UrlPadded,
    Standard,
}

#[derive(Arbitrary, Debug, PartialEq)]
enum Wrapper {
    Bare,
    Bearer,
    BearerLower,
    Spaced,
}

#[derive(Arbitrary, Debug)]
struct Forged {
    alg: Alg,
    typ: bool,
    header_extra: Vec<(String, Scalar)>,
    sub: Claim<i64>,
    sub_as_number: bool,
    tv: Claim<i64>,
    kind: Claim<String>,
    refresh: bool,
    app: Claim<String>,
    exp: Expiry,
    iat: Option<u64>,
    extra_claims: Vec<(String, Scalar)>,
    key: Key,
    mac: Mac_,
    encoding: Encoding,
    mutation: Option<(u16, u8)>,
    wrapper: Wrapper,
}

fn claim<T: Into<Value> + Clone>(c: &Claim<T>, right: Value) -> Option<Value> {
    match c {
        Claim::Right => Some(right),
        Claim::Other(v) => Some(v.clone().into()),
        Claim::Wrong(s) => Some(s.json()),
        Claim::Missing => None,
    }
}

fn forged(f: Forged) {
    let w = world();
    let now = now_secs();
    let mut header = Map::new();
    let alg = match &f.alg {
        Alg::Hs256 => Some("HS256".to_string()),
        Alg::Hs384 => Some("HS384".into()),
        Alg::Hs512 => Some("HS512".into()),
        Alg::None => Some("none".into()),
        Alg::NoneUpper => Some("NONE".into()),
        Alg::Rs256 => Some("RS256".into()),
        Alg::Es256 => Some("ES256".into()),
        Alg::EdDsa => Some("EdDSA".into()),
        Alg::Missing => None,
        Alg::Other(s) => Some(s.clone()),
    };
    if let Some(alg) = alg {
        header.insert("alg".into(), json!(alg));
    }
    if f.typ {
        header.insert("typ".into(), json!("JWT"));
    }
    for (k, v) in &f.header_extra {
        header.insert(k.clone(), v.json());
    }
    let kind = if f.refresh { "refresh" } else { "access" };
    let mut claims = Map::new();
    let sub = if f.sub_as_number {
        json!(w.admin_id)
    } else {
        json!(w.admin_id.to_string())
    };
    let sub = match &f.sub {
        Claim::Other(id) => Some(json!(id.to_string())),
        other => claim(other, sub),
    };
    let entries = [
        ("sub", sub),
        ("tv", claim(&f.tv, json!(0))),
        ("kind", claim(&f.kind, json!(kind))),
        ("app", claim(&f.app, json!(APP))),
        (
            "exp",
            match &f.exp {
                Expiry::Future(s) => Some(json!(now + 60 + u64::from(*s))),
                Expiry::Past(s) => Some(json!(now.saturating_sub(60 + u64::from(*s)))),
                Expiry::Absolute(t) => Some(json!(t)),
                Expiry::Negative(t) => Some(json!(t)),
                Expiry::Fraction(t) => serde_json::Number::from_f64(*t).map(Value::Number),
                Expiry::Text(s) => Some(json!(s)),
                Expiry::Missing => None,
            },
        ),
        ("iat", f.iat.map(|t| json!(t))),
    ];
    for (name, value) in entries {
        if let Some(value) = value {
            claims.insert(name.into(), value);
        }
    }
    for (k, v) in &f.extra_claims {
        claims.insert(k.clone(), v.json());
    }
    let encode = |bytes: &[u8]| match f.encoding {
        Encoding::UrlNoPad => URL_SAFE_NO_PAD.encode(bytes),
        Encoding::UrlPadded => URL_SAFE.encode(bytes),
        Encoding::Standard => STANDARD.encode(bytes),
    };
    let message = format!(
        "{}.{}",
        encode(Value::Object(header).to_string().as_bytes()),
        encode(Value::Object(claims).to_string().as_bytes())
    );
    let key: &[u8] = match &f.key {
        Key::Right => SECRET.as_bytes(),
        Key::Wrong(k) => k,
        Key::Raw(_) | Key::NoSignature => b"",
    };
    let signature = match (&f.key, &f.mac) {
        (Key::Raw(bytes), _) => bytes.clone(),
        (Key::NoSignature, _) => Vec::new(),
        (_, Mac_::Sha256) => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key");
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        (_, Mac_::Sha384) => {
            let mut mac = Hmac::<sha2::Sha384>::new_from_slice(key).expect("any key");
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        (_, Mac_::Sha512) => {
            let mut mac = Hmac::<sha2::Sha512>::new_from_slice(key).expect("any key");
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    let mut token = format!("{message}.{}", encode(&signature)).into_bytes();
    let original = token.clone();
    if let Some((at, byte)) = f.mutation
        && !token.is_empty()
    {
        let at = usize::from(at) % token.len();
        token[at] = byte;
    }
    let mutated = token != original;
    let Ok(token) = String::from_utf8(token) else {
        return;
    };

    let canonical = f.alg == Alg::Hs256
        && f.header_extra.is_empty()
        && f.sub == Claim::Right
        && !f.sub_as_number
        && f.tv == Claim::Right
        && f.kind == Claim::Right
        && f.app == Claim::Right
        && f.iat.is_some()
        && f.extra_claims.is_empty()
        && f.key == Key::Right
        && f.mac == Mac_::Sha256
        && f.encoding == Encoding::UrlNoPad
        && !mutated;
    let want = if f.refresh {
        TokenKind::Refresh
    } else {
        TokenKind::Access
    };
    let verified = w.signer.verify(&token, want);
    if verified.is_ok() {
        assert_genuine(&token, kind, false);
    }
    match (&f.exp, canonical) {
        (Expiry::Future(_), true) => {
            assert!(
                verified.is_ok(),
                "a well-made token was refused: {verified:?}"
            );
        }
        (Expiry::Past(_), true) => {
            assert_eq!(verified.unwrap_err(), TokenError::Expired, "expired token");
        }
        _ => {}
    }
    let presented = match f.wrapper {
        Wrapper::Bare => token.clone(),
        Wrapper::Bearer => format!("Bearer {token}"),
        Wrapper::BearerLower => format!("bearer {token}"),
        Wrapper::Spaced => format!("  Bearer   {token} "),
    };
    if f.refresh {
        match w.rt.block_on(w.auth.refresh_grant(&token)) {
            Ok(_) => assert_genuine(&token, "refresh", true),
            Err(e) => assert_refusal(&e),
        }
    } else {
        let via_socket = w.rt.block_on(w.auth.identify_bearer(&presented));
        if let Ok(who) = &via_socket {
            assert_genuine(&token, "access", true);
            assert_admin(who, false);
        }
        if let Err(e) = &via_socket {
            assert_refusal(e);
        }
        if matches!(f.exp, Expiry::Future(_))
            && canonical
            && matches!(f.wrapper, Wrapper::Bare | Wrapper::Bearer)
        {
            assert!(
                via_socket.is_ok(),
                "a well-made token was refused: {via_socket:?}"
            );
        }
        // The Backand SDK refreshes on exactly this message.
        if matches!(f.exp, Expiry::Past(_)) && canonical && f.wrapper != Wrapper::BearerLower {
            let e = via_socket.expect_err("expired");
            assert_eq!(e.to_string(), INVALID_TOKEN);
        }
        let header = if f.wrapper == Wrapper::Bare {
            format!("Bearer {token}")
        } else {
            presented
        };
        authorization(header.as_bytes());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => authorization(rest),
        1 => {
            if let Ok(token) = std::str::from_utf8(rest) {
                bearer(token);
            }
        }
        2 => anonymous(rest),
        _ => {
            if let Ok(f) = Forged::arbitrary_take_rest(Unstructured::new(rest)) {
                forged(f);
            }
        }
    }
});
