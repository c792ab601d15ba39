//! The deployment recipe (docker-compose.yml): the compose file loads in a
//! real compose implementation, and its topology runs without containers:
//! two broker processes on one real `redis-server`, behind Debian's HAProxy
//! with the very configuration the compose file mounts (deploy/haproxy.cfg),
//! one address and one issuer. Loopback only; every wait is bounded.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::secret_hash;
use crate::nodes::{
    admin, as_agent, booker_exchange, client, introspect, jti, planner_exchange, readyz, revoke, walk, Deployment,
    Node, Reply,
};
use crate::process::free_port;
use crate::redis_server::RedisServer;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `program` from the `PATH`, or from the `sbin` folders a user's `PATH`
/// lacks on Debian (where `haproxy` lives); panics naming the script that
/// installs it.
fn installed(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|folder| folder.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed: run ./scripts/test.sh, which installs it"))
}

/// HAProxy on `port` in front of `nodes`, configured by deploy/haproxy.cfg
/// through the variables the compose file sets.
async fn balancer(deployment: &Deployment, port: u16, nodes: [&Node; 2]) -> Node {
    let address = |node: &Node| node.url("").trim_start_matches("http://").to_owned();
    let mut command = Command::new(installed("haproxy"));
    command
        // In the foreground, logging to standard output.
        .arg("-db")
        .arg("-f")
        .arg(repository().join("deploy/haproxy.cfg"))
        .env_clear()
        .env("BATON_BALANCER_LISTEN", format!("127.0.0.1:{port}"))
        .env("BATON_BROKER_1", address(nodes[0]))
        .env("BATON_BROKER_2", address(nodes[1]));
    Node::launch("haproxy", command, port, &deployment.path().join("haproxy.log")).await
}

/// A node as the compose file runs it: on the one Redis, believing the
/// client addresses the balancer forwards, with a data folder of its own.
async fn start_node(deployment: &Deployment, name: &str, redis: &RedisServer) -> Node {
    let data = deployment.path().join(format!("{name}-data"));
    let url = redis.url();
    let variables = [
        ("BATON_REDIS_URL", url.as_str()),
        ("BATON_TRUSTED_PROXIES", "127.0.0.1"),
        ("BATON_DATA_DIR", data.to_str().unwrap()),
    ];
    deployment.start(name, &variables).await
}

/// The sum of every series of `name` in the node's `GET /metrics`.
async fn metric_total(node: &Node, name: &str) -> u64 {
    let text = client().get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The compose file's topology, on loopback: fields drop (and processes
/// die) balancer first, Redis last.
struct Balanced {
    balancer: Node,
    nodes: [Node; 2],
    deployment: Deployment,
    redis: RedisServer,
}

impl Balanced {
    async fn start() -> Balanced {
        let redis = RedisServer::start();
        let port = free_port();
        let mut deployment = Deployment::new();
        deployment.issuer = format!("http://127.0.0.1:{port}");
        let nodes =
            [start_node(&deployment, "broker-1", &redis).await, start_node(&deployment, "broker-2", &redis).await];
        assert_eq!((readyz(&nodes[0]).await, readyz(&nodes[1]).await), (200, 200));
        let balancer = balancer(&deployment, port, [&nodes[0], &nodes[1]]).await;
        Balanced { balancer, nodes, deployment, redis }
    }
}

/// The orchestrator's own token, asked through the balancer.
async fn root_token(balancer: &Node) -> Reply {
    as_agent(balancer, "orchestrator", &[("grant_type", "client_credentials"), ("audience", "planner")]).await
}

#[tokio::test]
async fn the_quick_start_walks_through_a_balancer_in_front_of_two_nodes() {
    let Balanced { balancer, nodes, deployment, redis: _redis } = Balanced::start().await;
    let [one, two] = &nodes;

    // One address, one issuer: discovery through the balancer names it.
    let metadata: Value = client()
        .get(balancer.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], deployment.issuer);
    assert_eq!(metadata["token_endpoint"], format!("{}/token", deployment.issuer));

    // The quick start through the balancer: orchestrator → planner → booker →
    // airline API, the booking approved through the admin API. Requests take
    // turns between the nodes (round robin), so the approval is asked,
    // decided and used on different nodes.
    let [root, hop1, hop2] = walk(&balancer).await;
    let issued =
        [metric_total(one, "baton_tokens_issued_total").await, metric_total(two, "baton_tokens_issued_total").await];
    eprintln!("tokens issued through the balancer: {} by broker-1, {} by broker-2", issued[0], issued[1]);
    assert_eq!(issued[0] + issued[1], 3, "the walk issues three tokens");
    assert!(issued.iter().all(|&count| count > 0), "one node served every issuance: {issued:?}");
    let waited = metric_total(one, "baton_token_requests_awaiting_approval_total").await
        + metric_total(two, "baton_token_requests_awaiting_approval_total").await;
    assert_eq!(waited, 1, "the booking waited for its approval once");

    // Each node believes the client address the balancer forwards, and
    // nothing a client claims: this issuance is recorded from the test's own
    // address, not the one its request named.
    let spoofed = client()
        .post(balancer.url("/token"))
        .basic_auth("orchestrator", Some("dev-only-orchestrator-secret"))
        .header("Forwarded", "for=198.51.100.7")
        .header("X-Forwarded-For", "198.51.100.7")
        .form(&[("grant_type", "client_credentials"), ("audience", "planner")])
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 200);
    let spoofed: Value = spoofed.json().await.unwrap();
    let spoofed_jti = jti(spoofed["access_token"].as_str().unwrap());
    let audit = admin(&balancer, client().get(balancer.url("/admin/audit")).query(&[("jti", &spoofed_jti)])).await;
    let addresses: Vec<&Value> =
        audit["events"].as_array().unwrap().iter().map(|event| &event["client_address"]).collect();
    assert_eq!(addresses, [&json!("127.0.0.1")], "{audit}");

    // The booker revokes the middle token through the balancer; right after
    // the call returns, both nodes, asked directly, know the cascade.
    let revoked = revoke(&balancer, "booker", &hop1).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    for node in &nodes {
        assert_eq!(introspect(node, &hop2).await, json!({"active": false}), "{}", node.url(""));
        booker_exchange(node, &hop1).await.assert_error(400, "invalid_request");
        // The cascade stops at the revoked token: the root lives on.
        let child = planner_exchange(node, &root).await;
        assert_eq!(child.status, 200, "{}", child.body);
    }
}

