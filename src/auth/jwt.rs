//! JWT bearer tokens: HS256 with `RESTASH_JWT_SECRET`; RS256, ES256 and EdDSA with the
//! public keys of `RESTASH_JWT_KEYS` (a PEM file of one or more public keys, or a JWKS
//! file). `exp` is required, `exp` and `nbf` are enforced (5 s of leeway), `iss` and
//! `aud` are required and checked when `RESTASH_JWT_ISSUER` / `RESTASH_JWT_AUDIENCE` are set.
//! With `RESTASH_JWT_MAX_LIFETIME_SECONDS`, `iat` is required too and `exp - iat` may not
//! exceed it. The HS256 secret must be at least 32 bytes long (RFC 7518, section 3.2).
//!
//! Claims carry what a token-file entry carries:
//!
//! ```json
//! {"sub": "shop", "jti": "…", "exp": 1767225600,
//!  "mode": "standard", "prefixes": ["shop:"], "backend": "analytics",
//!  "commands": {"allow": ["@read"], "deny": ["keys"]}, "rate": {"per_second": 10, "burst": 20}}
//! ```
//!
//! The header's algorithm must be one a configured key is for: HS256 only with the
//! secret, the others only with a public key of their own family (no `none`, no
//! HS/RS confusion); keys embedded in the header (`jwk`, `jku`, `x5c`) are ignored.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::file::{RateDoc, RulesDoc, ScopeDoc};
use crate::policy::scope::Scope;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECONDS: u64 = 5;

/// The shortest HS256 secret accepted: as long as the hash, 256 bits (RFC 7518,
/// section 3.2). A shorter one can be found by trying words and short strings offline
/// against a single captured token.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why an HS256 secret cannot be used (`None`: it can).
pub fn weak_secret(secret: &str) -> Option<String> {
    (secret.len() < MIN_SECRET_BYTES).then(|| {
        format!(
            "RESTASH_JWT_SECRET is {} bytes long; HS256 needs at least {MIN_SECRET_BYTES} \
             (256 bits, RFC 7518 section 3.2): generate one with `openssl rand -base64 32`",
            secret.len()
        )
    })
}

/// Where JWT verification gets its keys and expectations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtSettings {
    /// `RESTASH_JWT_SECRET`: the HS256 secret.
    pub secret: Option<String>,
    /// `RESTASH_JWT_KEYS`: a PEM or JWKS file of public keys.
    pub keys_file: Option<PathBuf>,
    /// `RESTASH_JWT_ISSUER`: the required `iss`.
    pub issuer: Option<String>,
    /// `RESTASH_JWT_AUDIENCE`: the required `aud`.
    pub audience: Option<String>,
    /// `RESTASH_JWT_MAX_LIFETIME_SECONDS`: the longest `exp - iat` accepted (`iat`
    /// then required).
    pub max_lifetime: Option<u64>,
}

impl JwtSettings {
    /// Whether JWTs are accepted at all.
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.keys_file.is_some()
    }
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read RESTASH_JWT_KEYS {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no usable key.
    #[error("RESTASH_JWT_KEYS {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// `RESTASH_JWT_SECRET` is too short (see [`weak_secret`]).
    #[error("{0}")]
    WeakSecret(String),
}

/// Why a JWT was refused (each becomes a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtRefusal {
    /// Malformed, badly signed, wrong algorithm, issuer or audience, or bad claims.
    Invalid,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
    /// Its `jti` is on the revocation list.
    Revoked,
    /// Without `iat`, with `iat` in the future, or `exp - iat` above
    /// `RESTASH_JWT_MAX_LIFETIME_SECONDS`.
    TooLongLived,
}

struct PublicKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies JWTs with the configured keys.
pub struct JwtVerifier {
    secret: Option<DecodingKey>,
    keys: Vec<PublicKey>,
    issuer: Option<String>,
    audience: Option<String>,
    max_lifetime: Option<u64>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.secret.is_some())
            .field("public_keys", &self.keys.len())
            .finish()
    }
}

