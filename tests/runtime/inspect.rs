//! `shoal plugin inspect` and load rejections explain a component that does not fit the
//! world in plain words.

use std::process::Command;

use crate::fixtures::*;

/// `shoal plugin inspect` on a built guest plugin of `plugins/`.
fn inspect(name: &str) -> (bool, String) {
    inspect_file(&plugin_path(name))
}

#[test]
fn a_fitting_component_is_listed_and_accepted() {
    let (ok, text) = inspect("json_count");
    assert!(ok, "{text}");
    assert!(
        text.contains("✓ process (function): required by the world"),
        "{text}"
    );
    assert!(text.contains("✓ log (function)"), "{text}");
    assert!(text.contains("fits: shoal can run it"), "{text}");
}

#[test]
fn a_component_that_reads_its_lease_token_fits() {
    // The redis sink calls `lease-token` for its fence.
    let (ok, text) = inspect("redis_sink");
    assert!(ok, "{text}");
    assert!(text.contains("✓ lease-token (function)"), "{text}");
    assert!(text.contains("fits: shoal can run it"), "{text}");
}

#[test]
fn a_component_of_another_world_version_is_explained() {
    let (ok, text) = inspect("wrong_world");
    assert!(!ok, "{text}");
    assert!(text.contains("✗ shoal:processor/metrics@0.0.9"), "{text}");
    assert!(
        text.contains(
            "from shoal:processor@0.0.9, but this shoal implements shoal:processor@0.1.0"
        ),
        "{text}"
    );
    assert!(text.contains("it does not export `shutdown`"), "{text}");
}

#[test]
fn loading_a_misfit_names_every_problem_in_plain_words() {
    let engine = engine();
    let err = engine
        .load_file(&plugin_path("wrong_world"), 1)
        .expect_err("rejected");
    let message = err.to_string();
    assert!(
        message.contains("rebuild against this release's wit/processor.wit"),
        "{message}"
    );
    assert!(message.contains("does not export `shutdown`"), "{message}");
}

/// `shoal plugin inspect` on any file.
fn inspect_file(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["plugin", "inspect"])
        .arg(path)
        .env(
            "SHOAL_CACHE_DIR",
            repo_root().join("target/shoal-test-cache"),
        )
        .output()
        .expect("run shoal plugin inspect");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn run(what: &str, command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// A deliberately wrong component from each toolchain, built with the toolchain the
// language's build.sh installed.

#[test]
fn python_built_against_a_world_without_shutdown_is_explained() {
    crate::conformance::build("python");
    let dir = tempfile::tempdir().expect("tempdir");
    let wit = std::fs::read_to_string(repo_root().join("wit/processor.wit")).expect("wit");
    std::fs::create_dir(dir.path().join("wit")).expect("mkdir");
    let without: String = wit
        .lines()
        .filter(|l| !l.contains("export shutdown"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("wit/processor.wit"), without).expect("write wit");
    let out = dir.path().join("wrong.wasm");
    run(
        "componentize-py",
        Command::new(repo_root().join("target/toolchains/python/bin/componentize-py"))
            .env_remove("VIRTUAL_ENV")
            .arg("--quiet")
            .arg("-d")
            .arg(dir.path().join("wit"))
            .args(["-w", "processor", "componentize", "app", "-p"])
            .arg(repo_root().join("examples/processors/python"))
            .arg("-o")
            .arg(&out),
    );
    let (ok, text) = inspect_file(&out);
    assert!(!ok, "{text}");
    assert!(text.contains("it does not export `shutdown`"), "{text}");
}

#[test]
fn javascript_built_with_the_async_abi_is_explained() {
    crate::conformance::build("javascript");
    let js = repo_root().join("examples/processors/javascript");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("wrong.wasm");
    // Without `--sync`, componentize-qjs emits component-model async intrinsics.
    run(
        "componentize-qjs",
        Command::new(js.join("node_modules/.bin/componentize-qjs"))
            .arg("--wit")
            .arg(js.join("wit"))
            .args(["--world", "filter", "--js"])
            .arg(js.join("app.js"))
            .arg("--output")
            .arg(&out),
    );
    let (ok, text) = inspect_file(&out);
    assert!(!ok, "{text}");
    assert!(
        text.contains("component-model async ABI") && text.contains("--sync"),
        "{text}"
    );
}

#[test]
fn c_built_as_a_command_is_explained() {
    crate::conformance::build("c");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("hello.c"),
        "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n",
    )
    .expect("write");
    let core = dir.path().join("hello.core.wasm");
    let out = dir.path().join("wrong.wasm");
    run(
        "clang-19",
        Command::new("clang-19")
            .args(["--target=wasm32-wasi", "-O2"])
            .arg(dir.path().join("hello.c"))
            .arg("-o")
            .arg(&core),
    );
    run(
        "jco new --wasi-command",
        Command::new(repo_root().join("target/toolchains/c/node_modules/.bin/jco"))
            .arg("new")
            .arg(&core)
            .arg("--wasi-command")
            .arg("-o")
            .arg(&out),
    );
    let (ok, text) = inspect_file(&out);
    assert!(!ok, "{text}");
    assert!(text.contains("it is a WASI *command*"), "{text}");
    assert!(
        text.contains("it does not export `initialize`, `process`, `shutdown`"),
        "{text}"
    );
}
