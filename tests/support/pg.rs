//! A throwaway PostgreSQL cluster for one test: `initdb` into a fresh temporary
//! directory, `pg_ctl start` on a Unix socket in a private directory, stopped and deleted
//! on drop — never the machine's own database.
//!
//! The cluster listens on no TCP port at all (`listen_addresses = ''`): its socket lives
//! in a directory only this test knows, so nothing is probed or shared, and port 5432
//! only names the socket file (`.s.PGSQL.5432`). Authentication is `trust`.
//!
//! Run as root, the cluster belongs to the `postgres` user (PostgreSQL refuses to run as
//! root): the directory is chowned to it and `initdb`/`pg_ctl` run through `runuser`.
//! `psql` needs no such switch: with trust auth any local user may connect as `postgres`.
//!
//! Every wait is bounded: `pg_ctl -w -t 30` gives up after 30 s, and every `Command`
//! here either ends by itself or is one of those.
//!
//! Two ways for a database never to answer, for the tests of our own bounds: a cluster
//! frozen with SIGSTOP ([`Postgres::freeze`], thawed when the guard drops), and a
//! [`SilentListener`] that accepts connections and never says a word.

use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long `pg_ctl` may wait for the server to start or stop, in seconds.
const PG_CTL_WAIT_SECS: &str = "30";

/// The port number that names the socket file; no TCP port is opened.
const PORT: u16 = 5432;

/// Settings appended to `postgresql.conf`: the private socket, and speed over durability
/// (the cluster is deleted after the test anyway). `timezone` is fixed so `timestamptz`
/// renders the same on every machine.
const SETTINGS: &str = "
listen_addresses = ''
port = 5432
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 40
timezone = 'UTC'
";

/// A running (or deliberately stopped) throwaway cluster.
pub struct Postgres {
    /// The temporary directory holding `data/`, `sock/` and `server.log`.
    root: PathBuf,
    bin: PathBuf,
    /// `Some(uid, gid)` of the `postgres` user when we run as root.
    owner: Option<(u32, u32)>,
}

impl Postgres {
    /// Creates, initialises and starts a new cluster. Panics (failing the test) with the
    /// tool's output when any step fails.
    pub fn start_new() -> Postgres {
        let bin = bin_dir();
        let owner = is_root().then(postgres_user);
        let root = fresh_dir();
        let pg = Postgres { root, bin, owner };
        fs::create_dir(pg.sock_dir()).expect("create the socket directory");
        if let Some((uid, gid)) = owner {
            for dir in [pg.root.as_path(), &pg.sock_dir()] {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("chown to postgres");
            }
        }
        // The postgres user must be able to reach the directory through its parents.
        fs::set_permissions(&pg.root, fs::Permissions::from_mode(0o755)).expect("chmod");

        let data = pg.data_dir();
        pg.run_tool(
            "initdb",
            &[
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "--locale=C",
                "-E",
                "UTF8",
                "-D",
                path_str(&data),
            ],
        );
        let settings = format!(
            "{SETTINGS}unix_socket_directories = '{}'\n",
            pg.sock_dir().display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str(&settings);
        fs::write(&conf, text).expect("write postgresql.conf");
        pg.start();
        pg
    }

    /// A key=value connection string for `DATABASE_URL`.
    pub fn url(&self) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname=postgres",
            self.sock_dir().display()
        )
    }

    /// Runs `sql` with `psql` and returns its unaligned, tuples-only output, trimmed.
    /// Panics with psql's stderr when it fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_args(&["-c", sql])
    }

    /// Loads the repository's `schema.sql` (the `users` and `world` tables).
    pub fn load_schema(&self) {
        let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.sql");
        self.psql_args(&["-f", path_str(&schema)]);
    }

    /// `pg_ctl stop -m immediate`: every backend dies at once without a goodbye to its
    /// client, as in a crash.
    pub fn stop_immediate(&self) {
        let output = self.pg_ctl(&["stop", "-m", "immediate"]);
        assert!(
            output.status.success(),
            "pg_ctl stop: {}",
            self.describe(&output)
        );
    }

    /// Starts the cluster (again) in the same directory; returns once it accepts
    /// connections.
    pub fn start(&self) {
        let log = self.root.join("server.log");
        let output = self.pg_ctl(&["-l", path_str(&log), "start"]);
        assert!(
            output.status.success(),
            "pg_ctl start: {}",
            self.describe(&output)
        );
    }

    /// How many sessions `lastcall` holds (its pool names itself in `application_name`).
    pub fn our_connections(&self) -> usize {
        let count =
            self.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lastcall'");
        count
            .parse()
            .unwrap_or_else(|_| panic!("bad count {count:?}"))
    }

    /// Stops the postmaster and every process it started (backends, checkpointer, …) with
    /// SIGSTOP: sockets stay open and the kernel keeps accepting connections and bytes,
    /// but nothing answers. The guard sends SIGCONT to the same processes when dropped,
    /// also when the test panics (a stopped cluster could not be stopped on drop).
    pub fn freeze(&self) -> Frozen {
        let pid_file = fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .expect("read postmaster.pid");
        let postmaster: u32 = pid_file
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .expect("a pid on postmaster.pid's first line");
        // The postmaster first: once it is stopped it cannot start another child.
        signal(&[postmaster], "STOP");
        let mut pids = vec![postmaster];
        let children = children_of(postmaster);
        signal(&children, "STOP");
        pids.extend(children);
        Frozen { pids }
    }

    /// The server's own log, for failure messages.
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn psql_args(&self, args: &[&str]) -> String {
        let sock = self.sock_dir();
        let port = PORT.to_string();
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", path_str(&sock), "-p", &port, "-U", "postgres", "-d"])
            .arg("postgres")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {args:?}: {}",
            self.describe(&output)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data_dir();
        let mut all = vec!["-w", "-t", PG_CTL_WAIT_SECS, "-D", path_str(&data)];
        all.extend_from_slice(args);
        self.command("pg_ctl", &all).output().expect("run pg_ctl")
    }

    fn run_tool(&self, tool: &str, args: &[&str]) {
        let output = self.command(tool, args).output().expect("run initdb");
        assert!(
            output.status.success(),
            "{tool}: {}",
            self.describe(&output)
        );
    }

    /// `tool` with `args`, as the `postgres` user when we are root, in a clean
    /// environment (no inherited `PG*` variables, the C locale) and in our directory
    /// (the postgres user may not be allowed into the test's working directory).
    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let program = self.bin.join(tool);
        let mut cmd = match self.owner {
            Some(_) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .current_dir(&self.root)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }

    fn describe(&self, output: &Output) -> String {
        format!(
            "{}\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.server_log()
        )
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn sock_dir(&self) -> PathBuf {
        self.root.join("sock")
    }
}