/// The claims restash reads.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Claims {
    /// Subject: the token's name in logs, metrics and rate limits (`jwt:<sub>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Token id, for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `standard`, `read-only` or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Key prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// Backend name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Command rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<RulesClaim>,
    /// Rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateClaim>,
    /// Every other claim (`exp`, `iss`, an identity provider's own): ignored, but
    /// looked at for near misses of the scope's names.
    #[serde(flatten, skip_serializing)]
    pub others: std::collections::HashMap<String, serde_json::Value>,
}

/// The scope's claim names.
const SCOPE_CLAIMS: [&str; 5] = ["mode", "prefixes", "backend", "commands", "rate"];

/// A claim that looks like a misspelt scope claim (another case, or singular or plural:
/// `prefix`, `Prefixes`, `command`, `rates`): a token carrying one would otherwise be
/// taken as unrestricted.
fn near_miss(claim: &str) -> Option<&'static str> {
    fn forms(word: &str) -> [&str; 3] {
        [
            word,
            word.strip_suffix('s').unwrap_or(word),
            word.strip_suffix("es").unwrap_or(word),
        ]
    }
    let lower = claim.to_ascii_lowercase();
    let claim_forms = forms(&lower);
    SCOPE_CLAIMS
        .into_iter()
        .find(|name| forms(name).iter().any(|f| claim_forms.contains(f)))
}

/// `commands` claim.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RulesClaim {
    /// Only these, when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Never these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// `rate` claim.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateClaim {
    /// Requests per second.
    pub per_second: f64,
    /// Burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl Claims {
    /// The scope these claims grant to `token` (the token they came in).
    pub fn to_scope(&self, token: &str) -> Result<Scope, String> {
        if let Some((claim, meant)) = self
            .others
            .keys()
            .find_map(|claim| near_miss(claim).map(|meant| (claim, meant)))
        {
            return Err(format!(
                "claim {claim:?} is not a scope claim; did you mean {meant:?}?"
            ));
        }
        let commands = self.commands.clone().unwrap_or_default();
        let doc = ScopeDoc {
            mode: self.mode.clone(),
            prefixes: self.prefixes.clone(),
            backend: self.backend.clone(),
            commands: RulesDoc {
                allow: commands.allow,
                deny: commands.deny,
            },
            rate: self.rate.map(|r| RateDoc {
                per_second: r.per_second,
                burst: r.burst,
            }),
        };
        doc.to_scope(&self.scope_name(token))
    }

    /// Checks that the token lives at most `max` seconds (`exp - iat`) and was not
    /// issued in the future (`iat` after `now`, beyond the leeway).
    fn lifetime_within(&self, max: u64, now: u64) -> Result<(), String> {
        // A NumericDate may have a fraction (RFC 7519, section 2): whole seconds count.
        let seconds = |claim: &str| {
            self.others
                .get(claim)
                .and_then(serde_json::Value::as_f64)
                .filter(|value| value.is_finite() && *value >= 0.0)
                .map(|value| value as u64)
        };
        let Some(iat) = seconds("iat") else {
            return Err(format!(
                "no iat claim (a number of seconds), required by \
                 RESTASH_JWT_MAX_LIFETIME_SECONDS={max}"
            ));
        };
        // `exp` is required and was checked by the signature validation.
        let exp = seconds("exp").unwrap_or(u64::MAX);
        if iat > now + LEEWAY_SECONDS {
            return Err(format!("iat {iat} is in the future (now {now})"));
        }
        let lifetime = exp.saturating_sub(iat);
        if lifetime > max {
            return Err(format!(
                "lifetime {lifetime} s (exp - iat) exceeds RESTASH_JWT_MAX_LIFETIME_SECONDS={max}"
            ));
        }
        Ok(())
    }

    /// The scope's name, which also keys its rate limit: `jwt:<sub>`. A token
    /// without `sub` is named by its `jti` (`jwt:-jti:<jti>`), else by the start of
    /// the SHA-256 of its signed part (`jwt:-sha256:<16 hex digits>`; not the
    /// signature, which some algorithms allow to be written two ways), so that
    /// anonymous tokens do not share one rate limit: they did, as `jwt:-`, and one
    /// client could spend everyone's. A `sub` that starts with `-` is named
    /// `jwt:-sub:<sub>`, so that no `sub` takes an anonymous token's name. An empty
    /// `sub` or `jti` counts as absent.
    fn scope_name(&self, token: &str) -> String {
        fn present(claim: &Option<String>) -> Option<&str> {
            claim.as_deref().filter(|value| !value.is_empty())
        }
        match (present(&self.sub), present(&self.jti)) {
            (Some(sub), _) if sub.starts_with('-') => format!("jwt:-sub:{sub}"),
            (Some(sub), _) => format!("jwt:{sub}"),
            (None, Some(jti)) => format!("jwt:-jti:{jti}"),
            (None, None) => {
                let signed = token.rfind('.').map_or(token, |dot| &token[..dot]);
                let digest = super::tokens::digest(signed);
                format!("jwt:-sha256:{}", hex::encode(&digest[..8]))
            }
        }
    }
}

