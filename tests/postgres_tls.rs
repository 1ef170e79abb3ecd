//! PostgreSQL over TLS, as managed services require it: a private server with `ssl=on`, a CA
//! and certificates generated here, and a `pg_hba.conf` that admits TCP clients only over TLS
//! (`hostssl`, SCRAM passwords, so channel binding is exercised). A turn runs through a cluster
//! whose every connection uses `sslmode=verify-full`; a wrong CA and `sslmode=disable` fail at
//! startup with one line naming the cause.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use chatd_shared::pg_embed::{EmbeddedOptions, EmbeddedPostgres};
use common::cluster::{assistant_texts, create_chat, wait_until, Cluster};
use common::pg::TestDatabase;

struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-sign the CA");
    Authority { cert, key }
}

/// Writes `contents` owned by the data directory's owner (the server runs as it), `0600`.
fn write_for_server(data_dir: &Path, name: &str, contents: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(name);
    std::fs::write(&path, contents).expect("write a server file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let owner = std::fs::metadata(data_dir).expect("data dir");
    std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).expect("chown");
    path
}

/// Runs `chatd migrate` against `url`: its exit status and stderr.
fn migrate(url: &str) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["migrate", "--database-url", url])
        .env_remove("CHATD_DATABASE_URL")
        .output()
        .expect("run chatd migrate");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    )
}

