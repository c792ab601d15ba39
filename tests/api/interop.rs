//! Interop with clients nobody here wrote: the real binary on a real socket,
//! driven by `openid-client` and `jose` (Node) and by `PyJWT` and `requests`
//! (Python). Their pinned dependencies live under `tests/interop/` and
//! `./scripts/test.sh` installs them; a missing install fails here, loudly.
//!
//! One test runs both languages against one broker, in order: the Node tests
//! walk the chain with `client_secret_basic` and `private_key_jwt`, rotate the
//! broker's key, walk again, and leave every token in a file; the Python tests
//! verify those tokens (both keys) and drive introspection and revocation.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long each language's tests may take before they are stopped.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// The agent the Node tests authenticate as with `private_key_jwt`.
const KEY_AGENT: &str = "orchestrator-jwt";
const KEY_ID: &str = "interop-key-1";

pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// `baton serve` in a temporary folder, killed when dropped.
struct Broker {
    child: Child,
    folder: tempfile::TempDir,
    issuer: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// The example policies (agents kept alive whatever the date), plus
    /// `orchestrator-jwt`: the orchestrator's rights, with the given public
    /// key for `private_key_jwt` instead of a secret.
    fn start(public_jwk: &Value) -> Broker {
        let folder = tempfile::tempdir().unwrap();
        let policies = crate::process::copy_example_policies(folder.path());
        let jwk = format!(
            "{{ kty = \"EC\", crv = \"P-256\", kid = \"{KEY_ID}\", x = {}, y = {} }}",
            public_jwk["x"], public_jwk["y"]
        );
        append(
            &policies.join("agents.toml"),
            &format!(
                "\n[[agents]]\nid = \"{KEY_AGENT}\"\nowner = \"platform-team@example.com\"\n\
                 purpose = \"The orchestrator, authenticating with a key, for the interop tests\"\n\
                 expires = 9999-12-31\ngroups = [\"travel\"]\njwks = {{ keys = [ {jwk} ] }}\n"
            ),
        );
        // These clients test JOSE and OAuth interop, not approvals (covered
        // by tests/api/approvals.rs): the booking they make is not marked.
        let resources = policies.join("resources.toml");
        let text = std::fs::read_to_string(&resources).unwrap();
        assert!(text.contains("approval = [\"flights.book\"]"), "the example marks bookings");
        std::fs::write(&resources, text.replace("approval = [\"flights.book\"]", "")).unwrap();
        // Its root tokens go to the planner, as the orchestrator's do; the
        // forbid on flights.book still lets the chain through the planner.
        append(
            &policies.join("travel.cedar"),
            &format!(
                "\n@id(\"interop-{KEY_AGENT}-to-planner\")\n\
                 permit (principal == Agent::\"{KEY_AGENT}\", action == Action::\"issue\", resource)\n\
                 when {{ context.target == \"planner\" }};\n"
            ),
        );

        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .arg("serve")
            .current_dir(folder.path())
            .env_clear()
            .env("BATON_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(File::create(folder.path().join("broker.out")).unwrap())
            .stderr(File::create(folder.path().join("broker.err")).unwrap())
            .spawn()
            .unwrap();
        let broker = Broker { child, folder, issuer: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !healthy(port) {
            assert!(Instant::now() < deadline, "the broker did not come up:\n{}", broker.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        broker
    }

    /// The end of the broker's log (its audit events), for a failure report.
    fn log(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.folder.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "broker stdout (last 40 lines):\n{}\nbroker stderr (last 40 lines):\n{}",
            tail("broker.out"),
            tail("broker.err")
        )
    }
}

pub fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

/// `GET /healthz` answers 200, over plain std sockets with bounded waits.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// What one language's test runner did.
pub struct Run {
    name: &'static str,
    status: Option<ExitStatus>,
    output: String,
}

impl Run {
    pub fn passed(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// The verdict and everything the runner printed.
    pub fn report(&self) -> String {
        let verdict = match self.status {
            Some(status) if status.success() => "passed".to_owned(),
            Some(status) => format!("FAILED ({status})"),
            None => format!("FAILED (stopped after {} s)", RUN_LIMIT.as_secs()),
        };
        format!("\n===== {} tests: {verdict}\n{}\n", self.name, self.output)
    }
}

/// Runs `command` with its output in files under `folder`, stopping it after
/// `RUN_LIMIT`.
pub fn run(name: &'static str, mut command: Command, folder: &Path) -> Run {
    let stdout = folder.join(format!("{name}.out"));
    let stderr = folder.join(format!("{name}.err"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap())
        .spawn()
        .unwrap_or_else(|error| panic!("could not start the {name} tests ({command:?}): {error}"));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = format!(
        "{}{}",
        std::fs::read_to_string(&stdout).unwrap_or_default(),
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    Run { name, status, output }
}

#[test]
fn node_and_python_clients_discover_exchange_verify_introspect_and_revoke() {
    let interop = interop_dir();
    let node_dir = interop.join("node");
    let python_dir = interop.join("python");
    let python = python_dir.join(".venv/bin/python");
    for (installed, what) in [
        (node_dir.join("node_modules/openid-client/package.json"), "tests/interop/node/node_modules (npm ci)"),
        (node_dir.join("node_modules/jose/package.json"), "tests/interop/node/node_modules (npm ci)"),
        (python.clone(), "tests/interop/python/.venv (python3 -m venv, pip install -r requirements.txt)"),
    ] {
        assert!(
            installed.exists(),
            "the interop tests' dependencies are not installed: {what} is missing. Run ./scripts/test.sh, \
             which installs them, then run the tests again."
        );
    }

    // The key `orchestrator-jwt` signs its client assertions with.
    let key = josekit::jwk::Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    let mut private = key.clone();
    private.set_key_id(KEY_ID);
    private.set_algorithm("ES256");
    let public = Value::Object(key.to_public_key().unwrap().as_ref().clone());

    let broker = Broker::start(&public);
    let work = broker.folder.path();
    let key_file = work.join("orchestrator-jwt.private.json");
    std::fs::write(&key_file, serde_json::to_vec(&Value::Object(private.as_ref().clone())).unwrap()).unwrap();
    let tokens_file = work.join("interop-tokens.json");
    let path = std::env::var_os("PATH").unwrap_or_default();

    let mut node = Command::new("node");
    node.args(["--test", "--test-timeout=90000", "interop.test.js"])
        .current_dir(&node_dir)
        .env_clear()
        .env("PATH", &path)
        .env("BATON_ISSUER", &broker.issuer)
        .env("BATON_INTEROP_CLIENT_KEY", &key_file)
        .env("BATON_INTEROP_TOKENS", &tokens_file)
        .env("BATON_BIN", env!("CARGO_BIN_EXE_baton"))
        .env("BATON_DIR", work);
    let node = run("node", node, work);

    let mut unittest = Command::new(&python);
    unittest
        .args(["-m", "unittest", "-v", "test_interop"])
        .current_dir(&python_dir)
        .env_clear()
        .env("PATH", &path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("BATON_ISSUER", &broker.issuer)
        .env("BATON_INTEROP_TOKENS", &tokens_file);
    let python = run("python", unittest, work);

    let mut report = String::new();
    for run in [&node, &python] {
        report.push_str(&run.report());
    }
    // Captured by the test runner: shown on failure, or with --no-capture.
    println!("{report}");
    assert!(node.passed() && python.passed(), "interop tests failed:\n{report}\n{}", broker.log());
}
