//! `shoal replay` end to end: the real binary over misbehave prints classified traps and
//! keeps going; an archived file replays as is.

use std::path::Path;
use std::process::{Command, Output};

use crate::fixtures::*;

fn shoal() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.env(
        "SHOAL_CACHE_DIR",
        repo_root().join("target/shoal-test-cache"),
    );
    cmd
}

/// `shoal replay --plugin <plugin> --input <input> --config <config>`, plus `extra` flags.
fn replay(plugin: &str, input: &Path, config: &Path, extra: &[&str]) -> Output {
    shoal()
        .arg("replay")
        .args(extra)
        .arg("--plugin")
        .arg(plugin_path(plugin))
        .arg("--input")
        .arg(input)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run shoal")
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

    let out = replay("misbehave", &input, &config, &["--batch-size", "1"]);
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
        let out = replay("archive", input, &dir.path().join(config), &[]);
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

/// A SIGKILL or a trap mid-write leaves part of a line at the end of an archive file. The
/// `archive` processor cuts it off when it opens the file, so the re-delivered batch starts
/// on a line boundary and every line stays a whole record.
#[test]
fn the_archive_processor_repairs_a_torn_tail_before_appending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let config = dir.path().join("archive.toml");
    std::fs::write(
        &config,
        "[plugin]\npath = \"x.wasm\"\n[plugin.settings]\ndir = \"/out\"\n[plugin.sandbox]\ndirs = [{ host = \"out\", guest = \"/out\", mode = \"read-write\" }]\n",
    )
    .expect("config");
    // Shard 0: two whole lines, then a torn one longer than the repair's 64 KiB read
    // chunk. Shard 1: only a fragment, no newline at all. Shard 2: whole lines only.
    let whole = |n: usize| {
        format!("{{\"shard_id\":\"s\",\"sequence_number\":\"{n}\",\"data_base64\":\"\"}}\n")
    };
    let kept0 = format!("{}{}", whole(1), whole(2));
    let torn0 = format!(
        "{{\"shard_id\":\"s\",\"data_base64\":\"{}",
        "QUFB".repeat(40_000)
    );
    let kept2 = whole(7);
    let file = |s: usize| out.join(format!("shardId-00000000000{s}.jsonl"));
    std::fs::write(file(0), format!("{kept0}{torn0}")).expect("seed 0");
    std::fs::write(file(1), "{\"shard_id\":\"s\",\"seq").expect("seed 1");
    std::fs::write(file(2), &kept2).expect("seed 2");

    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = (0..9)
        .map(|i| format!("{{\"shard_id\":\"shardId-00000000000{}\",\"partition_key\":\"k{i}\",\"data\":\"record {i}\"}}", i % 3))
        .collect();
    std::fs::write(&input, lines.join("\n")).expect("input");
    let run = replay("archive", &input, &config, &[]);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "cut a torn last line ({} bytes after offset {})",
            torn0.len(),
            kept0.len()
        )),
        "the repair of shard 0 is logged with what it cut:\n{log}"
    );
    assert!(
        log.contains("cut a torn last line (20 bytes after offset 0)"),
        "the repair of shard 1 is logged:\n{log}"
    );
    assert_eq!(
        log.matches("cut a torn last line").count(),
        2,
        "a file that ends on a line boundary is not touched:\n{log}"
    );

    for (s, kept) in [(0, kept0.as_str()), (1, ""), (2, kept2.as_str())] {
        let text = std::fs::read_to_string(file(s)).expect("archive");
        assert!(
            text.starts_with(kept),
            "shard {s}: the whole lines are kept:\n{text}"
        );
        assert!(text.ends_with('\n'), "shard {s}");
        let appended: Vec<String> = text[kept.len()..]
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("shard {s}: line is not JSON ({e}): {l:?}"));
                v["partition_key"].as_str().expect("key").to_string()
            })
            .collect();
        let expected: Vec<String> = (0..9)
            .filter(|i| i % 3 == s)
            .map(|i| format!("k{i}"))
            .collect();
        assert_eq!(
            appended, expected,
            "shard {s}: the new batch follows the last whole line"
        );
    }
}