/// Asks through the balancer until `done` holds of an answer, each answer
/// before it being 503 `temporarily_unavailable`; panics after 20 s.
async fn poll_while_unavailable(balancer: &Node, what: &str, done: impl Fn(&Reply) -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let reply = root_token(balancer).await;
        if done(&reply) {
            return started.elapsed();
        }
        reply.assert_error(503, "temporarily_unavailable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} within 20 s: {}", balancer.log());
}

#[tokio::test]
async fn with_redis_down_the_balancer_fails_closed_and_recovers() {
    let Balanced { balancer, nodes: _nodes, deployment: _deployment, mut redis } = Balanced::start().await;
    assert_eq!(root_token(&balancer).await.status, 200);

    // Redis dies: every node answers 503 and reports itself not ready, the
    // balancer takes both out, and then answers 503 itself, in the same
    // format, with nothing issued meanwhile.
    redis.kill();
    let from_balancer = |reply: &Reply| {
        reply.body["error_description"].as_str().is_some_and(|text| text.starts_with("no broker node is ready"))
    };
    let out = poll_while_unavailable(&balancer, "the balancer did not take the nodes out", from_balancer).await;
    let reply = root_token(&balancer).await;
    reply.assert_error(503, "temporarily_unavailable");
    assert!(from_balancer(&reply), "{}", reply.body);

    // Redis returns: the nodes are ready again and the balancer sends them
    // requests, with no restart of anything but Redis.
    redis.restart();
    let back = poll_while_unavailable(&balancer, "service did not resume", |reply| reply.status == 200).await;
    eprintln!(
        "the balancer answered for the nodes {out:?} after Redis died; service resumed {back:?} after it returned"
    );
}

