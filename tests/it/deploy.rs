//! `deploy/` stays true to the code: every manifest parses, and the image, ports,
//! probes, environment variables and metric names it mentions exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{Gateway, RedisServer};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses YAML with merge keys (`<<: *anchor`) applied, as Compose does.
fn yaml(path: &str) -> Value {
    let text = read(&root().join(path));
    let mut value: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::to_value(value).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `PREFIX…` identifier (upper case, digits, `_`) in `text`.
fn identifiers(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (start, _) in text.match_indices(prefix) {
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let name = name.trim_end_matches('_');
        if name.len() > prefix.trim_end_matches('_').len() {
            found.insert(name.to_string());
        }
    }
    found
}

/// Every `restash_…` metric name (lower case) in `text`, histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (start, _) in text.match_indices("restash_") {
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let name = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| {
            n.strip_suffix(s).map(str::to_string).unwrap_or(n)
        });
        found.insert(name);
    }
    found
}

#[test]
fn every_manifest_parses() {
    let mut parsed = 0;
    for path in files_under(&root().join("deploy")) {
        let text = read(&path);
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") | Some("yml") => {
                let _: Value = serde_norway::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                parsed += 1;
            }
            Some("json") => {
                let _: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                parsed += 1;
            }
            _ => {}
        }
    }
    assert!(parsed >= 9, "only {parsed} manifests found");
}

#[test]
fn environment_variables_named_in_deploy_exist() {
    let config = read(&root().join("src/config.rs"));
    let example = read(&root().join(".env.example"));
    let mut named = BTreeSet::new();
    for path in files_under(&root().join("deploy")) {
        let text = read(&path);
        named.extend(identifiers(&text, "RESTASH_"));
        named.extend(identifiers(&text, "REDIS_URL"));
    }
    assert!(named.len() >= 10, "{named:?}");
    for name in &named {
        let quoted = format!("\"{name}\"");
        assert!(
            config.contains(&quoted),
            "{name} is named in deploy/ but not read in src/config.rs"
        );
        assert!(
            example.contains(&format!("{name}=")),
            "{name} is named in deploy/ but not documented in .env.example"
        );
    }
}

#[test]
fn image_ports_and_user_agree() {
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("restash:{version}");
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let compose = yaml("deploy/compose.yaml");
    let configmap = yaml("deploy/kubernetes/configmap.yaml");
    let service = yaml("deploy/kubernetes/service.yaml");
    let dockerfile = read(&root().join("deploy/Dockerfile"));

    // The binary the image runs is the one this crate builds.
    assert!(Path::new(env!("CARGO_BIN_EXE_restash")).exists());
    assert!(dockerfile.contains("target/release/restash"));
    assert!(
        dockerfile
            .lines()
            .filter(|l| l.starts_with("FROM "))
            .count()
            >= 2,
        "multi-stage"
    );
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the Dockerfile");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "runs as {user}"
    );
    // The include_str! of the OpenAPI document needs it in the build context.
    assert!(dockerfile.contains("COPY openapi"));
    // So does the vendored hyper that Cargo.toml patches in.
    let manifest = read(&root().join("Cargo.toml"));
    if manifest.contains("path = \"vendor/") {
        assert!(
            dockerfile.contains("COPY vendor ./vendor"),
            "Cargo.toml patches a crate from vendor/, the image build must copy it"
        );
    }

    // One port everywhere: the listen address' port.
    let listen = configmap["data"]["RESTASH_LISTEN"].as_str().unwrap();
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        restash::config::DEFAULT_LISTEN.rsplit(':').next().unwrap(),
        port.to_string(),
        "deploy/ uses a port other than the default listen port"
    );
    assert!(dockerfile.contains(&format!("EXPOSE {port}")));
    assert!(dockerfile.contains(&format!("RESTASH_LISTEN=0.0.0.0:{port}")));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], image.as_str());
    assert_eq!(container["ports"][0]["containerPort"], port);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        container["ports"][0]["name"]
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    for name in ["restash", "restash-cluster"] {
        let service = &compose["services"][name];
        assert_eq!(service["image"], image.as_str(), "{name}");
        let ports = service["ports"][0].as_str().unwrap();
        assert!(ports.ends_with(&format!(":{port}")), "{name}: {ports}");
        assert_eq!(service["environment"]["RESTASH_LISTEN"], listen);
    }
    // The shutdown drain fits in the pod's termination grace period.
    let drain_ms: u64 = configmap["data"]["RESTASH_SHUTDOWN_TIMEOUT_MS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(drain_ms / 1000 < grace);
    // Every Kubernetes object is listed in the kustomization.
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for path in files_under(&root().join("deploy/kubernetes")) {
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(
            file == "kustomization.yaml" || listed.contains(file),
            "{file} not in kustomization"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_paths_are_real_routes() {
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut paths = BTreeSet::new();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        paths.insert(
            container[probe]["httpGet"]["path"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    paths.insert(
        annotations["prometheus.io/path"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    assert_eq!(
        paths.iter().map(String::as_str).collect::<Vec<_>>(),
        ["/healthz", "/metrics", "/readyz"]
    );
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    for path in &paths {
        // Probes carry no token.
        let response = gw.http.get(gw.at(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_name_exported_metrics() {
    let dashboard: Value =
        serde_json::from_str(&read(&root().join("deploy/grafana/restash-dashboard.json"))).unwrap();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queried.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    assert!(queried.len() >= 7, "{queried:?}");
    // Names the code records (constants in src/), and what a live /metrics shows.
    let mut source = String::new();
    for path in files_under(&root().join("src")) {
        source.push_str(&read(&path));
    }
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    gw.command(serde_json::json!(["PING"])).await;
    let live = gw.metrics().await;
    for name in &queried {
        assert!(
            source.contains(&format!("\"{name}\"")),
            "{name} is not recorded in src/"
        );
        if !name.contains("cache") && !name.contains("shed") && !name.contains("errors") {
            assert!(
                live.contains(name.as_str()),
                "{name} is missing from /metrics"
            );
        }
    }
}
