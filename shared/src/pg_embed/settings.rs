//! Port choice and the settings file of the embedded PostgreSQL launcher.

use super::*;

impl EmbeddedPostgres {
    /// The port to listen on: the requested one, else the remembered one if still free, else a
    /// free one, which is remembered.
    pub(super) fn choose_port(
        &self,
        requested: u16,
        avoid_remembered: bool,
    ) -> Result<u16, EmbeddedError> {
        if requested != 0 {
            return Ok(requested);
        }
        let port_path = self.data_dir.join(PORT_FILE);
        let remembered = std::fs::read_to_string(&port_path)
            .ok()
            .and_then(|text| text.trim().parse::<u16>().ok());
        if let Some(port) = remembered.filter(|_| !avoid_remembered) {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(io_error("pick a free port on", Path::new("127.0.0.1")))?;
        let port = listener
            .local_addr()
            .map_err(io_error("pick a free port on", Path::new("127.0.0.1")))?
            .port();
        self.write_owned_file(&port_path, &format!("{port}\n"))?;
        Ok(port)
    }

    /// Writes `chatd.conf`: defaults, then the caller's settings, then what the launcher owns.
    pub(super) fn write_settings(
        &self,
        settings: &[(String, String)],
    ) -> Result<(), EmbeddedError> {
        let mut lines = vec![
            "# Written by chatd on every start of the embedded server: edits are overwritten."
                .to_owned(),
            "max_connections = '400'".to_owned(),
        ];
        if self.has_pg_stat_statements() {
            lines.push("shared_preload_libraries = 'pg_stat_statements'".to_owned());
        } else {
            tracing::warn!(
                "pg_stat_statements is not installed (postgresql-contrib); no query statistics"
            );
        }
        for (name, value) in settings {
            lines.push(format!("{name} = {}", quote_literal(value)));
        }
        lines.push("listen_addresses = '127.0.0.1'".to_owned());
        lines.push(format!("port = '{}'", self.port));
        let socket_dir = self.data_dir.to_string_lossy();
        if socket_dir.len() <= MAX_SOCKET_DIR_LEN {
            lines.push(format!(
                "unix_socket_directories = {}",
                quote_literal(&socket_dir)
            ));
        } else {
            // Too long for a socket path; TCP is all the launcher uses anyway.
            lines.push("unix_socket_directories = ''".to_owned());
        }
        lines.push(String::new());
        self.write_owned_file(&self.data_dir.join(SETTINGS_FILE), &lines.join("\n"))?;
        // Include the file once, at the end so it wins over initdb's settings.
        let config_path = self.data_dir.join("postgresql.conf");
        let config =
            std::fs::read_to_string(&config_path).map_err(io_error("read", &config_path))?;
        if !config.lines().any(|line| line.trim() == INCLUDE_LINE) {
            std::fs::write(
                &config_path,
                format!("{config}\n# Settings of the chatd embedded launcher.\n{INCLUDE_LINE}\n"),
            )
            .map_err(io_error("write", &config_path))?;
        }
        Ok(())
    }

    pub(super) fn has_pg_stat_statements(&self) -> bool {
        let Ok(output) = std::process::Command::new(self.bindir.join("pg_config"))
            .arg("--pkglibdir")
            .output()
        else {
            return true; // can't tell: let the server decide
        };
        let pkglibdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        !output.status.success() || pkglibdir.join("pg_stat_statements.so").exists()
    }
}
