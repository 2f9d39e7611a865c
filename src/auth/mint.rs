//! `restash token`: mints a JWT for operators (a small hand-written argument parser).
//!
//! ```text
//! restash token --sub NAME [--mode standard|read-only|admin] [--prefix P]… [--backend NAME]
//!               [--allow CMD]… [--deny CMD]… [--rate PER_SECOND[:BURST]]
//!               [--ttl 3600|90s|15m|12h|30d] [--not-before DURATION] [--jti ID]
//!               [--issuer ISS] [--audience AUD] [--alg HS256|RS256|ES256|EdDSA] [--key PRIVATE.pem]
//! ```
//! HS256 signs with `RESTASH_JWT_SECRET`; the other algorithms need `--key`, a PEM
//! private key. `--issuer` and `--audience` default to `RESTASH_JWT_ISSUER` and
//! `RESTASH_JWT_AUDIENCE`; `--ttl` defaults to one hour; `--jti` to a random id.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

use crate::policy::scope::Mode;

/// The usage text.
pub const USAGE: &str = "usage: restash token --sub NAME [--mode standard|read-only|admin] [--prefix P]... \
[--backend NAME] [--allow CMD]... [--deny CMD]... [--rate PER_SECOND[:BURST]] [--ttl DURATION] \
[--not-before DURATION] [--jti ID] [--issuer ISS] [--audience AUD] [--alg HS256|RS256|ES256|EdDSA] [--key PRIVATE.pem]";

/// Why no token was minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Bad command line.
    #[error("{0}\n{USAGE}")]
    Usage(String),
    /// The key cannot be used.
    #[error("{0}")]
    Key(String),
}

#[derive(Debug, Default)]
struct Options {
    sub: Option<String>,
    mode: Option<String>,
    prefixes: Vec<String>,
    backend: Option<String>,
    allow: Vec<String>,
    deny: Vec<String>,
    rate: Option<String>,
    ttl: Option<String>,
    not_before: Option<String>,
    jti: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    alg: Option<String>,
    key: Option<String>,
}

