//! Who is calling: identities, static bearer tokens and JWT verification.

use std::collections::HashSet;
use std::path::Path;

use fabric_worker::keys;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The name a tokens file uses for an admin identity (`{"<token>": "admin"}`).
pub const ADMIN: &str = "admin";

/// Shortest static token accepted in a tokens file (`openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_LEN: usize = 32;

/// Tokens with fewer distinct characters than this are refused as guessable.
const MIN_DISTINCT_CHARS: usize = 10;

/// The identity a tool call runs as.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// An agent: may read, acknowledge and inspect its own inbox only, and sends as itself.
    Agent(String),
    /// An admin: may act for any agent. The name is its default `from_agent`.
    Admin(String),
}

impl Identity {
    /// The agent id (or admin name).
    pub fn name(&self) -> &str {
        match self {
            Identity::Agent(a) | Identity::Admin(a) => a,
        }
    }

    /// Whether this identity is an admin.
    pub fn is_admin(&self) -> bool {
        matches!(self, Identity::Admin(_))
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Agent(a) => write!(f, "agent {a:?}"),
            Identity::Admin(a) => write!(f, "admin {a:?}"),
        }
    }
}

/// Why a bearer token was refused (the text goes into `error_description`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    /// An `Authorization` header that is not a bearer token.
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    /// The token is not known / its signature or claims are invalid.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The JWT has expired.
    #[error("the token has expired")]
    Expired,
}

/// How JWTs are verified.
#[derive(Clone)]
pub struct JwtConfig {
    key: DecodingKey,
    validation: Validation,
    /// The issuer required, if any (also advertised as the authorization server).
    pub issuer: Option<String>,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithms", &self.validation.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.validation.aud)
            .finish_non_exhaustive()
    }
}

impl JwtConfig {
    /// HS256 with a shared secret (the raw bytes of the secret file, surrounding whitespace trimmed).
    pub fn hs256(secret: &[u8]) -> Result<Self> {
        let secret = trim_ascii(secret);
        if secret.len() < 32 {
            return Err(Error::Config(format!(
                "the HS256 secret is {} bytes long; use at least 32 random bytes (e.g. `openssl rand -hex 32`)",
                secret.len()
            )));
        }
        Ok(Self::with(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// RS256 with a PEM-encoded RSA public key (`-----BEGIN PUBLIC KEY-----` or `BEGIN RSA PUBLIC KEY`).
    pub fn rs256_pem(pem: &[u8]) -> Result<Self> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| {
            Error::Config(format!(
                "cannot read the RS256 public key: {e}; expected a PEM RSA public key (-----BEGIN PUBLIC KEY-----)"
            ))
        })?;
        Ok(Self::with(key, Algorithm::RS256))
    }

    fn with(key: DecodingKey, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.leeway = 30;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtConfig {
            key,
            validation,
            issuer: None,
        }
    }

    /// Requires this `iss`.
    #[must_use]
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        let iss = iss.into();
        self.validation.set_issuer(&[&iss]);
        self.validation.required_spec_claims.insert("iss".into());
        self.issuer = Some(iss);
        self
    }

    /// Requires this `aud` (one of the token's audiences must match).
    #[must_use]
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.validation.set_audience(&[aud.into()]);
        self.validation.validate_aud = true;
        self.validation.required_spec_claims.insert("aud".into());
        self
    }

    fn verify(&self, token: &str) -> std::result::Result<String, AuthError> {
        #[derive(Deserialize)]
        struct Claims {
            sub: String,
        }
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) => Ok(data.claims.sub),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid(format!(
                    "algorithm not accepted (this server accepts {:?})",
                    self.validation.algorithms
                )),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer (iss)".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience (aud)".into()),
                ErrorKind::ImmatureSignature => {
                    AuthError::Invalid("not valid yet (nbf is in the future)".into())
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("the JWT lacks the required claim {c:?}"))
                }
                _ => AuthError::Invalid(format!("not a valid JWT ({e})")),
            }),
        }
    }
}

/// Verifies bearer tokens: static per-agent tokens, and/or JWTs.
#[derive(Clone, Default)]
pub struct Authenticator {
    tokens: Vec<(Vec<u8>, Identity)>,
    jwt: Option<JwtConfig>,
    admins: HashSet<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens themselves.
        let identities: Vec<&Identity> = self.tokens.iter().map(|(_, id)| id).collect();
        f.debug_struct("Authenticator")
            .field("token_identities", &identities)
            .field("jwt", &self.jwt)
            .field("admins", &self.admins)
            .finish()
    }
}

/// The tokens file: `{"<token>": "<agent id>" | "admin"}`.
/// A tokens file: the pairs in file order, so that a token listed twice is seen (a map
/// would silently keep one of them).
struct TokensFile(Vec<(String, String)>);

