//! A private PostgreSQL server for tests that stop, restart or reconfigure it (the machine's
//! shared cluster is used by other tests at the same time and is never touched): `initdb` into
//! a temporary directory, then `pg_ctl` on a free loopback port. As root the server binaries
//! run as the `postgres` user (`runuser`), with the directory handed to it.
//!
//! Binaries are looked up under `/usr/lib/postgresql/<version>/bin` (the newest first), or in
//! `TASKRUNNER_PG_BIN` when set. Without them the caller skips with a notice (or fails under
//! `CI=true`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory with `initdb` and `pg_ctl`, or why there is none.
pub fn bin_dir() -> Result<PathBuf, String> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("TASKRUNNER_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "TASKRUNNER_PG_BIN={} has no initdb and pg_ctl",
                dir.display()
            ))
        };
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| format!("no PostgreSQL server binaries ({}: {e})", root.display()))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no initdb/pg_ctl under {}/*/bin", root.display()))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private server: data directory, port, log. Stopped (immediately) and removed on drop.
#[derive(Debug)]
pub struct PrivatePg {
    root: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl PrivatePg {
    /// `initdb` into a fresh temporary directory (trust authentication on loopback, no fsync:
    /// a server crash is simulated by `stop("immediate")`, which WAL recovery covers). Not
    /// started yet.
    pub fn init(name: &str) -> Result<PrivatePg, String> {
        let bin = bin_dir()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let root = std::env::temp_dir().join(format!(
            "taskrunner-pg-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let pg = PrivatePg {
            root,
            bin,
            port: free_port(),
            as_postgres: is_root(),
        };
        if pg.as_postgres {
            if Command::new("runuser").arg("--help").output().is_err() {
                return Err("running as root and runuser is missing".into());
            }
            pg.chown()?;
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        pg.append_conf(&format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nmax_connections = 200\n",
            pg.port,
            pg.root.display()
        ))?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The directory the test may put files in (owned by the server's user).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Hands the whole directory to the `postgres` user (as root only).
    pub fn chown(&self) -> Result<(), String> {
        if !self.as_postgres {
            return Ok(());
        }
        let out = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&self.root)
            .output()
            .map_err(|e| format!("chown: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "chown postgres {}: {}",
                self.root.display(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs a server binary (as `postgres` when we are root).
    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command
            .args(args)
            .current_dir(&self.root)
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} {args:?} failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ))
        }
    }

    /// Appends settings to `postgresql.conf` (read at the next start).
    pub fn append_conf(&self, text: &str) -> Result<(), String> {
        use std::io::Write;
        let path = self.data().join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Replaces `pg_hba.conf` (read at the next start).
    pub fn write_hba(&self, text: &str) -> Result<(), String> {
        let path = self.data().join("pg_hba.conf");
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        self.chown()
    }

    /// Turns TLS on with this server certificate chain and key (PEM files, copied in).
    pub fn enable_tls(&self, cert_pem: &Path, key_pem: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let cert = self.data().join("server.crt");
        let key = self.data().join("server.key");
        std::fs::copy(cert_pem, &cert).map_err(|e| format!("{}: {e}", cert_pem.display()))?;
        std::fs::copy(key_pem, &key).map_err(|e| format!("{}: {e}", key_pem.display()))?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        self.append_conf("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")?;
        self.chown()
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &self.root.join("server.log").to_string_lossy(),
                "-w",
                "-t",
                "120",
                "start",
            ],
        )
    }

    /// Stops the server: `mode` is `fast` (sessions ended, clean shutdown) or `immediate`
    /// (every process killed, WAL recovery at the next start: a crash).
    pub fn stop(&self, mode: &str) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                mode,
                "-w",
                "-t",
                "120",
                "stop",
            ],
        )
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>` followed by `query` (`?…` or empty).
    pub fn url(&self, db: &str, query: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}{query}", self.port)
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self.stop("immediate");
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