impl JwtVerifier {
    /// Loads the keys; `None` when JWTs are not configured.
    pub fn load(settings: &JwtSettings) -> Result<Option<JwtVerifier>, KeyError> {
        if !settings.enabled() {
            return Ok(None);
        }
        if let Some(reason) = settings.secret.as_deref().and_then(weak_secret) {
            return Err(KeyError::WeakSecret(reason));
        }
        let keys = match &settings.keys_file {
            Some(path) => load_keys(path)?,
            None => Vec::new(),
        };
        Ok(Some(JwtVerifier {
            secret: settings
                .secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            max_lifetime: settings.max_lifetime,
        }))
    }

    /// Verifies `token` and returns its scope.
    pub fn verify(&self, token: &str, revoked: &HashSet<String>) -> Result<Scope, JwtRefusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRefusal::Invalid)?;
        // RFC 7515 section 4.1.11: a token naming critical extensions must be refused by
        // a verifier that does not implement them, and restash implements none (a
        // `"crit":["b64"]` token, say, signs its payload unencoded).
        if header.crit.is_some() {
            return Err(JwtRefusal::Invalid);
        }
        let candidates: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => self.secret.iter().collect(),
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => self
                .keys
                .iter()
                .filter(|k| k.algorithm == header.alg)
                .filter(|k| match (&header.kid, &k.kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    _ => true,
                })
                .map(|k| &k.key)
                .collect(),
            _ => Vec::new(),
        };
        let validation = self.validation(header.alg);
        let mut outcome = Err(JwtRefusal::Invalid);
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                Err(error) => match error.kind() {
                    ErrorKind::ExpiredSignature => return Err(JwtRefusal::Expired),
                    ErrorKind::ImmatureSignature => return Err(JwtRefusal::NotYetValid),
                    // Try the next key of the same algorithm.
                    _ => continue,
                },
            }
        }
        let claims = outcome?;
        if claims.jti.as_ref().is_some_and(|jti| revoked.contains(jti)) {
            return Err(JwtRefusal::Revoked);
        }
        if let Some(max) = self.max_lifetime {
            if let Err(reason) = claims.lifetime_within(max, jsonwebtoken::get_current_timestamp())
            {
                tracing::info!(sub = claims.sub.as_deref().unwrap_or("-"), %reason, "JWT refused");
                return Err(JwtRefusal::TooLongLived);
            }
        }
        claims.to_scope(token).map_err(|reason| {
            // The caller learns nothing; the operator learns what is wrong.
            tracing::info!(sub = claims.sub.as_deref().unwrap_or("-"), %reason, "JWT refused");
            JwtRefusal::Invalid
        })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Without a configured audience, `aud` is not checked (the crate would
            // otherwise refuse every token that carries one).
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// Reads public keys from a JWKS file (JSON) or a PEM file of one or more keys.
fn load_keys(path: &Path) -> Result<Vec<PublicKey>, KeyError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: shown.clone(),
        source,
    })?;
    let invalid = |reason: String| KeyError::Invalid {
        path: shown.clone(),
        reason,
    };
    let keys = if text.trim_start().starts_with('{') {
        let set: JwkSet =
            serde_json::from_str(&text).map_err(|e| invalid(format!("not a JWKS: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            // Only keys published for signatures (or for no stated use) verify
            // tokens; `"use": "enc"` keys are for encrypting to their owner.
            if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    Algorithm::EdDSA
                }
                // Symmetric or unsupported keys: HS256 uses RESTASH_JWT_SECRET only.
                _ => continue,
            };
            if let Some(declared) = jwk.common.key_algorithm {
                if Algorithm::try_from(declared).ok() != Some(algorithm) {
                    continue;
                }
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(e.to_string()))?;
            keys.push(PublicKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        keys
    } else {
        let mut keys = Vec::new();
        for block in pem_blocks(&text) {
            let parsed = DecodingKey::from_rsa_pem(block.as_bytes())
                .map(|k| (Algorithm::RS256, k))
                .or_else(|_| {
                    DecodingKey::from_ec_pem(block.as_bytes()).map(|k| (Algorithm::ES256, k))
                })
                .or_else(|_| {
                    DecodingKey::from_ed_pem(block.as_bytes()).map(|k| (Algorithm::EdDSA, k))
                })
                .map_err(|_| {
                    invalid("a PEM block is not an RSA, P-256 or Ed25519 public key".into())
                })?;
            keys.push(PublicKey {
                kid: None,
                algorithm: parsed.0,
                key: parsed.1,
            });
        }
        keys
    };
    if keys.is_empty() {
        return Err(invalid("no RSA, P-256 or Ed25519 public key found".into()));
    }
    Ok(keys)
}

/// Each `-----BEGIN …-----` … `-----END …-----` block of a PEM file.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            current = Some(format!("{line}\n"));
        } else if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                blocks.extend(current.take());
            }
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    /// A 32-byte HS256 secret, the shortest accepted.
    const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-0032";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: &serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn verifier(issuer: Option<&str>, audience: Option<&str>) -> JwtVerifier {
        JwtVerifier::load(&JwtSettings {
            secret: Some(SECRET.into()),
            keys_file: None,
            issuer: issuer.map(String::from),
            audience: audience.map(String::from),
            max_lifetime: None,
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    fn hs256_claims_become_a_scope() {
        let v = verifier(None, None);
        let token = hs(
            &serde_json::json!({"sub": "shop", "exp": now() + 60, "mode": "read-only",
                "prefixes": ["shop:"], "commands": {"deny": ["KEYS"]}, "rate": {"per_second": 5},
                "aud": "anything"}),
            SECRET,
        );
        let scope = v.verify(&token, &HashSet::new()).unwrap();
        assert_eq!(scope.name, "jwt:shop");
        assert_eq!(scope.mode, crate::policy::scope::Mode::ReadOnly);
        assert_eq!(scope.commands.deny, vec!["keys".to_string()]);
        assert_eq!(scope.rate.unwrap().burst, 5);
    }

    #[test]
    fn misspelt_scope_claims_refuse_the_token_and_other_claims_are_ignored() {
        let v = verifier(None, None);
        let with = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({"sub": "shop", "exp": now() + 60});
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v.verify(&hs(&claims, SECRET), &HashSet::new())
        };
        for typo in [
            serde_json::json!({"prefix": ["shop:"]}),
            serde_json::json!({"Prefixes": ["shop:"]}),
            serde_json::json!({"command": {"deny": ["flushall"]}}),
            serde_json::json!({"Mode": "read-only"}),
            serde_json::json!({"rates": {"per_second": 5}}),
        ] {
            assert_eq!(
                with(typo.clone()).err(),
                Some(JwtRefusal::Invalid),
                "{typo}"
            );
        }
        let idp = with(serde_json::json!({"email": "a@b", "scope": "openid", "azp": "x"}));
        assert!(idp.is_ok(), "{idp:?}");
    }

    #[test]
    fn tokens_without_sub_are_named_apart() {
        let v = verifier(None, None);
        let name = |claims: serde_json::Value| {
            let token = hs(&claims, SECRET);
            v.verify(&token, &HashSet::new()).unwrap().name
        };
        let exp = now() + 60;
        assert_eq!(
            name(serde_json::json!({"sub": "shop", "exp": exp})),
            "jwt:shop"
        );
        assert_eq!(
            name(serde_json::json!({"jti": "j7", "exp": exp})),
            "jwt:-jti:j7"
        );
        let first = name(serde_json::json!({"exp": exp}));
        let second = name(serde_json::json!({"exp": exp + 1}));
        assert!(
            first.starts_with("jwt:-sha256:") && first.len() == 28,
            "{first}"
        );
        assert_ne!(first, second, "two anonymous tokens share a rate limit");
        assert_eq!(
            first,
            name(serde_json::json!({"exp": exp})),
            "the same token"
        );
        // No sub can take an anonymous token's name; empty claims count as absent.
        assert_eq!(
            name(serde_json::json!({"sub": "-jti:j7", "exp": exp})),
            "jwt:-sub:-jti:j7"
        );
        assert_eq!(
            name(serde_json::json!({"sub": "", "jti": "j7", "exp": exp})),
            "jwt:-jti:j7"
        );
        assert!(name(serde_json::json!({"jti": "", "exp": exp})).starts_with("jwt:-sha256:"));
        // Only the signed part names the token: another signature, the same name.
        let anonymous = Claims::default();
        assert_eq!(
            anonymous.scope_name("header.payload.one"),
            anonymous.scope_name("header.payload.two")
        );
        assert_ne!(
            anonymous.scope_name("header.payload.one"),
            anonymous.scope_name("header.other.one")
        );
    }

    #[test]
    fn refusals() {
        let v = verifier(Some("iss-a"), Some("aud-a"));
        let good = serde_json::json!({"sub": "x", "exp": now() + 60, "iss": "iss-a", "aud": "aud-a", "jti": "j1"});
        assert!(v.verify(&hs(&good, SECRET), &HashSet::new()).is_ok());
        let revoked: HashSet<String> = ["j1".to_string()].into();
        assert_eq!(
            v.verify(&hs(&good, SECRET), &revoked),
            Err(JwtRefusal::Revoked)
        );
        assert_eq!(
            v.verify(&hs(&good, "other"), &HashSet::new()),
            Err(JwtRefusal::Invalid)
        );
        let mut expired = good.clone();
        expired["exp"] = (now() - 60).into();
        assert_eq!(
            v.verify(&hs(&expired, SECRET), &HashSet::new()),
            Err(JwtRefusal::Expired)
        );
        let mut early = good.clone();
        early["nbf"] = (now() + 60).into();
        assert_eq!(
            v.verify(&hs(&early, SECRET), &HashSet::new()),
            Err(JwtRefusal::NotYetValid)
        );
        for (claim, value) in [("iss", "iss-b"), ("aud", "aud-b")] {
            let mut wrong = good.clone();
            wrong[claim] = value.into();
            assert_eq!(
                v.verify(&hs(&wrong, SECRET), &HashSet::new()),
                Err(JwtRefusal::Invalid)
            );
            let mut missing = good.clone();
            missing.as_object_mut().unwrap().remove(claim);
            assert_eq!(
                v.verify(&hs(&missing, SECRET), &HashSet::new()),
                Err(JwtRefusal::Invalid)
            );
        }
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            v.verify(&hs(&no_exp, SECRET), &HashSet::new()),
            Err(JwtRefusal::Invalid)
        );
        let mut bad_mode = good.clone();
        bad_mode["mode"] = "root".into();
        assert_eq!(
            v.verify(&hs(&bad_mode, SECRET), &HashSet::new()),
            Err(JwtRefusal::Invalid)
        );
        assert_eq!(
            v.verify("not.a.jwt", &HashSet::new()),
            Err(JwtRefusal::Invalid)
        );
        // Critical header extensions: none is implemented, so any is refused.
        for crit in [vec!["b64".to_string()], vec!["exp".to_string()], Vec::new()] {
            let mut header = Header::new(Algorithm::HS256);
            header.crit = Some(crit.clone());
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let token = encode(&header, &good, &key).unwrap();
            assert_eq!(
                v.verify(&token, &HashSet::new()),
                Err(JwtRefusal::Invalid),
                "crit {crit:?}"
            );
        }
    }

    #[test]
    fn a_secret_shorter_than_32_bytes_is_refused() {
        assert_eq!(SECRET.len(), MIN_SECRET_BYTES);
        let short = &SECRET[1..];
        let error = JwtVerifier::load(&JwtSettings {
            secret: Some(short.into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "RESTASH_JWT_SECRET is 31 bytes long; HS256 needs at least 32 \
             (256 bits, RFC 7518 section 3.2): generate one with `openssl rand -base64 32`"
        );
        assert!(weak_secret(SECRET).is_none());
        // An empty secret is as weak as a short one (with public keys only, the
        // variable is left unset).
        assert!(weak_secret("").is_some());
    }

    #[test]
    fn the_maximum_lifetime_needs_iat_and_bounds_exp_minus_iat() {
        let v = JwtVerifier::load(&JwtSettings {
            secret: Some(SECRET.into()),
            max_lifetime: Some(3600),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let verify = |claims: serde_json::Value| v.verify(&hs(&claims, SECRET), &HashSet::new());
        let t = now();
        assert!(verify(serde_json::json!({"sub": "x", "iat": t, "exp": t + 3600})).is_ok());
        // Issued a while ago: what counts is exp - iat, not the time left.
        assert!(verify(serde_json::json!({"sub": "x", "iat": t - 3000, "exp": t + 600})).is_ok());
        for (why, claims) in [
            (
                "one second too long",
                serde_json::json!({"sub": "x", "iat": t, "exp": t + 3601}),
            ),
            ("no iat", serde_json::json!({"sub": "x", "exp": t + 60})),
            (
                "iat not a number",
                serde_json::json!({"sub": "x", "iat": "now", "exp": t + 60}),
            ),
            (
                "iat in the future",
                serde_json::json!({"sub": "x", "iat": t + 600, "exp": t + 900}),
            ),
        ] {
            assert_eq!(verify(claims), Err(JwtRefusal::TooLongLived), "{why}");
        }
        // A NumericDate with a fraction counts in whole seconds.
        let fractional = serde_json::json!({"sub": "x", "iat": t as f64 + 0.5, "exp": t + 60});
        assert!(verify(fractional).is_ok());
        // Within the leeway, a slightly fast issuer's clock is accepted.
        assert!(verify(serde_json::json!({"sub": "x", "iat": t + 2, "exp": t + 60})).is_ok());
        // Without the setting, neither iat nor a bound is needed.
        let open = verifier(None, None);
        let long = serde_json::json!({"sub": "x", "exp": t + 10 * 365 * 86_400});
        assert!(open.verify(&hs(&long, SECRET), &HashSet::new()).is_ok());
    }

    #[test]
    fn pem_blocks_split() {
        let text = "junk\n-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----\n-----BEGIN PUBLIC KEY-----\nBBB\n-----END PUBLIC KEY-----\n";
        let blocks = pem_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert!(blocks[1].contains("BBB"));
    }
}
