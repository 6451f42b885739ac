//! Where the benchmarks find the repository and the guest plugins they run.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Build the guest plugins (`plugins/`, release, wasm32-wasip2) and return the path of
/// `<name>.wasm`; panics with the reason when the build fails or the file is missing.
pub fn guest_plugin(name: &str) -> PathBuf {
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(repo_root().join("plugins/Cargo.toml"))
        .status()
        .expect("run cargo for the plugins");
    assert!(status.success(), "building the guest plugins failed");
    let path = repo_root().join(format!("plugins/target/wasm32-wasip2/release/{name}.wasm"));
    assert!(path.is_file(), "missing {}", path.display());
    path
}
