//! Operating-system and file helpers of the embedded PostgreSQL launcher: the unprivileged
//! server user, ownership, postmaster.pid handling, quoting and settings validation.

use super::*;

pub(super) fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|binary| dir.join(binary).is_file())
}

pub(super) fn validate_settings(options: &EmbeddedOptions) -> Result<(), EmbeddedError> {
    let is_identifier = |text: &str| {
        !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    };
    if !is_identifier(&options.superuser) {
        return Err(EmbeddedError::InvalidSetting {
            name: options.superuser.clone(),
            reason: "the superuser name must be letters, digits and underscores",
        });
    }
    for (name, _) in &options.settings {
        if !is_identifier(name) {
            return Err(EmbeddedError::InvalidSetting {
                name: name.clone(),
                reason: "not a setting name",
            });
        }
        if MANAGED_SETTINGS.contains(&name.as_str()) {
            return Err(EmbeddedError::InvalidSetting {
                name: name.clone(),
                reason: "set by the embedded launcher (use EmbeddedOptions::port)",
            });
        }
    }
    Ok(())
}

/// The OS user to run PostgreSQL as: `None` unless this process is root.
pub(super) async fn server_user() -> Result<Option<ServerUser>, EmbeddedError> {
    if id_of(&["-u"]).await != Some(0) {
        return Ok(None);
    }
    for name in SERVER_USERS {
        if let Some(user) = lookup_user(name).await {
            return Ok(Some(user));
        }
    }
    let name = SERVER_USERS[SERVER_USERS.len() - 1];
    tracing::info!(user = name, "creating a system user to run PostgreSQL as");
    let output = tokio::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .await
        .map_err(|error| EmbeddedError::NoServerUser(format!("run useradd: {error}")))?;
    // A concurrent useradd may have won; look the user up either way.
    match lookup_user(name).await {
        Some(user) => Ok(Some(user)),
        None => Err(EmbeddedError::NoServerUser(format!(
            "neither {SERVER_USERS:?} exists and `useradd {name}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

pub(super) async fn lookup_user(name: &str) -> Option<ServerUser> {
    Some(ServerUser {
        name: name.to_owned(),
        uid: id_of(&["-u", name]).await?,
        gid: id_of(&["-g", name]).await?,
    })
}

/// Runs `id ARGS` and parses the number it prints.
pub(super) async fn id_of(args: &[&str]) -> Option<u32> {
    let output = tokio::process::Command::new("id")
        .args(args)
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

pub(super) fn chown_recursive(path: &Path, user: &ServerUser) -> Result<(), EmbeddedError> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
        .map_err(io_error("change the owner of", path))?;
    let metadata = std::fs::symlink_metadata(path).map_err(io_error("inspect", path))?;
    if metadata.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io_error("read", path))? {
            let entry = entry.map_err(io_error("read", path))?;
            chown_recursive(&entry.path(), user)?;
        }
    }
    Ok(())
}

/// Line 1 of `postmaster.pid` is the pid, line 4 the port.
pub(super) fn parse_postmaster_pid(contents: &str) -> Option<PostmasterPid> {
    let mut lines = contents.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let port = lines.nth(2).and_then(|line| line.trim().parse().ok());
    Some(PostmasterPid { pid, port })
}

/// Whether `pid` is a live postmaster serving `data_dir`. A pid can be reused by an unrelated
/// process after a crash (typical in containers), so liveness alone is not enough: the
/// postmaster's working directory is its data directory.
pub(super) fn is_postmaster_of(pid: u32, data_dir: &Path) -> bool {
    if !Path::new("/proc/self").exists() {
        return true; // no procfs: assume alive and let PostgreSQL sort it out
    }
    let process = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = std::fs::read_to_string(process.join("stat")) else {
        return false;
    };
    // The state follows the parenthesised command name; a zombie has already exited.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    if matches!(state, Some('Z' | 'X')) {
        return false;
    }
    match std::fs::read_link(process.join("cwd")) {
        Ok(cwd) => std::fs::canonicalize(data_dir).is_ok_and(|data_dir| data_dir == cwd),
        Err(_) => std::fs::read_to_string(process.join("comm"))
            .is_ok_and(|comm| comm.trim().starts_with("postgres")),
    }
}

/// Quotes an SQL identifier (database names come from code, but quote them anyway).
pub(super) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a `postgresql.conf` value.
pub(super) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(super) fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> EmbeddedError + 'a {
    move |error| EmbeddedError::Io {
        action,
        path: path.to_path_buf(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postmaster_pid() {
        let contents = "4242\n/data\n1700000000\n54321\n/data\n127.0.0.1\n  1234 5678\nready   \n";
        let parsed = parse_postmaster_pid(contents).expect("parse a complete file");
        assert_eq!((parsed.pid, parsed.port), (4242, Some(54321)));
        let partial = parse_postmaster_pid("4242\n/data\n").expect("parse a partial file");
        assert_eq!((partial.pid, partial.port), (4242, None));
        assert!(parse_postmaster_pid("").is_none());
    }

    #[test]
    fn quotes_values_and_identifiers() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"C:\x"), r"'C:\\x'");
        assert_eq!(quote_identifier(r#"a"b"#), r#""a""b""#);
    }

    #[test]
    fn rejects_settings_the_launcher_owns() {
        let mut options = EmbeddedOptions::new("/tmp/unused");
        options
            .settings
            .push(("port".to_owned(), "5432".to_owned()));
        assert!(matches!(
            validate_settings(&options),
            Err(EmbeddedError::InvalidSetting { .. })
        ));
        options.settings = vec![("fsync".to_owned(), "off".to_owned())];
        assert!(validate_settings(&options).is_ok());
        options.superuser = "bad name".to_owned();
        assert!(validate_settings(&options).is_err());
    }
}