/// Mints a JWT from `args` (after `token`); `env` reads `RESTASH_JWT_*` settings.
pub fn run(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<String, MintError> {
    let options = parse(args)?;
    let now = jsonwebtoken::get_current_timestamp();
    let sub = options
        .sub
        .ok_or_else(|| MintError::Usage("--sub is required".into()))?;
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(sub));
    claims.insert("iat".into(), json!(now));
    let ttl = seconds(options.ttl.as_deref().unwrap_or("1h"))?;
    if let Some(value) = env("RESTASH_JWT_MAX_LIFETIME_SECONDS") {
        // Read as the gateway reads it; the gateway would refuse a longer-lived token.
        let max = crate::config::positive_number(&value).ok_or_else(|| {
            MintError::Usage(format!(
                "RESTASH_JWT_MAX_LIFETIME_SECONDS={value:?} is invalid: expected a positive \
                 whole number"
            ))
        })?;
        if ttl > max {
            return Err(MintError::Usage(format!(
                "--ttl {ttl} s exceeds RESTASH_JWT_MAX_LIFETIME_SECONDS={max}"
            )));
        }
    }
    claims.insert("exp".into(), json!(now + ttl));
    if let Some(delay) = &options.not_before {
        claims.insert("nbf".into(), json!(now + seconds(delay)?));
    }
    let jti = options
        .jti
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    claims.insert("jti".into(), json!(jti));
    if let Some(issuer) = options.issuer.or_else(|| env("RESTASH_JWT_ISSUER")) {
        claims.insert("iss".into(), json!(issuer));
    }
    if let Some(audience) = options.audience.or_else(|| env("RESTASH_JWT_AUDIENCE")) {
        claims.insert("aud".into(), json!(audience));
    }
    if let Some(mode) = options.mode {
        let parsed = Mode::parse(&mode).ok_or_else(|| {
            MintError::Usage(format!(
                "--mode {mode}: expected standard, read-only or admin"
            ))
        })?;
        claims.insert("mode".into(), json!(parsed.as_str()));
    }
    if !options.prefixes.is_empty() {
        claims.insert("prefixes".into(), json!(options.prefixes));
    }
    if let Some(backend) = options.backend {
        claims.insert("backend".into(), json!(backend));
    }
    if !options.allow.is_empty() || !options.deny.is_empty() {
        let mut commands = Map::new();
        if !options.allow.is_empty() {
            commands.insert("allow".into(), json!(options.allow));
        }
        if !options.deny.is_empty() {
            commands.insert("deny".into(), json!(options.deny));
        }
        claims.insert("commands".into(), Value::Object(commands));
    }
    if let Some(rate) = options.rate {
        claims.insert("rate".into(), parse_rate(&rate)?);
    }
    let claims = Value::Object(claims);
    // The claims must make a valid scope, or the gateway would refuse the token.
    let parsed: super::jwt::Claims = serde_json::from_value(claims.clone())
        .map_err(|e| MintError::Usage(format!("invalid claims: {e}")))?;
    // Minted tokens always carry `sub`, so the token itself does not name the scope.
    parsed.to_scope("").map_err(MintError::Usage)?;

    let algorithm = match options.alg.as_deref().unwrap_or("HS256") {
        "HS256" | "hs256" => Algorithm::HS256,
        "RS256" | "rs256" => Algorithm::RS256,
        "ES256" | "es256" => Algorithm::ES256,
        "EdDSA" | "eddsa" | "EDDSA" => Algorithm::EdDSA,
        other => {
            return Err(MintError::Usage(format!(
                "--alg {other}: expected HS256, RS256, ES256 or EdDSA"
            )))
        }
    };
    let key = match (algorithm, options.key) {
        (Algorithm::HS256, None) => {
            // Trimmed as the gateway trims it (a secret file's final newline).
            let secret = env("RESTASH_JWT_SECRET")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| MintError::Key("HS256 needs RESTASH_JWT_SECRET".into()))?;
            if let Some(reason) = super::jwt::weak_secret(&secret) {
                return Err(MintError::Key(reason));
            }
            EncodingKey::from_secret(secret.as_bytes())
        }
        (Algorithm::HS256, Some(_)) => {
            return Err(MintError::Usage(
                "--key is for RS256, ES256 and EdDSA".into(),
            ))
        }
        (_, None) => {
            return Err(MintError::Usage(
                "--key PRIVATE.pem is required for this algorithm".into(),
            ))
        }
        (algorithm, Some(path)) => {
            let pem = std::fs::read(&path)
                .map_err(|e| MintError::Key(format!("cannot read {path}: {e}")))?;
            let key = match algorithm {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                _ => EncodingKey::from_ed_pem(&pem),
            };
            key.map_err(|e| MintError::Key(format!("{path}: {e}")))?
        }
    };
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)
        .map_err(|e| MintError::Key(format!("cannot sign: {e}")))
}

fn parse(args: &[String]) -> Result<Options, MintError> {
    let mut options = Options::default();
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        if flag == "-h" || flag == "--help" {
            return Err(MintError::Usage("restash token: mint a JWT".into()));
        }
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag.as_str(), None),
        };
        let value = match inline {
            Some(value) => value,
            None => iter
                .next()
                .cloned()
                .ok_or_else(|| MintError::Usage(format!("{name} needs a value")))?,
        };
        match name {
            "--sub" => options.sub = Some(value),
            "--mode" => options.mode = Some(value),
            "--prefix" => options.prefixes.push(value),
            "--backend" => options.backend = Some(value),
            "--allow" => options.allow.push(value),
            "--deny" => options.deny.push(value),
            "--rate" => options.rate = Some(value),
            "--ttl" => options.ttl = Some(value),
            "--not-before" => options.not_before = Some(value),
            "--jti" => options.jti = Some(value),
            "--issuer" => options.issuer = Some(value),
            "--audience" => options.audience = Some(value),
            "--alg" => options.alg = Some(value),
            "--key" => options.key = Some(value),
            other => return Err(MintError::Usage(format!("unknown option {other}"))),
        }
    }
    Ok(options)
}

/// `3600`, `90s`, `15m`, `12h`, `30d` in seconds.
fn seconds(text: &str) -> Result<u64, MintError> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = number.parse().map_err(|_| {
        MintError::Usage(format!(
            "bad duration {text:?}: use 3600, 90s, 15m, 12h or 30d"
        ))
    })?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(MintError::Usage(format!("bad duration unit in {text:?}"))),
    };
    Ok(n.saturating_mul(factor))
}

