//! `shoal new --lang LANG NAME`: a processor project in a new directory that builds with
//! one command (`bash build.sh`) and runs at once on a local stream (`shoal run --config
//! shoal.toml`). Everything it needs comes with it: shoal's WIT, and for Rust a copy of the
//! guest SDK, so the project lives anywhere.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The languages `shoal new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the shoal SDK (cargo, target wasm32-wasip2).
    Rust,
    /// Python, with componentize-py.
    Python,
    /// JavaScript, with componentize-qjs (QuickJS).
    Javascript,
    /// C, with clang and wasi-libc (Debian packages) and jco.
    C,
    /// Go (1.24+, GOOS=wasip1) with hand-written component glue, and jco.
    Go,
}

impl Lang {
    fn label(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Javascript => "JavaScript",
            Lang::C => "C",
            Lang::Go => "Go",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Lang::Rust => "src/lib.rs",
            Lang::Python => "app.py",
            Lang::Javascript => "app.js",
            Lang::C => "app.c",
            Lang::Go => "main.go",
        }
    }
}

/// shoal's WIT package, as every project carries it.
const WIT: [(&str, &str); 9] = [
    ("processor.wit", include_str!("../../../wit/processor.wit")),
    (
        "http-processor.wit",
        include_str!("../../../wit/http-processor.wit"),
    ),
    (
        "deps/wasi-cli.wit",
        include_str!("../../../wit/deps/wasi-cli.wit"),
    ),
    (
        "deps/wasi-clocks.wit",
        include_str!("../../../wit/deps/wasi-clocks.wit"),
    ),
    (
        "deps/wasi-filesystem.wit",
        include_str!("../../../wit/deps/wasi-filesystem.wit"),
    ),
    (
        "deps/wasi-http.wit",
        include_str!("../../../wit/deps/wasi-http.wit"),
    ),
    (
        "deps/wasi-io.wit",
        include_str!("../../../wit/deps/wasi-io.wit"),
    ),
    (
        "deps/wasi-random.wit",
        include_str!("../../../wit/deps/wasi-random.wit"),
    ),
    (
        "deps/wasi-sockets.wit",
        include_str!("../../../wit/deps/wasi-sockets.wit"),
    ),
];

/// One file of a project: where, what (text before `{{…}}` substitution, or bytes as
/// they are), and whether it runs.
struct Template {
    path: String,
    contents: Contents,
    executable: bool,
}

