//! Clients nobody here wrote, from their registries, for the protocol tests: the official
//! `openai` packages (PyPI and npm) and the Vercel AI SDK (`ai`, npm). Each is installed once
//! per target directory, into a staging directory renamed into place, so concurrent test
//! processes never see half an install.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned versions.
pub const OPENAI_PYTHON: &str = "3.57.0";
pub const OPENAI_NODE: &str = "7.59.0";
pub const AI_SDK: &str = "7.0.173";

fn target() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// Installs into `home` with `install(staging)` unless `ready` exists there; returns `home`.
fn install_once(home: &Path, ready: &str, install: impl FnOnce(&Path)) -> PathBuf {
    if home.join(ready).exists() {
        return home.to_path_buf();
    }
    let staging = target().join(format!(
        "{}-staging-{}",
        home.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("staging dir");
    install(&staging);
    if std::fs::rename(&staging, home).is_err() {
        // Another test process installed it first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        home.join(ready).exists(),
        "{ready} missing in {} after the install",
        home.display()
    );
    home.to_path_buf()
}

/// A Python with `openai` installed (a venv): its interpreter.
pub fn openai_python() -> PathBuf {
    let home = target().join(format!("openai-python-{OPENAI_PYTHON}"));
    install_once(&home, "bin/python", |staging| {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(staging)
            .status()
            .expect("run python3 (3.11 with venv is needed for the SDK tests)");
        assert!(
            status.success(),
            "python3 -m venv failed (Debian: apt-get install python3-venv)"
        );
        let status = Command::new(staging.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("openai=={OPENAI_PYTHON}"))
            .status()
            .expect("run pip");
        assert!(
            status.success(),
            "pip install openai=={OPENAI_PYTHON} failed"
        );
    });
    // The interpreter finds the venv from where it is called (its `pyvenv.cfg`), so the
    // renamed venv works; only its scripts' shebangs name the staging path, and none is used.
    home.join("bin/python")
}

/// `node_modules` with the npm packages `specs` (e.g. `openai@7.59.0`) installed.
pub fn npm_packages(name: &str, specs: &[&str]) -> PathBuf {
    let home = target().join(name);
    install_once(&home, "node_modules/.package-lock.json", |staging| {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(staging)
            .args(specs)
            .status()
            .expect("run npm (Node 20 is needed for the SDK tests)");
        assert!(status.success(), "npm install {specs:?} failed");
    });
    home.join("node_modules")
}
