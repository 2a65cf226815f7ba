//! A real PostgreSQL server for tests: Debian's `postgresql` binaries, `initdb` into a temporary
//! directory and `postgres` on a free loopback port, run as the unprivileged `postgres` user when
//! the tests run as root. Stopped by PID when dropped. A missing installation fails the test with
//! the command that installs it. Clusters live in `<temp>/vigil-pg-<pid>-…`; each start removes
//! those of test processes that have exited (a binary's shared server lives as long as the
//! binary, so its directory is never dropped).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The command that installs what this harness needs.
pub const INSTALL: &str =
    "apt-get install -y postgresql (Debian's PostgreSQL 15; .ci/run installs it)";

/// A running PostgreSQL server with one database, `vigil`, owned by the superuser `vigil`
/// (trust authentication on loopback).
pub struct Postgres {
    child: Option<Child>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

/// The directory of Debian's PostgreSQL binaries (the newest installed major version).
fn binaries() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|e| panic!("no /usr/lib/postgresql ({e}); install it: {INSTALL}"))
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("no PostgreSQL server binaries; install them: {INSTALL}"))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `program args…`, as the `postgres` user when running as root (PostgreSQL refuses root).
/// `setpriv` executes the program in place, so the child's PID is the program's own, and asks
/// the kernel to kill it if the thread that started it ends (a test binary that exits leaves no
/// server behind).
fn as_owner(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    if running_as_root() {
        command.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
    }
    command.args(["--pdeathsig", "KILL", "--"]).arg(program);
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// Removes the cluster directories of test processes that have exited.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let owner = name
            .to_str()
            .and_then(|name| name.strip_prefix("vigil-pg-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = owner
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Postgres {
    /// Initialises a cluster in a temporary directory and starts the server; waits (up to 60 s)
    /// until it accepts connections and the `vigil` database exists.
    pub fn start() -> Postgres {
        let bin = binaries();
        remove_leftovers();
        let dir = tempfile::Builder::new()
            .prefix(&format!("vigil-pg-{}-", std::process::id()))
            .tempdir()
            .expect("temporary directory");
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "cannot give the data directory to postgres"
            );
        }
        let data = dir.path().join("data");
        let init = as_owner(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "vigil", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let mut postgres = Postgres {
            child: None,
            dir,
            bin,
            port: free_port(),
        };
        postgres.launch();
        query(&postgres.url_of("postgres"), "CREATE DATABASE vigil");
        postgres
    }

    /// Starts the server process on the data directory (again, after [`Postgres::stop`]).
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).expect("log file");
        let child = as_owner(&self.bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "max_connections=200", "-p"])
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start postgres ({e}); install it: {INSTALL}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-q", "-p"])
                .arg(self.port.to_string())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within 60 s: {}",
                std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server by PID: SIGINT (PostgreSQL's fast shutdown: clients are disconnected at
    /// once), SIGKILL if it has not exited within 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `postgres://vigil@127.0.0.1:<port>/vigil`.
    pub fn url(&self) -> String {
        self.url_of("vigil")
    }

    /// `postgres://vigil@127.0.0.1:<port>/<database>`.
    fn url_of(&self, database: &str) -> String {
        format!("postgres://vigil@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs one SQL command on the `vigil` database, returning its rows (see [`query`]).
    pub fn sql(&self, command: &str) -> String {
        query(&self.url(), command)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One server for a whole test binary, started on first use by a thread that lives as long as
/// the binary (the server dies with it), for running the suite against the PostgreSQL store.
static SHARED: std::sync::OnceLock<u16> = std::sync::OnceLock::new();

/// A database of its own on the binary's shared server for a gateway whose state directory is
/// `state` (the same directory, as after a restart, gets the same database): its URL.
pub fn database_for(state: &Path) -> String {
    let port = *SHARED.get_or_init(|| {
        let (started, port) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let postgres = Postgres::start();
            let _ = started.send(postgres.port);
            loop {
                std::thread::park();
            }
        });
        port.recv().expect("the shared PostgreSQL started")
    });
    let name = format!(
        "g{:016x}",
        state
            .to_string_lossy()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b))
                .wrapping_mul(0x0100_0000_01b3))
    );
    let server = format!("postgres://vigil@127.0.0.1:{port}/postgres");
    let exists = query(
        &server,
        &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
    );
    if exists != "1" {
        query(&server, &format!("CREATE DATABASE {name}"));
    }
    format!("postgres://vigil@127.0.0.1:{port}/{name}")
}

/// Runs `sql` on the database at `url` (as [`database_for`] gives it) with `psql`: its rows,
/// unaligned, one per line.
pub fn query(url: &str, sql: &str) -> String {
    let out = Command::new(binaries().join("psql"))
        .args(["-At", "-d", url, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Store settings for `url` as tests use them: 2 s timeouts, a 5 s poll, notifications on.
pub fn settings(url: String) -> vigil::config::DatabaseSettings {
    vigil::config::DatabaseSettings {
        url,
        password: None,
        timeout: Duration::from_secs(2),
        poll: Duration::from_secs(5),
        notifications: true,
        advertise_address: None,
    }
}
