//! The one layer around every route: request ids, the concurrency limit, the
//! request timeout, panic containment, Upstash's JSON error shape for every error
//! answer, the `upstash-sync-token` header, logs and metrics.
//!
//! It is a single hand-written service rather than a stack of middleware
//! because each stacked layer costs an allocation, a dynamic call and a copy of
//! the request future per request, and this is restash's hot path (issue 7).
//!
//! Per request, in order:
//! 1. `x-request-id`: the client's, else `<process-random>-<counter>`; echoed on the answer;
//! 2. `Authorization` is marked sensitive (never printed by `Debug`);
//! 3. load shedding: beyond `RESTASH_MAX_CONCURRENCY` requests in flight, a JSON 503
//!    with `Retry-After: 1` at once (`/healthz` and `/metrics` are never shed);
//! 4. the route runs inside a `debug` span (id, method, path; never the query,
//!    which may hold `_token`), bounded by the request timeout (JSON 408), with
//!    panics turned into a JSON 500;
//! 5. non-JSON error answers (405 from the router, …) become `{"error": …}`;
//!    `upstash-sync-token` is added unless the handler set one;
//! 6. 5xx answers are logged at `error` with the request id; every answer is counted.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt};

use super::AppState;
use crate::error::{json_error, ApiError, TOO_LARGE_TEXT};
use crate::metrics::{self, InFlight};

/// The response header clients echo for read-your-writes.
pub const SYNC_TOKEN_HEADER: HeaderName = HeaderName::from_static("upstash-sync-token");
/// The request id header, read from the request and echoed on the answer.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Error text of a shed request.
pub const BUSY_TEXT: &str = "ERR server busy: too many requests in flight, retry later";
/// Route label of requests that matched no route (never the raw path).
const UNMATCHED: &str = "unmatched";

/// Builds [`Gate`] services around each route.
#[derive(Clone)]
pub struct GateLayer {
    shared: Arc<Shared>,
}

impl GateLayer {
    /// The layer for `state`'s limits, around the routes of a router (metrics are
    /// labelled with axum's matched route).
    pub fn new(state: &AppState) -> GateLayer {
        // Install the recorder before any request records a metric.
        metrics::handle();
        let limits = state.limits();
        GateLayer {
            shared: Arc::new(Shared {
                state: state.clone(),
                permits: Arc::new(Semaphore::new(limits.max_concurrency)),
                request_timeout: limits.request_timeout,
                ids: Arc::new(RequestIds::new()),
                fixed_route: None,
            }),
        }
    }

    /// The same gate (one concurrency limit, one id sequence) around one endpoint
    /// served outside the router, labelled `route`.
    pub fn for_route(&self, route: &'static str) -> GateLayer {
        let shared = &self.shared;
        GateLayer {
            shared: Arc::new(Shared {
                state: shared.state.clone(),
                permits: shared.permits.clone(),
                request_timeout: shared.request_timeout,
                ids: shared.ids.clone(),
                fixed_route: Some(route),
            }),
        }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`GateLayer`] wraps around a route.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    shared: Arc<Shared>,
}

struct Shared {
    state: AppState,
    permits: Arc<Semaphore>,
    request_timeout: Duration,
    ids: Arc<RequestIds>,
    /// The route label when this gate guards one endpoint outside the router.
    fixed_route: Option<&'static str>,
}

impl<S> Service<Request> for Gate<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone is the one not yet polled ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let route = |request| async move {
            match inner.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        };
        Box::pin(self.shared.clone().handle(request, route))
    }
}

impl GateLayer {
    /// Runs `route` for `request` inside the gate, with no `Service` in between:
    /// the direct routes of [`super::fast`] pass the request as hyper gave it, so
    /// that the whole request costs one boxed future. `route` must only build its
    /// future (an `async` block or function): a panic while polling it is caught,
    /// one while calling it is not.
    pub fn run<B, F, Fut>(
        &self,
        request: axum::http::Request<B>,
        route: F,
    ) -> impl Future<Output = Result<Response, Infallible>> + Send + 'static
    where
        B: Send + 'static,
        F: FnOnce(axum::http::Request<B>) -> Fut + Send + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        self.shared.clone().handle(request, route)
    }
}

