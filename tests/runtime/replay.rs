//! `shoal replay` end to end: the real binary over misbehave prints classified traps and
//! keeps going; an archived file replays as is.

use std::process::Command;

use crate::fixtures::*;

fn shoal() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.env(
        "SHOAL_CACHE_DIR",
        repo_root().join("target/shoal-test-cache"),
    );
    cmd
}

#[test]
fn replay_prints_classified_traps_and_keeps_going() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("replay.toml");
    std::fs::write(
        &config,
        "[plugin]\npath = \"ignored.wasm\"\n[plugin.limits]\nmemory = \"32MiB\"\ndeadline = \"300ms\"\n[plugin.failure]\nmax_attempts = 2\nbackoff_initial = \"1ms\"\nbackoff_max = \"5ms\"\n",
    )
    .expect("config");
    let input = dir.path().join("in.jsonl");
    let markers = [
        "ok",
        "misbehave:panic",
        "misbehave:loop",
        "misbehave:oom",
        "misbehave:stack",
        "misbehave:oob",
        "misbehave:retry",
        "misbehave:fatal",
        "ok again",
    ];
    let lines: Vec<String> = markers
        .iter()
        .map(|m| format!("{{\"partition_key\":\"k\",\"data\":\"{m}\"}}"))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\nnot json\n").expect("input");

    let out = shoal()
        .args(["replay", "--batch-size", "1", "--plugin"])
        .arg(plugin_path("misbehave"))
        .arg("--input")
        .arg(&input)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run shoal");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad input line makes the exit code 2\n{stdout}"
    );
    for expected in [
        "trap panic",
        "trap deadline-exceeded",
        "trap memory-cap-exceeded",
        "trap stack-overflow",
        "trap out-of-bounds",
        "guest error retry",
        "guest error fatal",
        "in.jsonl:10: skipped bad input line",
        "replayed 9 records in 9 batches",
        "2 processed, 0 dead-lettered, 7 poisoned",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let last_batch = stdout
        .lines()
        .find(|l| l.starts_with("batch 8 "))
        .expect("last batch line");
    assert!(last_batch.contains(": ok batch-end"), "{last_batch}");
}

#[test]
fn an_archived_file_replays_as_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["a", "b"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        std::fs::write(
            dir.path().join(format!("{sub}.toml")),
            format!("[plugin]\npath = \"x.wasm\"\n[plugin.settings]\ndir = \"/out\"\n[plugin.sandbox]\ndirs = [{{ host = \"{sub}\", guest = \"/out\", mode = \"read-write\" }}]\n"),
        )
        .expect("config");
    }
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = (0..250)
        .map(|i| format!("{{\"shard_id\":\"shardId-00000000000{}\",\"partition_key\":\"k{i}\",\"data\":\"record {i}\"}}", i % 2))
        .collect();
    std::fs::write(&input, lines.join("\n")).expect("input");
    let run = |config: &str, input: &std::path::Path| {
        let out = shoal()
            .args(["replay", "--plugin"])
            .arg(plugin_path("archive"))
            .arg("--input")
            .arg(input)
            .arg("--config")
            .arg(dir.path().join(config))
            .output()
            .expect("run shoal");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    run("a.toml", &input);
    let first =
        std::fs::read_to_string(dir.path().join("a/shardId-000000000000.jsonl")).expect("archived");
    assert_eq!(first.lines().count(), 125);
    run("b.toml", &dir.path().join("a/shardId-000000000000.jsonl"));
    let second = std::fs::read_to_string(dir.path().join("b/shardId-000000000000.jsonl"))
        .expect("re-archived");
    assert_eq!(
        first, second,
        "an archived file replays to the same archive"
    );
}