enum Contents {
    Text(&'static str),
    Bytes(&'static [u8]),
}

fn file(path: &str, text: &'static str) -> Template {
    Template {
        path: path.to_string(),
        contents: Contents::Text(text),
        executable: path.ends_with(".sh"),
    }
}

fn binary(path: &str, bytes: &'static [u8]) -> Template {
    Template {
        path: path.to_string(),
        contents: Contents::Bytes(bytes),
        executable: false,
    }
}

/// The world's type as a wasm object, made by `wit-bindgen c` (0.61.1) from `wit/`: linked
/// into a C module, or added to a Go one, it tells `jco new` which world it implements.
const COMPONENT_TYPE: &[u8] =
    include_bytes!("../../../examples/processors/c/gen/processor_component_type.o");

fn templates(lang: Lang) -> Vec<Template> {
    let mut files = vec![
        file(
            "shoal.toml",
            include_str!("../../templates/common/shoal.toml"),
        ),
        file(
            "README.md",
            include_str!("../../templates/common/README.md"),
        ),
        file(
            "data/stream/shardId-000000000000.jsonl",
            include_str!("../../templates/common/shard0.jsonl"),
        ),
        file(".gitignore", "build/\ntarget/\nnode_modules/\nstate/\n"),
    ];
    let wit_under = |dir: &str| -> Vec<Template> {
        WIT.iter()
            .map(|(path, text)| file(&format!("{dir}{path}"), text))
            .collect()
    };
    match lang {
        Lang::Rust => {
            files.push(file(
                "Cargo.toml",
                include_str!("../../templates/rust/Cargo.toml"),
            ));
            files.push(file(
                "src/lib.rs",
                include_str!("../../templates/rust/src/lib.rs"),
            ));
            files.push(file(
                "build.sh",
                include_str!("../../templates/rust/build.sh"),
            ));
            files.push(file(
                "shoal-sdk/Cargo.toml",
                include_str!("../../../plugins/sdk/Cargo.toml"),
            ));
            files.push(file(
                "shoal-sdk/src/lib.rs",
                include_str!("../../../plugins/sdk/src/lib.rs"),
            ));
            files.push(file(
                "shoal-sdk/src/http.rs",
                include_str!("../../../plugins/sdk/src/http.rs"),
            ));
            files.push(file(
                "shoal-sdk/LICENSE",
                include_str!("../../../plugins/sdk/LICENSE"),
            ));
            files.extend(wit_under("shoal-sdk/wit/"));
        }
        Lang::Python => {
            files.push(file(
                "app.py",
                include_str!("../../templates/python/app.py"),
            ));
            files.push(file(
                "build.sh",
                include_str!("../../templates/python/build.sh"),
            ));
            files.push(file(
                "rename_export.py",
                include_str!("../../../examples/processors/python/rename_export.py"),
            ));
            files.extend(wit_under("wit/"));
        }
        Lang::Javascript => {
            files.push(file(
                "app.js",
                include_str!("../../templates/javascript/app.js"),
            ));
            files.push(file(
                "package.json",
                include_str!("../../templates/javascript/package.json"),
            ));
            files.push(file(
                "package-lock.json",
                include_str!("../../../examples/processors/javascript/package-lock.json"),
            ));
            files.push(file(
                "build.sh",
                include_str!("../../templates/javascript/build.sh"),
            ));
            files.extend(wit_under("wit/"));
        }
        Lang::C => {
            files.push(file("app.c", include_str!("../../templates/c/app.c")));
            files.push(file("build.sh", include_str!("../../templates/c/build.sh")));
            files.push(file(
                "gen/processor.h",
                include_str!("../../../examples/processors/c/gen/processor.h"),
            ));
            files.push(file(
                "gen/processor.c",
                include_str!("../../../examples/processors/c/gen/processor.c"),
            ));
            files.push(binary("gen/processor_component_type.o", COMPONENT_TYPE));
            files.extend(wit_under("wit/"));
        }
        Lang::Go => {
            files.push(file("main.go", include_str!("../../templates/go/main.go")));
            files.push(file("go.mod", include_str!("../../templates/go/go.mod")));
            files.push(file(
                "build.sh",
                include_str!("../../templates/go/build.sh"),
            ));
            files.push(file(
                "abi.go",
                include_str!("../../../examples/processors/go/abi.go"),
            ));
            files.push(file(
                "adapter_arena.go",
                include_str!("../../../examples/processors/go/adapter_arena.go"),
            ));
            files.push(file(
                "prepare_core.py",
                include_str!("../../../examples/processors/go/prepare_core.py"),
            ));
            files.push(binary("processor_component_type.o", COMPONENT_TYPE));
            files.extend(wit_under("wit/"));
        }
    }
    files
}

/// A project name: lowercase letters, digits, `-` and `_`, starting with a letter (a
/// valid crate and npm package name, and a file name).
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    anyhow::ensure!(
        valid,
        "{name:?} cannot name a project: use lowercase letters, digits, '-' and '_', starting with a letter"
    );
    Ok(())
}

/// Fill a template's `{{…}}` placeholders.
fn fill(text: &str, lang: Lang, name: &str) -> String {
    text.replace("{{name}}", name)
        .replace("{{name_snake}}", &name.replace('-', "_"))
        .replace("{{language}}", lang.label())
        .replace("{{source}}", lang.source())
        // The JavaScript lock file carries the example's package name.
        .replace("\"shoal-processor-javascript\"", &format!("\"{name}\""))
}

/// Write project `name` in `lang` into `parent/name` (which must not exist); its path.
pub fn create(lang: Lang, name: &str, parent: &Path) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let root = parent.join(name);
    anyhow::ensure!(
        !root.exists(),
        "{} exists already: choose another name or directory",
        root.display()
    );
    for template in templates(lang) {
        let path = root.join(&template.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let written = match template.contents {
            Contents::Text(text) => std::fs::write(&path, fill(text, lang, name)),
            Contents::Bytes(bytes) => std::fs::write(&path, bytes),
        };
        written.with_context(|| format!("cannot write {}", path.display()))?;
        if template.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_suit_cargo_npm_and_the_file_system() {
        for good in ["orders", "orders-sink", "a1_b"] {
            check_name(good).expect(good);
        }
        for bad in ["", "Orders", "1st", "a b", "../x", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_project_is_written_with_its_name_filled_in_and_never_over_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = create(Lang::Rust, "orders-sink", dir.path()).expect("created");
        let cargo = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
        assert!(cargo.contains("name = \"orders-sink\""), "{cargo}");
        let build = std::fs::read_to_string(root.join("build.sh")).expect("build.sh");
        assert!(build.contains("release/orders_sink.wasm"), "{build}");
        assert!(!build.contains("{{"), "{build}");
        assert_eq!(
            std::fs::read_to_string(root.join("shoal-sdk/wit/processor.wit")).expect("wit"),
            include_str!("../../../wit/processor.wit")
        );
        let err = create(Lang::Python, "orders-sink", dir.path()).expect_err("exists");
        assert!(err.to_string().contains("exists already"), "{err}");
    }
}