impl Shared {
    /// The whole gate, as one async function: every layer of `async` around the
    /// route's future is another copy of it (about 2 KB) per request (issue 7).
    async fn handle<B, F, Fut>(
        self: Arc<Self>,
        mut request: axum::http::Request<B>,
        inner: F,
    ) -> Result<Response, Infallible>
    where
        F: FnOnce(axum::http::Request<B>) -> Fut,
        Fut: Future<Output = Response>,
    {
        let started = Instant::now();
        let _in_flight = InFlight::start();
        // Only the logs and the answer need the id; inserting it into the request's
        // headers would make hyper's header map grow (two more allocations).
        // One walk over the headers, not two lookups by name (each hashes the name).
        let mut client_id = None;
        for (name, value) in request.headers_mut().iter_mut() {
            if name == header::AUTHORIZATION {
                value.set_sensitive(true);
            } else if name == REQUEST_ID_HEADER && client_id.is_none() {
                client_id = Some(value.clone());
            }
        }
        let id = client_id.unwrap_or_else(|| self.ids.next());
        let matched = match self.fixed_route {
            Some(_) => None,
            None => request.extensions().get::<MatchedPath>().cloned(),
        };
        let route = self
            .fixed_route
            .or_else(|| matched.as_ref().map(MatchedPath::as_str))
            .unwrap_or(UNMATCHED);
        let method = request.method().clone();
        let uri = request.uri().clone();

        let (response, shed) = match self.admit(uri.path()) {
            Admission::Shed => (busy(), true),
            permit => {
                let span = tracing::debug_span!("request", id = ?id, %method, path = uri.path());
                // Building the route's future only moves the request into it; its
                // body runs when polled, inside the guard.
                let outcome = Guarded::new(inner(request), self.request_timeout, span).await;
                drop(permit);
                let response = match outcome {
                    Outcome::Answered(response) => response,
                    Outcome::Panicked => {
                        tracing::error!(request_id = ?id, "handler panicked");
                        json_error(StatusCode::INTERNAL_SERVER_ERROR, "ERR internal error")
                    }
                    Outcome::TimedOut => {
                        json_error(StatusCode::REQUEST_TIMEOUT, "ERR request timeout")
                    }
                };
                (response, false)
            }
        };
        let mut response = json_errors(response);
        response
            .headers_mut()
            .entry(SYNC_TOKEN_HEADER)
            .or_insert_with(|| self.state.sync_token());
        response.headers_mut().insert(REQUEST_ID_HEADER, id.clone());

        let status = response.status();
        let elapsed = started.elapsed();
        if status.is_server_error() {
            tracing::error!(
                request_id = ?id,
                %method,
                path = uri.path(),
                status = status.as_u16(),
                latency_ms = elapsed.as_millis() as u64,
                "request failed"
            );
        }
        metrics::record_request(route, method.as_str(), status.as_u16(), elapsed);
        let probe = matches!(route, "/healthz" | "/readyz" | "/metrics");
        if !probe && !shed {
            metrics::record_redis_error(status.as_u16());
        }
        Ok(response)
    }

    /// Takes a permit of the concurrency limit for a request to `path`, or sheds
    /// it. Probes and metrics are never shed: a shed readiness probe would take a
    /// busy instance out of its load balancer and move its load onto the others.
    fn admit(&self, path: &str) -> Admission {
        if matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return Admission::Unlimited;
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Admission::Admitted { _permit: permit },
            Err(_) => {
                metrics::record_load_shed();
                Admission::Shed
            }
        }
    }
}

/// Whether a request may run now; a permit is released when dropped.
enum Admission {
    /// Probes and metrics: not counted against the limit.
    Unlimited,
    /// Counted against the limit until the permit is dropped.
    Admitted { _permit: OwnedSemaphorePermit },
    /// Over the limit.
    Shed,
}

/// The answer to a shed request: a JSON 503 with `Retry-After: 1`.
fn busy() -> Response {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, BUSY_TEXT);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// How a guarded route ended.
enum Outcome {
    Answered(Response),
    Panicked,
    TimedOut,
}

pin_project_lite::pin_project! {
    /// The route's future under the request timeout and a panic guard, polled
    /// inside the request's span: one wrapper where `timeout`, `catch_unwind` and
    /// `instrument` were three, each moving the whole future once more (issue 7).
    /// Unlike `instrument`, the route's future is dropped outside the span.
    struct Guarded<F> {
        #[pin]
        route: F,
        // Unconstrained, as `tokio::time::timeout` polls its deadline once the route
        // has spent the task's budget: else a route that always does would never
        // time out.
        #[pin]
        deadline: tokio::task::Unconstrained<tokio::time::Sleep>,
        span: tracing::Span,
    }
}

impl<F> Guarded<F> {
    fn new(route: F, timeout: Duration, span: tracing::Span) -> Guarded<F> {
        Guarded {
            route,
            deadline: tokio::task::unconstrained(tokio::time::sleep(timeout)),
            span,
        }
    }
}

