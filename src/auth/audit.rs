//! Audit of refused requests: one log line each (target `restash::audit`) with the
//! token's name, the command and the reason — never the token itself — and the
//! counter `restash_refused_requests_total{reason}`.

/// Refused requests (or pipeline items) by reason.
pub const REFUSED_TOTAL: &str = "restash_refused_requests_total";

/// Reasons a request was refused before reaching Redis, as metric labels:
/// `unauthorized`, `expired`, `not_yet_valid`, `revoked`, `too_long_lived`, `unknown_backend`,
/// `rate_limited`, and the scope reasons of [`crate::policy::scope::Reason`].
pub fn describe() {
    metrics::describe_counter!(
        REFUSED_TOTAL,
        "Requests (and pipeline items) refused by token checks, by reason"
    );
}

/// Logs and counts one refusal. `token` is the token's name (`None` when no token
/// matched), `command` the command or endpoint, `detail` the answer's text.
pub fn refused(token: Option<&str>, command: &str, reason: &'static str, detail: &str) {
    tracing::info!(
        target: "restash::audit",
        token = token.unwrap_or("-"),
        command,
        reason,
        detail,
        "request refused"
    );
    metrics::counter!(REFUSED_TOTAL, "reason" => reason).increment(1);
}
