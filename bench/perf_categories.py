"""Reads `perf script -F comm,tid,ip,sym` output (call graphs, leaf first) and
prints where restash's CPU time goes, in two views:

- exclusive: each sample goes to the innermost stack frame that matches a category
  (so kernel time in a `writev` goes to whoever called `writev`), adding up to 100 %;
- leaf: the sample's own function (malloc, memcpy, kernel, …).
"""

import collections
import re
import sys

# Innermost match wins: list specific frames before the wrappers around them.
CATEGORIES = [
    ("socket write to Redis (fred flush, writev + loopback delivery)",
     r"^FRED_WRITEV$"),
    ("socket write of HTTP responses (hyper flush, writev + loopback delivery)",
     r"__GI___writev"),
    ("socket reads (recv)", r"__libc_recv|__GI___libc_read"),
    ("tracing: per-request span", r"tracing_subscriber|tracing::span|tracing_core|nu_ansi_term"
     r"|sharded_slab|trace::make_span"),
    ("metrics: middleware, labels, recorder, body name scan",
     r"restash::metrics|metrics_exporter_prometheus|restash::http::metered|metrics::key"
     r"|metrics_util|CountOnDrop|scan_body"),
    ("fred: encode + write commands", r"fred::router::commands::write_command"
     r"|fred::protocol::connection::Connection::write|fred::router::utils::write_command"
     r"|fred::protocol::codec"),
    ("fred: read + decode replies, wake callers",
     r"fred::router::types::ReadFuture|fred::router::utils::process_response"
     r"|fred::router::types::poll_connection|ConnectionKind as futures_core::stream::Stream"
     r"|fred::protocol::responders|redis_protocol::resp[23]::decode"),
    ("fred: router task, other", r"fred::router|fred::runtime::_tokio::ClientLike::connect"),
    ("fred: caller side (custom_raw, options, channel, oneshot)",
     r"fred::runtime::_tokio::ClientLike::custom_raw|fred::interfaces|fred::modules::inner"
     r"|fred::utils|fred::runtime::_tokio::Sender|fred::protocol::command|fred::clients"),
    ("hyper: encode response head", r"Conn<I,B,T>::write_head|Http1Transaction>::encode"),
    ("hyper: read + parse request", r"poll_read_head|Http1Transaction>::parse"
     r"|poll_read_keep_alive|poll_read_from_io|Dispatcher<D,Bs,I,T>::poll_read"),
    ("body: collect request body (RawBody, Limited, Collect)",
     r"RawBody|combinators::collect|limited::Limited|into_limited_body|http_body_util"),
    ("layer: request id (make + propagate)", r"request_id"),
    ("layer: sensitive headers", r"sensitive_headers"),
    ("layer: request timeout (tokio timer per request)",
     r"tokio::time|tower_http::timeout|timeout::Timeout"),
    ("layer: overload limit (semaphore)", r"restash::http::overload|Semaphore"),
    ("layer: catch_panic", r"catch_panic"),
    ("layer: finish_response (sync token, JSON errors)", r"restash::http::layers|map_response"),
    ("restash: JSON request parse", r"restash::protocol::request"),
    ("restash: JSON reply writer", r"restash::protocol::reply"),
    ("restash: auth", r"restash::auth"),
    ("restash: policy (authorize, prepare)", r"restash::policy"),
    ("restash: dispatch + backend", r"restash::dispatch|restash::backend"),
    ("restash: handlers, extractors", r"restash::http"),
    ("axum/tower glue (routing, boxing, moving futures)",
     r"axum::|axum_core::|tower::|BoxCloneSync|Oneshot"),
    ("hyper: connection task, other", r"hyper::|hyper_util"),
    ("tokio: scheduler, park, epoll", r"tokio::|mio::|epoll_wait"),
]
KERNEL = re.compile(r"^(_raw|__raw|tcp_|__tcp|ip_|__ip|do_|__do|sock_|skb|__skb|__dev|dev_|net_|__net"
                    r"|napi|process_backlog|entry_|syscall|__x64|ksys|vfs_|fdget|finish_task|schedule"
                    r"|__schedule|kvm_|read_tsc|__pv|pv_|handle_softirqs|__local_bh|irq|_copy|copy_"
                    r"|__check|__fget|ep_|__wake|try_to_wake|ttwu|enqueue|dequeue|update_|__sys"
                    r"|loopback|__kfree|kfree|kmem|__alloc|alloc_|__slab|slab|__inet|inet_|security"
                    r"|fsnotify|rw_verify|__fsnotify|rcu|__rcu|switch_|__switch|futex|__futex|hrtimer"
                    r"|__hrtimer|native_|lock_|release_sock|__release_sock|mod_timer|sk_|__sk|tcp4"
                    r"|validate_xmit|__x86|asm_|sysvec|__sysvec|ret_from|cpuidle|default_idle)")
MALLOC = re.compile(r"^(malloc|_int_malloc|_int_free|cfree|free|realloc|_int_realloc"
                    r"|malloc_consolidate|unlink_chunk|tcache|__GI___libc_malloc|__GI___libc_free"
                    r"|__libc_calloc|calloc|__rust_alloc|__rust_dealloc|__rustc::__rust)")


def read_samples(stream):
    samples, current = [], None
    for line in stream:
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            if current is not None:
                samples.append(current)
            current = []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and current is not None:
            # Strip the "+0x…" offset and the "(dso)" suffix.
            symbol = re.sub(r"\+0x[0-9a-f]+$", "", parts[1].rsplit(" (", 1)[0])
            current.append(symbol)
    if current:
        samples.append(current)
    return samples


def mark_fred_writes(stack):
    """Tags a writev made by fred's connection so the first category catches it."""
    if any("fred::" in f for f in stack) and any("__GI___writev" in f for f in stack):
        return ["FRED_WRITEV"] + stack
    return stack


def categorize(samples):
    compiled = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]
    exclusive, leaves = collections.Counter(), collections.Counter()
    for stack in samples:
        tagged = mark_fred_writes(stack)
        chosen = "other / unresolved"
        for frame in tagged:
            hit = next((name for name, rx in compiled if rx.search(frame)), None)
            if hit:
                chosen = hit
                break
        exclusive[chosen] += 1
        leaf = stack[0] if stack else "?"
        if leaf.startswith("__mem"):
            leaves["memcpy/memmove/memcmp"] += 1
        elif MALLOC.match(leaf):
            leaves["malloc/free/realloc"] += 1
        elif KERNEL.match(leaf) or leaf.startswith("[k]"):
            leaves["kernel"] += 1
        else:
            leaves["other user code"] += 1
    return exclusive, leaves


def main():
    samples = read_samples(sys.stdin)
    total = max(len(samples), 1)
    per_request_us = float(sys.argv[1]) if len(sys.argv) > 1 else None
    exclusive, leaves = categorize(samples)
    print(f"{len(samples)} samples" + (f"; {per_request_us:.1f} µs CPU per request"
                                       if per_request_us else ""))
    print()
    print("share   µs/req  where (innermost matching frame)")
    for name, count in exclusive.most_common():
        share = count / total
        us = f"{share * per_request_us:6.1f}" if per_request_us else "     -"
        print(f"{100 * share:5.1f}%  {us}  {name}")
    print()
    print("leaf functions: " + ", ".join(
        f"{name} {100 * count / total:.1f}%" for name, count in leaves.most_common()))


if __name__ == "__main__":
    main()