impl<F: Future<Output = Response>> Future for Guarded<F> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = self.project();
        let _entered = this.span.enter();
        let route = this.route;
        // Once this answers `Panicked` the route is never polled again.
        match std::panic::catch_unwind(AssertUnwindSafe(|| route.poll(cx))) {
            Ok(Poll::Ready(response)) => return Poll::Ready(Outcome::Answered(response)),
            Ok(Poll::Pending) => {}
            Err(_panic) => return Poll::Ready(Outcome::Panicked),
        }
        this.deadline.poll(cx).map(|()| Outcome::TimedOut)
    }
}

/// Turns any non-JSON error answer (405 from the router, …)
/// into Upstash's `{"error": …}` shape, keeping `Allow`.
fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let mut replaced = json_error(status, &default_error_text(status));
    if let Some(allow) = response.headers().get(header::ALLOW) {
        replaced.headers_mut().insert(header::ALLOW, allow.clone());
    }
    if let Some(retry) = response.headers().get(header::RETRY_AFTER) {
        replaced
            .headers_mut()
            .insert(header::RETRY_AFTER, retry.clone());
    }
    replaced
}

fn default_error_text(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "ERR not found".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "ERR method not allowed".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => TOO_LARGE_TEXT.to_string(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "ERR unsupported media type".to_string(),
        other => format!(
            "ERR {}",
            other
                .canonical_reason()
                .unwrap_or("request failed")
                .to_lowercase()
        ),
    }
}

/// Fallback for routes that do not exist.
pub async fn not_found(uri: Uri) -> Response {
    ApiError::NotFound(format!("ERR no such endpoint: {}", uri.path())).into_response()
}

/// Request ids `<process-random>-<counter>`: unique, cheap, and sortable per process.
struct RequestIds {
    /// Eight hex digits.
    prefix: [u8; 8],
    next: AtomicU64,
}

/// `n` as eight lower-case hex digits.
fn hex_prefix(n: u32) -> [u8; 8] {
    let mut prefix = [0u8; 8];
    // Four bytes always fill eight digits exactly.
    let _ = hex::encode_to_slice(n.to_be_bytes(), &mut prefix);
    prefix
}

impl RequestIds {
    fn new() -> RequestIds {
        RequestIds {
            prefix: hex_prefix(rand::random::<u32>()),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Assembled on the stack: the header value is the only allocation.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n).as_bytes();
        // The prefix, a dash and a u64's at most 20 digits.
        let mut text = [0u8; 8 + 1 + 20];
        let len = 8 + 1 + digits.len();
        text[..8].copy_from_slice(&self.prefix);
        text[8] = b'-';
        text[9..len].copy_from_slice(digits);
        HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_count_up_under_one_prefix() {
        let ids = RequestIds::new();
        let first = ids.next();
        let second = ids.next();
        let first = first.to_str().unwrap();
        let second = second.to_str().unwrap();
        assert_eq!(first.len(), 10);
        assert!(first.ends_with("-1") && second.ends_with("-2"));
        assert_eq!(first[..8], second[..8]);
    }

    #[test]
    fn the_prefix_is_eight_hex_digits() {
        for n in [0, 1, 0xdead_beef, u32::MAX, 0x0123_4567] {
            assert_eq!(hex_prefix(n), *format!("{n:08x}").as_bytes());
        }
    }

    #[tokio::test]
    async fn a_guarded_route_answers_panics_or_times_out() {
        let span = tracing::Span::none;
        let answer = async { json_error(StatusCode::IM_A_TEAPOT, "ERR tea") };
        match Guarded::new(answer, Duration::from_secs(5), span()).await {
            Outcome::Answered(response) => assert_eq!(response.status(), StatusCode::IM_A_TEAPOT),
            _ => panic!("the route answered"),
        }
        let panics = async {
            tokio::task::yield_now().await;
            panic!("a bug in a handler");
        };
        assert!(matches!(
            Guarded::new(panics, Duration::from_secs(5), span()).await,
            Outcome::Panicked
        ));
        let never = std::future::pending::<Response>();
        let started = Instant::now();
        assert!(matches!(
            Guarded::new(never, Duration::from_millis(50), span()).await,
            Outcome::TimedOut
        ));
        assert!(started.elapsed() >= Duration::from_millis(50));
        // A route that spends the task's whole budget on every poll still times out.
        let greedy = async {
            loop {
                tokio::task::consume_budget().await;
            }
        };
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            Guarded::new(greedy, Duration::from_millis(50), span()),
        )
        .await;
        assert!(matches!(outcome, Ok(Outcome::TimedOut)), "no timeout");
    }

    #[test]
    fn plain_error_answers_become_json() {
        let plain = Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET")
            .body(axum::body::Body::empty())
            .unwrap();
        let replaced = json_errors(plain);
        assert_eq!(replaced.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(replaced.headers()[header::ALLOW], "GET");
        assert!(replaced.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
    }
}
