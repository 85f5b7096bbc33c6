//! Test databases: each test gets a fresh database `taskrunner_test_<pid>_<nanos>_<n>`, created
//! through the admin URL (`TASKRUNNER_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped when the test is done.
//!
//! Without a reachable server the tests print that they were skipped and pass — except with
//! `CI=true`, where an unreachable database fails them.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};

use taskrunner_store_postgres::{PostgresConfig, PostgresStore};
use tokio_postgres::NoTls;

/// The admin URL tests create their databases through.
pub fn admin_url() -> String {
    std::env::var("TASKRUNNER_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Whether PostgreSQL is reachable; prints a skip notice when not, panics under `CI=true`.
pub async fn available() -> bool {
    let url = admin_url();
    let result = match url.parse::<tokio_postgres::Config>() {
        Ok(config) => {
            let mut config = config;
            config.connect_timeout(std::time::Duration::from_secs(5));
            config.connect(NoTls).await.map(|_| ()).map_err(|e| {
                let mut msg = e.to_string();
                if let Some(cause) = std::error::Error::source(&e) {
                    msg.push_str(&format!(": {cause}"));
                }
                msg
            })
        }
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(()) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("PostgreSQL is not reachable at {url} and CI=true: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: PostgreSQL is not reachable at {url} ({e}); \
                 set TASKRUNNER_TEST_DATABASE_URL to run the PostgreSQL store tests"
            );
            false
        }
    }
}

async fn admin() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&admin_url(), NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    client
}

/// `url` with its database name replaced by `dbname`.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let query = tail.find('?').map_or("", |i| &tail[i..]);
        format!("{}{authority}/{dbname}{query}", &url[..scheme_end + 3])
    } else {
        format!("{url} dbname={dbname}")
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Drops test databases left behind by test processes that no longer exist (killed runs).
async fn sweep_leftovers(admin: &tokio_postgres::Client) {
    if SWEPT.swap(true, Ordering::Relaxed) {
        return;
    }
    let Ok(rows) = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'taskrunner\\_test\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_none_or(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// A database created for one test, dropped (connections forced off) on drop.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "taskrunner_test_{}_{nanos}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = admin().await;
        sweep_leftovers(&admin).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDb {
            url: with_dbname(&admin_url(), &name),
            name,
        }
    }

    /// A raw connection to this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("test database connection");
        tokio::spawn(connection);
        client
    }

    /// A store ("replica") on this database with artifacts in `artifact_dir`.
    pub async fn store(&self, artifact_dir: &std::path::Path) -> PostgresStore {
        PostgresStore::connect(PostgresConfig::new(self.url.clone(), artifact_dir))
            .await
            .expect("store connects")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: drop the database from a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                admin()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}