/// Starts `chatd api` against `url` and waits for it to exit on its own: its stderr.
fn api_refuses_to_start(url: &str) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["api", "--database-url", url, "--addr", "127.0.0.1:0"])
        .env_remove("CHATD_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chatd api");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("poll chatd api") {
            assert!(!status.success(), "chatd api exited successfully");
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return stderr;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chatd api kept running against {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `error:` line a refused start ends with (printed, for the test's log).
fn last_line(stderr: &str) -> &str {
    let line = stderr
        .lines()
        .rev()
        .find(|line| line.starts_with("error:"))
        .unwrap_or(stderr);
    eprintln!("refused: {line}");
    line
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_runs_over_verified_tls_and_misconfigured_tls_fails_at_startup() {
    let data_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/chatd-test-pg")
        .join(format!("tls-{}", uuid::Uuid::new_v4().simple()));
    let options = EmbeddedOptions {
        port: 0,
        settings: vec![("fsync".to_owned(), "off".to_owned())],
        ..EmbeddedOptions::new(&data_dir)
    };
    // First without TLS: initdb, a password role for the cluster, its database.
    let plain = EmbeddedPostgres::start(options.clone())
        .await
        .expect("start");
    let admin = chatd_shared::db::pool::connect_url(&plain.url("postgres"), "test-setup")
        .await
        .expect("connect");
    for statement in [
        "SET password_encryption = 'scram-sha-256'",
        "CREATE ROLE app LOGIN SUPERUSER PASSWORD 'tls-secret'",
        "CREATE DATABASE chatd_tls OWNER app",
    ] {
        admin
            .batch_execute(statement)
            .await
            .expect("create the role and the database");
    }
    drop(admin);
    let port = plain.port();
    plain.stop().await.expect("stop");

    let ca = authority("chatd test CA");
    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_cert = server_params
        .signed_by(&server_key, &ca.cert, &ca.key)
        .expect("sign the server certificate");
    write_for_server(&data_dir, "server.crt", &server_cert.pem());
    write_for_server(&data_dir, "server.key", &server_key.serialize_pem());
    // TCP only over TLS; the superuser may skip the password (the embedded server's own
    // readiness check), the cluster's role must use SCRAM.
    let hba = write_for_server(
        &data_dir,
        "pg_hba_tls.conf",
        "local all all trust\n\
         hostssl all chatd 127.0.0.1/32 trust\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n\
         hostssl all all ::1/128 scram-sha-256\n",
    );
    let test_dir = data_dir.with_extension("client");
    std::fs::create_dir_all(&test_dir).unwrap();
    let ca_file = test_dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let wrong_ca_file = test_dir.join("wrong-ca.pem");
    std::fs::write(&wrong_ca_file, authority("somebody else").cert.pem()).unwrap();

    let tls_options = EmbeddedOptions {
        port,
        settings: vec![
            ("fsync".to_owned(), "off".to_owned()),
            ("ssl".to_owned(), "on".to_owned()),
            ("ssl_cert_file".to_owned(), "server.crt".to_owned()),
            ("ssl_key_file".to_owned(), "server.key".to_owned()),
            ("hba_file".to_owned(), hba.display().to_string()),
        ],
        ..options
    };
    let server = EmbeddedPostgres::start(tls_options)
        .await
        .expect("start with TLS");
    let base = format!(
        "postgres://app:tls-secret@localhost:{}/chatd_tls",
        server.port()
    );
    let verified = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    );

    // Misconfigured: refused at startup, in one line that names the cause.
    let wrong_ca = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        wrong_ca_file.display()
    );
    let (ok, stderr) = migrate(&wrong_ca);
    assert!(!ok);
    assert!(last_line(&stderr).contains("certificate"), "{stderr}");
    let stderr = api_refuses_to_start(&wrong_ca);
    assert!(last_line(&stderr).contains("UnknownIssuer"), "{stderr}");
    let disabled = format!("{base}?sslmode=disable");
    let (ok, stderr) = migrate(&disabled);
    assert!(!ok);
    assert!(last_line(&stderr).contains("no encryption"), "{stderr}");
    let stderr = api_refuses_to_start(&disabled);
    assert!(last_line(&stderr).contains("no encryption"), "{stderr}");
    assert!(
        !last_line(&stderr).contains("tls-secret"),
        "the password is redacted"
    );

    // Verified: migrate, then a cluster (API, worker, listener, liveness lock) answers a chat.
    let (ok, stderr) = migrate(&verified);
    assert!(ok, "{stderr}");
    // The other modes, as libpq defines them. By address, the certificate's name (localhost)
    // does not match: verify-full refuses, verify-ca (the chain only) accepts.
    let by_address = format!(
        "postgres://app:tls-secret@127.0.0.1:{}/chatd_tls",
        server.port()
    );
    let ca = ca_file.display();
    let wrong = wrong_ca_file.display();
    for (query, accepted, cause) in [
        (format!("sslmode=verify-ca&sslrootcert={ca}"), true, ""),
        (
            format!("sslmode=verify-full&sslrootcert={ca}"),
            false,
            "not valid for name",
        ),
        ("sslmode=require".to_owned(), true, ""),
        (
            format!("sslmode=require&sslrootcert={wrong}"),
            false,
            "UnknownIssuer",
        ),
        ("application_name=x".to_owned(), true, ""), // prefer: TLS, unverified
    ] {
        let (ok, stderr) = migrate(&format!("{by_address}?{query}"));
        assert_eq!(ok, accepted, "{query}: {stderr}");
        if !accepted {
            assert!(last_line(&stderr).contains(cause), "{query}: {stderr}");
        }
    }
    let cluster = Cluster::start_on(
        TestDatabase {
            url: verified.clone(),
            name: "chatd_tls".to_owned(),
        },
        1,
        1,
    )
    .await;
    let (chat_id, _) = create_chat(&cluster.api(0), "hello over TLS").await;
    let api = cluster.api(0);
    let texts = wait_until(Duration::from_secs(30), "the answer", || {
        let api = api.clone();
        let chat_id = chat_id.clone();
        async move {
            let texts = assistant_texts(&api, &chat_id).await;
            (!texts.is_empty()).then_some(texts)
        }
    })
    .await;
    assert_eq!(texts.len(), 1);
    // Every connection of the cluster is encrypted.
    let sql = cluster.sql().await;
    let plain_connections: i64 = sql
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = 'chatd_tls' AND a.client_addr IS NOT NULL AND NOT s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain_connections, 0);
    drop(cluster);
    server.stop().await.expect("stop");
}
