//! `shoal new --lang L NAME` writes a project that builds with its one command, outside
//! this repository, into a component shoal accepts and runs; and the Rust SDK carries the
//! same WIT as the host.

use std::path::Path;
use std::process::Command;

use crate::fixtures::repo_root;

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .expect("under")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_sdk_carries_exactly_the_hosts_wit() {
    let host = repo_root().join("wit");
    let sdk = repo_root().join("plugins/sdk/wit");
    let files = files_under(&host);
    assert_eq!(files, files_under(&sdk), "the same files");
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        assert_eq!(
            std::fs::read(host.join(&file)).expect("host wit"),
            std::fs::read(sdk.join(&file)).expect("sdk wit"),
            "plugins/sdk/wit/{file} differs from wit/{file}: copy wit/ into plugins/sdk/wit/"
        );
    }
}

fn shoal(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run shoal");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Create, build with the project's own command, check, and replay its sample records.
fn new_project_builds_and_runs(lang: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("demo-{lang}");
    let (ok, out) = shoal(&["new", "--lang", lang, &name], dir.path());
    assert!(ok, "{out}");
    let project = dir.path().join(&name);
    let built = {
        let _one_at_a_time = crate::conformance::build_lock();
        Command::new("bash")
            .arg(project.join("build.sh"))
            // Reuse the toolchains the example builds installed, and (Rust) one target
            // directory across runs; the project itself lives outside the repository.
            .env("SHOAL_TOOLCHAINS", repo_root().join("target/toolchains"))
            .env("CARGO_TARGET_DIR", repo_root().join("target/new-project"))
            .output()
            .expect("run build.sh")
    };
    assert!(
        built.status.success(),
        "{lang}: build.sh failed\n{}\n{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = format!("build/{name}.wasm");
    let (ok, out) = shoal(&["plugin", "check", &wasm], &project);
    assert!(ok && out.starts_with("ok: "), "{lang}: {out}");
    let (ok, out) = shoal(
        &[
            "replay",
            "--plugin",
            &wasm,
            "--input",
            "data/stream/shardId-000000000000.jsonl",
        ],
        &project,
    );
    assert!(ok, "{lang}: {out}");
    assert!(
        out.contains("replayed 3 records") && out.contains("0 poisoned"),
        "{lang}: {out}"
    );
}

#[test]
fn a_new_rust_project_builds_outside_the_repository_and_runs() {
    new_project_builds_and_runs("rust");
}

#[test]
fn a_new_python_project_builds_outside_the_repository_and_runs() {
    new_project_builds_and_runs("python");
}

#[test]
fn a_new_javascript_project_builds_outside_the_repository_and_runs() {
    new_project_builds_and_runs("javascript");
}

#[test]
fn a_new_c_project_builds_outside_the_repository_and_runs() {
    new_project_builds_and_runs("c");
}

#[test]
fn a_new_go_project_builds_outside_the_repository_and_runs() {
    new_project_builds_and_runs("go");
}
