//! `shoal plugin inspect` and load rejections explain a component that does not fit the
//! world in plain words.

use std::process::Command;

use crate::fixtures::*;

fn inspect(name: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["plugin", "inspect"])
        .arg(plugin_path(name))
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