/// Whether the balancer has closed `connection` (it reads end of stream or
/// a reset), without waiting: an open, idle one has nothing to read.
fn closed(connection: &mut std::net::TcpStream) -> bool {
    connection.set_nonblocking(true).unwrap();
    !matches!(connection.read(&mut [0u8; 1]), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test]
async fn the_balancer_bounds_the_connections_of_one_address() {
    let topology = Balanced::start().await;
    let address = topology.balancer.url("").trim_start_matches("http://").to_owned();

    // One address opens 8 connections more than it may hold, and says
    // nothing on any: at least those 8 are closed at once (more if the
    // balancer still counted one of the start's, closing), and at most 128
    // stay open, waiting for a request.
    let mut connections: Vec<std::net::TcpStream> =
        (0..136).map(|_| std::net::TcpStream::connect(&address).unwrap()).collect();
    let started = Instant::now();
    let mut refused = 0;
    while refused < 8 && started.elapsed() < Duration::from_secs(10) {
        refused = connections.iter_mut().map(closed).filter(|&is_closed| is_closed).count();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!((8..=12).contains(&refused), "{refused} connections closed of 136 from one address");

    // Meanwhile another address is served, and this one once it lets go.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let answer = elsewhere.get(topology.balancer.url("/healthz")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    drop(connections);
    let started = Instant::now();
    while client().get(topology.balancer.url("/healthz")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "the address was not served again within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The files `docker build` sends to the builder, read from .dockerignore by
/// Docker's own Python client (which comes with Debian's docker-compose).
fn build_context() -> Vec<String> {
    let script = "import json, os, sys\n\
        from docker.utils.build import exclude_paths\n\
        lines = [line.strip() for line in open('.dockerignore').read().splitlines()]\n\
        patterns = [line for line in lines if line and not line.startswith('#')]\n\
        json.dump(sorted(path for path in exclude_paths('.', patterns) if os.path.isfile(path)), sys.stdout)\n";
    let output = Command::new("python3").args(["-c", script]).current_dir(repository()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_image_is_built_from_the_sources_alone() {
    let context = build_context();
    let bytes: u64 = context.iter().map(|file| std::fs::metadata(repository().join(file)).unwrap().len()).sum();
    eprintln!("build context: {} files, {bytes} bytes", context.len());
    // Nothing but the crate's sources: no build output, state, key, policy,
    // test client (node_modules, .venv) or screenshot, wherever it lies.
    let top = ["Cargo.toml", "Cargo.lock", "Dockerfile", ".dockerignore"];
    let strays: Vec<&String> =
        context.iter().filter(|file| !top.contains(&file.as_str()) && !file.starts_with("src/")).collect();
    assert!(strays.is_empty(), "sent to the image builder: {strays:?}");
    // And everything the Dockerfile copies in from it.
    let dockerfile = std::fs::read_to_string(repository().join("Dockerfile")).unwrap();
    for copy in dockerfile.lines().filter(|line| line.starts_with("COPY ") && !line.contains("--from")) {
        let words: Vec<&str> = copy.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(
                context.iter().any(|file| file == source || file.starts_with(&format!("{source}/"))),
                "{copy}: {source} is not in the build context"
            );
        }
    }
}

/// Runs `docker-compose config` on the repository's compose file (it needs
/// no Docker daemon) and returns the loaded file as JSON, through the YAML
/// module `docker-compose` itself runs on.
fn compose_config() -> Value {
    let compose = installed("docker-compose");
    let output = Command::new(compose)
        .args(["--file", "docker-compose.yml", "config"])
        .current_dir(repository())
        .env_remove("COMPOSE_FILE")
        .env_remove("COMPOSE_PROJECT_NAME")
        .output()
        .unwrap();
    assert!(output.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&output.stderr));
    let mut python = Command::new("python3")
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    python.stdin.take().unwrap().write_all(&output.stdout).unwrap();
    let json = python.wait_with_output().unwrap();
    assert!(json.status.success(), "the loaded compose file is not YAML");
    serde_json::from_slice(&json.stdout).unwrap()
}

#[test]
fn the_compose_file_loads_in_docker_compose() {
    let config = compose_config();
    let services = &config["services"];
    let names: Vec<&String> = services.as_object().unwrap().keys().collect();
    assert_eq!(names, ["balancer", "broker-1", "broker-2", "keys", "redis"]);

    // The balancer: published on the host's loopback, configured by the file
    // the balanced test runs HAProxy with, at the address the nodes trust.
    let balancer = &services["balancer"];
    assert_eq!(balancer["ports"], json!(["127.0.0.1:8080:8080/tcp"]));
    // docker-compose names host paths from the real working folder.
    let repository = repository().canonicalize().unwrap();
    let mounted = format!("{}:/usr/local/etc/haproxy/haproxy.cfg:ro", repository.join("deploy/haproxy.cfg").display());
    assert_eq!(balancer["volumes"], json!([mounted]));
    let balancer_address = &balancer["networks"]["default"]["ipv4_address"];

    let policies = format!("{}:/app/policies:ro", repository.join("policies").display());
    let dev_admin_hash = secret_hash("dev-only-admin-token");
    for (name, data) in [("broker-1", "broker-1-data"), ("broker-2", "broker-2-data")] {
        let broker = &services[name];
        let environment = &broker["environment"];
        assert_eq!(environment["BATON_ISSUER"], "http://localhost:8080", "{name}: one issuer, the balancer's address");
        assert_eq!(environment["BATON_REDIS_URL"], "redis://redis:6379", "{name}");
        assert_eq!(&environment["BATON_TRUSTED_PROXIES"], balancer_address, "{name}");
        // From deploy/baton.env: the README names the published dev token.
        assert_eq!(environment["BATON_ADMIN_TOKEN_SHA256"], dev_admin_hash.as_str(), "{name}");
        let volumes: Vec<&str> = broker["volumes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(volumes, ["baton-keys:/app/keys:rw", policies.as_str(), &format!("{data}:/app/data:rw")], "{name}");
        assert_eq!(broker["depends_on"]["keys"]["condition"], "service_completed_successfully", "{name}");
        assert_eq!(broker["depends_on"]["redis"]["condition"], "service_healthy", "{name}");
    }

    let redis = &services["redis"];
    assert_eq!(redis["command"], json!(["redis-server", "--appendonly", "yes", "--appendfsync", "always"]));
    assert_eq!(redis["volumes"], json!(["redis-data:/data:rw"]));
    let volumes: Vec<&String> = config["volumes"].as_object().unwrap().keys().collect();
    assert_eq!(volumes, ["baton-keys", "broker-1-data", "broker-2-data", "redis-data"]);
}