impl<'de> Deserialize<'de> for TokensFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = TokensFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of \"<token>\": \"<agent id or admin>\"")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<TokensFile, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    out.push(pair);
                }
                Ok(TokensFile(out))
            }
        }
        d.deserialize_map(Pairs)
    }
}

impl Authenticator {
    /// An authenticator that accepts nothing (add tokens or a JWT key).
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no way to authenticate is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.jwt.is_none()
    }

    /// The JWT configuration, if any.
    pub fn jwt(&self) -> Option<&JwtConfig> {
        self.jwt.as_ref()
    }

    /// Agents (token values or JWT subjects) that are admins.
    #[must_use]
    pub fn with_admins(mut self, admins: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.admins.extend(admins.into_iter().map(Into::into));
        // Identities already loaded from a tokens file follow the admin list too.
        for (_, id) in &mut self.tokens {
            if let Identity::Agent(a) = id
                && self.admins.contains(a.as_str())
            {
                *id = Identity::Admin(a.clone());
            }
        }
        self
    }

    /// Adds one static token.
    pub fn add_token(&mut self, token: &str, who: &str) -> Result<()> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(Error::Config(format!(
                "a token for {who:?} is {} characters long; use at least {MIN_TOKEN_LEN} random characters (e.g. `openssl rand -hex 32`)",
                token.len()
            )));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Config(format!(
                "the token for {who:?} contains whitespace or control characters"
            )));
        }
        let distinct: HashSet<char> = token.chars().collect();
        if distinct.len() < MIN_DISTINCT_CHARS {
            return Err(Error::Config(format!(
                "the token for {who:?} uses only {} different characters: too easy to guess; use random characters (e.g. `openssl rand -hex 32`)",
                distinct.len()
            )));
        }
        let identity = if who == ADMIN || self.admins.contains(who) {
            Identity::Admin(who.to_owned())
        } else {
            keys::validate_agent(who).map_err(|e| {
                Error::Config(format!(
                    "tokens file: {e} (values are agent ids or \"{ADMIN}\")"
                ))
            })?;
            Identity::Agent(who.to_owned())
        };
        if self
            .tokens
            .iter()
            .any(|(t, _)| constant_time_eq(t, token.as_bytes()))
        {
            return Err(Error::Config(format!(
                "the same token is listed twice (second time for {who:?})"
            )));
        }
        self.tokens.push((token.as_bytes().to_vec(), identity));
        Ok(())
    }

    /// Loads a tokens file: a JSON object mapping each token to an agent id or `"admin"`.
    pub fn load_tokens_file(&mut self, path: &Path) -> Result<usize> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read tokens file {}: {e}", path.display()))
        })?;
        let file: TokensFile = serde_json::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "tokens file {} is not a JSON object of \"<token>\": \"<agent id or admin>\": {e}",
                path.display()
            ))
        })?;
        let n = file.0.len();
        for (token, who) in file.0 {
            self.add_token(&token, &who)
                .map_err(|e| Error::Config(format!("tokens file {}: {e}", path.display())))?;
        }
        warn_if_others_can_read(path);
        Ok(n)
    }

    /// Accepts JWTs verified with this configuration.
    pub fn set_jwt(&mut self, jwt: JwtConfig) {
        self.jwt = Some(jwt);
    }

    /// Checks an `Authorization` header value.
    pub fn authenticate_header(
        &self,
        header: Option<&str>,
    ) -> std::result::Result<Identity, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        self.authenticate(token)
    }

    /// Checks a bearer token.
    pub fn authenticate(&self, token: &str) -> std::result::Result<Identity, AuthError> {
        // Compare against every static token, without stopping at the first match.
        let mut found: Option<&Identity> = None;
        for (t, id) in &self.tokens {
            if constant_time_eq(t, token.as_bytes()) {
                found = Some(id);
            }
        }
        if let Some(id) = found {
            return Ok(id.clone());
        }
        match &self.jwt {
            Some(jwt) if token.matches('.').count() == 2 => {
                let sub = jwt.verify(token)?;
                // A JWT grants admin only to subjects listed with --admin-agent: an identity
                // provider may well have a user called "admin".
                if self.admins.contains(&sub) {
                    return Ok(Identity::Admin(sub));
                }
                keys::validate_agent(&sub).map_err(|e| {
                    AuthError::Invalid(format!("the sub claim is not an agent id: {e}"))
                })?;
                Ok(Identity::Agent(sub))
            }
            _ => Err(AuthError::Invalid("unknown token".into())),
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = 0u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0 && a.len() == b.len()
}

/// Says, loudly, when a secrets file can be read by other users of the machine.
pub(crate) fn warn_if_others_can_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        let text = format!(
            "WARNING: {} holds secrets and other users can read it (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
        tracing::warn!("{text}");
        eprintln!("{text}");
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

    fn now() -> u64 {
        u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
    }

    fn hs(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn static_tokens() {
        let mut a = Authenticator::new();
        a.add_token("percy-token-0123456789abcdefghijk", "percy")
            .unwrap();
        a.add_token("admin-token-0123456789abcdefghijk", "admin")
            .unwrap();
        assert!(a.add_token("short", "percy").is_err());
        assert!(
            a.add_token("percy-token-0123456789", "percy").is_err(),
            "22 characters"
        );
        let e = a
            .add_token("abababababababababababababababababab", "percy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("too easy to guess"), "{e}");
        assert!(
            a.add_token("bad agent token 123456 abcdefghijk", "percy")
                .is_err()
        );
        assert!(
            a.add_token("another-token-0123456789abcdefghij", "per cy")
                .is_err()
        );
        assert_eq!(
            a.authenticate("percy-token-0123456789abcdefghijk"),
            Ok(Identity::Agent("percy".into()))
        );
        assert_eq!(
            a.authenticate_header(Some("Bearer admin-token-0123456789abcdefghijk")),
            Ok(Identity::Admin("admin".into()))
        );
        assert_eq!(a.authenticate_header(None), Err(AuthError::Missing));
        assert_eq!(
            a.authenticate_header(Some("Basic abc")),
            Err(AuthError::Malformed)
        );
        assert!(matches!(
            a.authenticate("percy-token-0123456789abcdefghij"),
            Err(AuthError::Invalid(_))
        ));
        let a = a.with_admins(["percy"]);
        assert_eq!(
            a.authenticate("percy-token-0123456789abcdefghijk"),
            Ok(Identity::Admin("percy".into()))
        );
    }

    #[test]
    fn hs256_jwts() {
        let mut a = Authenticator::new();
        a.set_jwt(
            JwtConfig::hs256(SECRET)
                .unwrap()
                .issuer("https://issuer.test")
                .audience("fabric"),
        );
        let good = json!({"sub": "percy", "exp": now() + 600, "iss": "https://issuer.test", "aud": "fabric"});
        assert_eq!(
            a.authenticate(&hs(&good)),
            Ok(Identity::Agent("percy".into()))
        );
        let expired = json!({"sub": "percy", "exp": now() - 3600, "iss": "https://issuer.test", "aud": "fabric"});
        assert_eq!(a.authenticate(&hs(&expired)), Err(AuthError::Expired));
        let no_exp = json!({"sub": "percy", "iss": "https://issuer.test", "aud": "fabric"});
        assert!(
            matches!(a.authenticate(&hs(&no_exp)), Err(AuthError::Invalid(m)) if m.contains("exp"))
        );
        let wrong_iss =
            json!({"sub": "percy", "exp": now() + 600, "iss": "https://other", "aud": "fabric"});
        assert!(
            matches!(a.authenticate(&hs(&wrong_iss)), Err(AuthError::Invalid(m)) if m.contains("iss"))
        );
        let wrong_aud =
            json!({"sub": "percy", "exp": now() + 600, "iss": "https://issuer.test", "aud": "x"});
        assert!(
            matches!(a.authenticate(&hs(&wrong_aud)), Err(AuthError::Invalid(m)) if m.contains("aud"))
        );
        let bad_sub = json!({"sub": "per cy", "exp": now() + 600, "iss": "https://issuer.test", "aud": "fabric"});
        assert!(matches!(
            a.authenticate(&hs(&bad_sub)),
            Err(AuthError::Invalid(_))
        ));
        let admin = json!({"sub": "admin", "exp": now() + 600, "iss": "https://issuer.test", "aud": "fabric"});
        assert_eq!(
            a.authenticate(&hs(&admin)),
            Ok(Identity::Agent("admin".into()))
        );
        let listed = a.clone().with_admins(["admin"]);
        assert_eq!(
            listed.authenticate(&hs(&admin)),
            Ok(Identity::Admin("admin".into()))
        );
        let other_key = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "percy", "exp": now() + 600, "iss": "https://issuer.test", "aud": "fabric"}),
            &EncodingKey::from_secret(b"another-secret-another-secret-another"),
        )
        .unwrap();
        assert!(
            matches!(a.authenticate(&other_key), Err(AuthError::Invalid(m)) if m.contains("signature"))
        );
        assert!(JwtConfig::hs256(b"short").is_err());
    }

    #[test]
    fn debug_output_hides_tokens() {
        let mut a = Authenticator::new();
        a.add_token("secret-token-0123456789abcdefghijk", "percy")
            .unwrap();
        let text = format!("{a:?}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(text.contains("percy"), "{text}");
    }

    #[test]
    fn identities() {
        let a = Identity::Agent("percy".into());
        assert!(!a.is_admin());
        assert!(Identity::Admin("admin".into()).is_admin());
        assert_eq!(a.to_string(), "agent \"percy\"");
    }
}