impl Drop for Postgres {
    /// Stops the cluster (it may already be stopped) and deletes its directory, also when
    /// the test panicked.
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Where the server binaries are: on `PATH`, else the newest `/usr/lib/postgresql/*/bin`
/// (Debian installs them there, off `PATH`).
fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find(|dir| {
            ["initdb", "pg_ctl", "psql"]
                .iter()
                .all(|tool| dir.join(tool).is_file())
        })
    });
    if let Some(dir) = on_path {
        return dir;
    }
    let newest = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries (initdb, pg_ctl, psql) not found on PATH or in \
             /usr/lib/postgresql/*/bin; on Debian: apt-get install postgresql"
        ),
    }
}

fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    // "Uid:\treal\teffective\tsaved\tfs": the effective uid decides.
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("a Uid line");
    effective == "0"
}

/// The uid and gid of the `postgres` user.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            output.status.success(),
            "running as root needs a `postgres` user to own the cluster: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad id output {text:?}"))
    };
    (id("-u"), id("-g"))
}

/// A new, empty directory of our own. Short, because a Unix socket path inside it must
/// fit in 107 bytes.
fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "lastcall-pg-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(name);
    // `create_dir`, not `create_dir_all`: it fails if the directory exists, so we never
    // share or reuse one.
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A frozen cluster's processes; dropping the guard thaws them.
pub struct Frozen {
    pids: Vec<u32>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(&self.pids, "CONT");
    }
}

/// Sends `SIG<name>` to `pids` with kill(1), no libc needed; only ever pids this test
/// started (a cluster's processes). A short-lived child (an autovacuum worker) may have
/// exited since it was listed: a pid that is gone is no failure.
fn signal(pids: &[u32], name: &str) {
    if pids.is_empty() {
        return;
    }
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run kill");
    let gone = |pid: &&u32| !Path::new(&format!("/proc/{pid}")).exists();
    assert!(
        status.success() || pids.iter().any(|pid| gone(&pid)),
        "kill -{name} {pids:?} failed"
    );
}

/// The processes whose parent is `parent`, from `/proc/<pid>/stat`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue; // gone meanwhile
        };
        // "pid (comm) state ppid …": comm may hold spaces, so parse after its last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children
}

/// A "database" on `127.0.0.1:0` that accepts every connection and never writes a byte:
/// what a client sees of a host that is up while its PostgreSQL hangs, or of a wrong
/// port behind a proxy. The connections it accepted are held until it is dropped.
pub struct SilentListener {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

/// How often the silent listener looks for new connections and for its stop flag. It is
/// a fake peer, not a wait for a condition: it only sets the pace of its own accepts.
const ACCEPT_EVERY: Duration = Duration::from_millis(10);

impl SilentListener {
    pub fn start() -> SilentListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the silent listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let acceptor = thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stopped.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(ACCEPT_EVERY),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("silent listener: accept: {e}"),
                }
            }
        });
        SilentListener {
            addr,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// A `DATABASE_URL` pointing at it.
    pub fn url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.addr.ip(),
            self.addr.port()
        )
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}
