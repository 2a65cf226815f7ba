//! The `vigil` binary as a separate process, for tests of the process itself (signals, crashes,
//! restarts): started with JSON logs on ephemeral ports, its addresses read from the `serving`
//! log line, the rest of its log collected in the background.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `vigil` command run from the repository root, without the environment of the caller; a
/// gateway it starts serves gRPC on an ephemeral port.
pub fn vigil() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command.current_dir(super::root());
    command.env_remove("VIGIL_ADDR");
    command.env_remove("VIGIL_ADMIN_TOKEN");
    command.env("VIGIL_GRPC_ADDR", "127.0.0.1:0");
    command
}

/// A running `vigil serve`.
pub struct ServingProcess {
    /// The process; killed when dropped.
    pub child: Child,
    /// `host:port` it listens on.
    pub address: String,
    /// `host:port` its gRPC service listens on.
    pub grpc_address: String,
    log: Arc<Mutex<String>>,
}

impl ServingProcess {
    /// Runs `vigil serve --addr 127.0.0.1:0 --log-format json <args>` and waits (up to 60 s)
    /// for it to serve.
    pub fn start(args: &[&std::ffi::OsStr]) -> ServingProcess {
        let mut child = vigil()
            .args(["serve", "--addr", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("vigil starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut log = String::new();
        let (address, grpc_address) = loop {
            assert!(Instant::now() < deadline, "no `serving` log line:\n{log}");
            let Some(Ok(line)) = lines.next() else {
                panic!("vigil stopped before serving:\n{log}");
            };
            log.push_str(&line);
            log.push('\n');
            let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
            if entry["fields"]["message"] == "serving" {
                let field = |name: &str| {
                    entry["fields"][name]
                        .as_str()
                        .unwrap_or_else(|| panic!("`{name}` in {line}"))
                        .to_string()
                };
                break (field("address"), field("grpc_address"));
            }
        };
        let log = Arc::new(Mutex::new(log));
        let rest = Arc::clone(&log);
        // Keep reading, so that a chatty gateway never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(mut log) = rest.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        ServingProcess {
            child,
            address,
            grpc_address,
            log,
        }
    }

    /// `http://address{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends SIGKILL: the process ends at once, with no shutdown of any kind.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL sent");
        self.child.wait().expect("process reaped");
    }
}

impl Drop for ServingProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