fn parse_rate(text: &str) -> Result<Value, MintError> {
    let bad = || {
        MintError::Usage(format!(
            "bad --rate {text:?}: use PER_SECOND or PER_SECOND:BURST"
        ))
    };
    let (per_second, burst) = match text.split_once(':') {
        Some((rate, burst)) => (rate, Some(burst.parse::<u32>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let per_second: f64 = per_second.parse().map_err(|_| bad())?;
    Ok(match burst {
        Some(burst) => json!({"per_second": per_second, "burst": burst}),
        None => json!({"per_second": per_second}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A 32-byte HS256 secret, the shortest accepted.
    const SECRET: &str = "mint-secret-mint-secret-mint-032";

    fn args(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn minted_tokens_verify() {
        let env = |name: &str| match name {
            "RESTASH_JWT_SECRET" => Some(SECRET.to_string()),
            "RESTASH_JWT_ISSUER" => Some("ops".to_string()),
            _ => None,
        };
        let token = run(
            &args(&[
                "--sub",
                "shop",
                "--prefix",
                "shop:",
                "--mode=read-only",
                "--rate",
                "5:10",
                "--ttl",
                "2m",
                "--deny",
                "keys",
            ]),
            env,
        )
        .unwrap();
        let verifier = super::super::jwt::JwtVerifier::load(&super::super::jwt::JwtSettings {
            secret: Some(SECRET.into()),
            issuer: Some("ops".into()),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let scope = verifier.verify(&token, &HashSet::new()).unwrap();
        assert_eq!(scope.name, "jwt:shop");
        assert_eq!(scope.rate.unwrap().burst, 10);
        assert!(run(&args(&["--mode", "root", "--sub", "x"]), env).is_err());
        assert!(run(&args(&["--sub", "x", "--prefix", "a*"]), env).is_err());
        assert!(run(&args(&["--sub", "x"]), |_| None).is_err());
        assert!(run(&args(&["--bogus", "1"]), env).is_err());
        assert_eq!(seconds("15m").unwrap(), 900);
        assert_eq!(seconds("30d").unwrap(), 2_592_000);
        assert_eq!(seconds("42").unwrap(), 42);
    }

    #[test]
    fn the_secret_is_trimmed_as_the_gateway_trims_it() {
        let token = run(&args(&["--sub", "x"]), |name| {
            (name == "RESTASH_JWT_SECRET").then(|| format!("{SECRET}\n"))
        })
        .unwrap();
        let verifier = super::super::jwt::JwtVerifier::load(&super::super::jwt::JwtSettings {
            secret: Some(SECRET.into()),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert!(verifier.verify(&token, &HashSet::new()).is_ok());
        // Admin mode with prefixes is refused, as in the token file.
        let refused = run(
            &args(&["--sub", "x", "--mode", "admin", "--prefix", "a:"]),
            |name| (name == "RESTASH_JWT_SECRET").then(|| SECRET.to_string()),
        );
        assert!(refused.is_err());
    }

    #[test]
    fn a_short_secret_or_a_too_long_ttl_mints_nothing() {
        let short = run(&args(&["--sub", "x"]), |name| {
            (name == "RESTASH_JWT_SECRET").then(|| "k".to_string())
        });
        let Err(MintError::Key(text)) = short else {
            panic!("a 1-byte secret minted a token: {short:?}");
        };
        assert!(text.contains("at least 32"), "{text}");
        let env = |name: &str| match name {
            "RESTASH_JWT_SECRET" => Some(SECRET.to_string()),
            "RESTASH_JWT_MAX_LIFETIME_SECONDS" => Some("3600".to_string()),
            _ => None,
        };
        let long = run(&args(&["--sub", "x", "--ttl", "2h"]), env);
        let Err(MintError::Usage(text)) = long else {
            panic!("a 2 h token minted under a 1 h maximum: {long:?}");
        };
        assert!(
            text.starts_with("--ttl 7200 s exceeds RESTASH_JWT_MAX_LIFETIME_SECONDS=3600"),
            "{text}"
        );
        assert!(run(&args(&["--sub", "x", "--ttl", "1h"]), env).is_ok());
        // A maximum the gateway would refuse at start-up is refused here too.
        for bad in ["0", "1h", "-5"] {
            let env = |name: &str| match name {
                "RESTASH_JWT_SECRET" => Some(SECRET.to_string()),
                "RESTASH_JWT_MAX_LIFETIME_SECONDS" => Some(bad.to_string()),
                _ => None,
            };
            let Err(MintError::Usage(text)) = run(&args(&["--sub", "x"]), env) else {
                panic!("minted under RESTASH_JWT_MAX_LIFETIME_SECONDS={bad}");
            };
            assert!(text.contains("is invalid"), "{text}");
        }
    }
}
