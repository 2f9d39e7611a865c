//! Static tokens: standard and read-only, compared in constant time.
//!
//! A token arrives as `Authorization: Bearer <token>` or `?_token=<token>`; the
//! header wins when both are present. Tokens are stored as SHA-256 digests and
//! compared with `subtle`, so neither content nor length leaks through timing.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::policy::Access;

/// The configured tokens.
#[derive(Clone)]
pub struct Tokens {
    standard: [u8; 32],
    read_only: Option<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(<redacted>)")
    }
}

impl Tokens {
    /// Tokens from their plain text.
    pub fn new(standard: &str, read_only: Option<&str>) -> Self {
        Tokens {
            standard: digest(standard),
            read_only: read_only.map(digest),
        }
    }

    /// What the presented token may do, or `None` when it matches no token.
    pub fn access_for(&self, presented: &str) -> Option<Access> {
        let presented = digest(presented);
        let is_standard: bool = presented.ct_eq(&self.standard).into();
        let is_read_only: bool = match &self.read_only {
            Some(read_only) => presented.ct_eq(read_only).into(),
            None => false,
        };
        if is_standard {
            Some(Access::Standard)
        } else if is_read_only {
            Some(Access::ReadOnly)
        } else {
            None
        }
    }
}

/// SHA-256 of a token.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token a request presents: the bearer header first, then `?_token=`. The
/// header is trimmed of ASCII whitespace only (a header value holds no other).
pub fn presented_token<'a>(
    authorization: Option<&'a str>,
    query: Option<&'a str>,
) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(value) = authorization {
        // Byte searches: header values are visible ASCII, spaces and tabs (issue 7).
        let value = value.trim_ascii();
        let space = value.bytes().position(|b| b == b' ')?;
        let (scheme, token) = (&value[..space], &value[space + 1..]);
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| std::borrow::Cow::Borrowed(token.trim()));
    }
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == "_token")
        .map(|(_, value)| value)
}

/// A new random token (32 bytes, URL-safe base64), for when none is configured.
pub fn generate_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_and_read_only() {
        let tokens = Tokens::new("std", Some("ro"));
        assert_eq!(tokens.access_for("std"), Some(Access::Standard));
        assert_eq!(tokens.access_for("ro"), Some(Access::ReadOnly));
        assert_eq!(tokens.access_for("st"), None);
        assert_eq!(tokens.access_for(""), None);
        assert_eq!(Tokens::new("std", None).access_for("ro"), None);
    }

    #[test]
    fn header_wins_over_query() {
        assert_eq!(
            presented_token(Some("Bearer abc"), Some("_token=xyz")).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(Some("bearer  abc "), None).as_deref(),
            Some("abc")
        );
        assert_eq!(presented_token(Some("Basic abc"), Some("_token=xyz")), None);
        // Tabs around the value are trimmed; only a space separates the scheme.
        assert_eq!(
            presented_token(Some("\tBearer abc\t"), None).as_deref(),
            Some("abc")
        );
        assert_eq!(presented_token(Some("Bearer\tabc"), None), None);
        assert_eq!(presented_token(Some("Bearer"), None), None);
        assert_eq!(presented_token(Some("Bearer "), None).as_deref(), None);
        assert_eq!(
            presented_token(None, Some("a=1&_token=x%2By")).as_deref(),
            Some("x+y")
        );
        assert_eq!(presented_token(None, None), None);
    }

    #[test]
    fn generated_tokens_differ() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}
