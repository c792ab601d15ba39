//! The `baton` binary as a separate process, in a temporary folder holding a
//! copy of the example policies, on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::example_policies;

pub struct BrokerProcess {
    child: Child,
    pub url: String,
    pub folder: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` distinct free loopback ports: the listeners are held together, so
/// that no two of them are the same port.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [std::net::TcpListener; N] =
        std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    listeners.map(|listener| listener.local_addr().unwrap().port())
}

/// A copy of the example policies in `folder/policies`, with the example
/// agents kept alive whatever the date (the real clock runs in a process).
pub fn copy_example_policies(folder: &Path) -> PathBuf {
    let policies = folder.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for entry in std::fs::read_dir(example_policies()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap().replace("expires = 2030-06-30", "expires = 9999-12-31");
            std::fs::write(policies.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    policies
}

/// The file, in the broker's folder, that its standard output goes to.
const LOG: &str = "broker.log";

impl BrokerProcess {
    /// `baton serve` with no config but `BATON_LISTEN` and `extra` variables.
    pub async fn start(extra: &[(&str, &str)]) -> BrokerProcess {
        BrokerProcess::start_with_policies(extra, |_| {}).await
    }

    /// The same, after `change` has edited the copy of the example policies.
    pub async fn start_with_policies(extra: &[(&str, &str)], change: impl FnOnce(&Path)) -> BrokerProcess {
        BrokerProcess::start_on(free_port(), extra, change).await
    }

    /// The same, on `port`.
    pub async fn start_on(port: u16, extra: &[(&str, &str)], change: impl FnOnce(&Path)) -> BrokerProcess {
        let folder = tempfile::tempdir().unwrap();
        change(&copy_example_policies(folder.path()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command
            .arg("serve")
            .current_dir(folder.path())
            .env_clear()
            .env("BATON_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(std::fs::File::create(folder.path().join(LOG)).unwrap())
            .stderr(Stdio::null());
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command.spawn().unwrap();
        let process = BrokerProcess { child, url: format!("http://127.0.0.1:{port}"), folder };
        process.wait_until_healthy().await;
        process
    }

    /// What the broker has logged so far (its standard output).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.folder.path().join(LOG)).unwrap_or_default()
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_until_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if client.get(format!("{}/healthz", self.url)).send().await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the broker at {} did not come up", self.url);
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary of this package's examples, built beside the test binary.
pub fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().and_then(Path::parent).unwrap();
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with --all-targets (./scripts/test.sh does)",
        path.display()
    );
    path
}
