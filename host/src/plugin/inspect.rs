//! Explains, in plain words, how a compiled component fits the `shoal:processor@0.1.0`
//! world: what it imports and exports, and for each mismatch what is wrong and how to fix
//! it with the usual toolchains. Used by `shoal plugin inspect` and in load rejections.

use wasmtime::Engine;

use crate::egress::EgressGrants;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// The world this host implements.
pub const WORLD: &str = "shoal:processor@0.1.0";

/// The functions the world requires a processor to export.
const REQUIRED_EXPORTS: [&str; 3] = ["initialize", "process", "shutdown"];

/// WASI 0.2 packages the host links (what a guest may reach is still deny-by-default).
const WASI_PROVIDED: [&str; 6] = ["cli", "io", "clocks", "filesystem", "random", "sockets"];

/// The outbound imports a component has no grant for, one plain sentence each (empty when
/// every outbound import it has can reach something). Interpreter guests import every
/// WASI interface whether they use it or not, so this is information, not a problem.
pub fn ungranted_outbound(imports: &[String], grants: &EgressGrants) -> Vec<String> {
    let imported = |wanted: &[&str]| {
        imports.iter().find(|name| {
            matches!(split_name(name), Some(("wasi", "sockets", interface, _)) if wanted.contains(&interface))
        })
    };
    let names_granted = grants
        .tcp
        .iter()
        .chain(&grants.udp)
        .any(|g| !g.host.is_address());
    let mut out = Vec::new();
    let http = imports.iter().find(|name| {
        matches!(
            split_name(name),
            Some(("wasi", "http", "outgoing-handler", _))
        )
    });
    if let (Some(name), true) = (http, grants.http.is_empty()) {
        out.push(format!(
            "it imports `{name}`, but [plugin.sandbox] grants no `http` destination: every HTTP request will be refused"
        ));
    }
    if let (Some(name), true) = (
        imported(&["tcp", "tcp-create-socket"]),
        grants.tcp.is_empty(),
    ) {
        out.push(format!(
            "it imports `{name}`, but [plugin.sandbox] grants no `tcp` destination: every TCP connect will be refused"
        ));
    }
    if let (Some(name), true) = (
        imported(&["udp", "udp-create-socket"]),
        grants.udp.is_empty(),
    ) {
        out.push(format!(
            "it imports `{name}`, but [plugin.sandbox] grants no `udp` destination: every UDP send will be refused"
        ));
    }
    if let (Some(name), false) = (imported(&["ip-name-lookup"]), names_granted) {
        out.push(format!(
            "it imports `{name}`, but no `tcp` or `udp` entry names a host: every name lookup will be refused"
        ));
    }
    out
}

/// One import or export, with what the host makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its name, e.g. `wasi:cli/environment@0.2.3` or `process`.
    pub name: String,
    /// `function`, `instance`, `type`, ...
    pub kind: &'static str,
    /// What it is for shoal, in a few words.
    pub note: String,
    /// Whether it stops the component from loading.
    pub problem: bool,
}

/// A compiler error, with what it means for a processor author in front when it is one
/// of the known toolchain mistakes.
pub fn explain_compile_error(reason: &str) -> String {
    if reason.contains("requires the component model async feature") {
        return format!(
            "it uses the component-model async ABI, which shoal does not enable: build it \
             synchronously (componentize-qjs: `--sync`; wit-bindgen: no `async` options) [{reason}]"
        );
    }
    reason.to_string()
}

/// A component's fit with the world.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// Every import.
    pub imports: Vec<Item>,
    /// Every export.
    pub exports: Vec<Item>,
    /// What is wrong, one plain sentence each (empty when the names fit; the linker's
    /// type check may still add one, see [`Inspection::with_link_error`]).
    pub problems: Vec<String>,
}

fn kind_of(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "function",
        ComponentItem::CoreFunc(_) => "core function",
        ComponentItem::Module(_) => "core module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

/// `wasi:http/types@0.2.0` → (`wasi`, `http`, `types`, `0.2.0`).
fn split_name(name: &str) -> Option<(&str, &str, &str, &str)> {
    let (namespace, rest) = name.split_once(':')?;
    let (package, rest) = rest.split_once('/')?;
    let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
    Some((namespace, package, interface, version))
}

/// Which grant a `wasi:sockets` interface needs to do anything.
fn sockets_note(interface: &str) -> &'static str {
    match interface {
        "tcp" | "tcp-create-socket" => {
            "WASI 0.2 TCP; connects only to `plugin.sandbox.tcp` destinations"
        }
        "udp" | "udp-create-socket" => {
            "WASI 0.2 UDP; sends only to `plugin.sandbox.udp` destinations"
        }
        "ip-name-lookup" => {
            "WASI 0.2 name lookup; only names a `plugin.sandbox` tcp or udp entry names"
        }
        _ => "WASI 0.2 sockets; denied unless granted in [plugin.sandbox]",
    }
}

fn import_note(name: &str, kind: &'static str) -> (String, Option<String>) {
    // The world's own imports.
    match name {
        "log" => return ("shoal's log function".into(), None),
        "lease-token" => {
            return (
                "shoal's lease token (the fencing token for sinks)".into(),
                None,
            );
        }
        _ => {}
    }
    match split_name(name) {
        Some(("wasi", "http", "outgoing-handler" | "types", version))
            if version.is_empty() || version.starts_with("0.2") =>
        {
            (
                "WASI 0.2 HTTP; requests only to `plugin.sandbox.http` destinations".into(),
                None,
            )
        }
        Some(("wasi", "http", _, _)) => (
            "not provided".into(),
            Some(format!(
                "it imports `{name}`: processors may send HTTP requests (`wasi:http/outgoing-handler` \
                 and `types`) but not serve them. JavaScript built with componentize-js imports the \
                 incoming handler unless built with `-d http fetch-event`"
            )),
        ),
        Some(("wasi", package, _, version))
            if version.starts_with("0.3") || version.starts_with("0.1") =>
        {
            (
                "not provided".into(),
                Some(format!(
                    "it imports `{name}` (WASI {version}); shoal provides WASI 0.2 (preview 2): build for \
                 wasm32-wasip2 / WASI 0.2{}",
                    if package == "cli" {
                        " (a preview 1 module needs the preview 1 *reactor* adapter)"
                    } else {
                        ""
                    }
                )),
            )
        }
        Some(("wasi", "sockets", interface, _)) => (sockets_note(interface).into(), None),
        Some(("wasi", package, _, _)) if WASI_PROVIDED.contains(&package) => (
            "WASI 0.2; denied unless granted in [plugin.sandbox]".into(),
            None,
        ),
        Some(("shoal", "processor", "types", version))
            if WORLD.ends_with(&format!("@{version}")) =>
        {
            ("the world's types".into(), None)
        }
        Some(("shoal", "processor", interface, version))
            if !WORLD.ends_with(&format!("@{version}")) =>
        {
            (
                "not provided".into(),
                Some(format!(
                    "it imports `{interface}` from shoal:processor@{version}, but this shoal implements \
                 {WORLD}: rebuild against this release's wit/processor.wit"
                )),
            )
        }
        _ => (
            "not provided".into(),
            Some(format!(
                "it imports {kind} `{name}`, which shoal does not provide; a processor may import only \
                 `log`, `lease-token` and WASI 0.2 interfaces"
            )),
        ),
    }
}

impl Inspection {
    /// Inspect a compiled component's names against the world.
    pub fn of(engine: &Engine, component: &Component) -> Self {
        let ty = component.component_type();
        let mut out = Inspection::default();
        for (name, item) in ty.imports(engine) {
            let kind = kind_of(&item.ty);
            let (note, problem) = import_note(name, kind);
            out.imports.push(Item {
                name: name.to_string(),
                kind,
                note,
                problem: problem.is_some(),
            });
            out.problems.extend(problem);
        }
        let mut found = Vec::new();
        for (name, item) in ty.exports(engine) {
            let kind = kind_of(&item.ty);
            let required = REQUIRED_EXPORTS.contains(&name);
            let problem = required && kind != "function";
            if problem {
                out.problems.push(format!(
                    "its export `{name}` is a {kind}, not a function: export the world `processor` \
                     itself (world-level functions), not an interface"
                ));
            }
            if required {
                found.push(name.to_string());
            }
            out.exports.push(Item {
                name: name.to_string(),
                kind,
                note: if required {
                    "required by the world".into()
                } else {
                    "not part of the world; ignored".into()
                },
                problem,
            });
        }
        if let Some(run) = out
            .exports
            .iter()
            .find(|e| e.name.starts_with("wasi:cli/run@"))
        {
            out.problems.push(format!(
                "it exports `{}`: it is a WASI *command* (a program with `main`), not a library: \
                 build a reactor instead (C: `-mexec-model=reactor` and `jco new --wasi-reactor`; \
                 Rust: `crate-type = [\"cdylib\"]`)",
                run.name
            ));
        }
        let missing: Vec<&str> = REQUIRED_EXPORTS
            .iter()
            .copied()
            .filter(|r| !found.iter().any(|f| f == r))
            .collect();
        if !missing.is_empty() {
            out.problems.push(format!(
                "it does not export {}: a processor exports `initialize`, `process` and `shutdown` \
                 (the world `processor` of {WORLD}; with componentize-py pass `-w processor`, with \
                 componentize-js `-n processor`)",
                missing
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out
    }

    /// Add the linker's verdict when the names fit but a type does not.
    pub fn with_link_error(mut self, error: &str) -> Self {
        if self.problems.is_empty() {
            self.problems.push(format!(
                "a function does not have the signature {WORLD} gives it (built against another \
                 version of wit/processor.wit?): {error}"
            ));
        }
        self
    }

    /// The problems as one message.
    pub fn summary(&self) -> String {
        self.problems.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_package_interface_and_version() {
        assert_eq!(
            split_name("wasi:http/types@0.2.0"),
            Some(("wasi", "http", "types", "0.2.0"))
        );
        assert_eq!(split_name("log"), None);
    }

    #[test]
    fn async_components_are_explained() {
        let text = explain_compile_error(
            "failed to parse: `task.cancel` requires the component model async feature",
        );
        assert!(text.contains("--sync"), "{text}");
        assert_eq!(explain_compile_error("other"), "other");
    }

    #[test]
    fn imports_are_explained() {
        assert!(import_note("log", "function").1.is_none());
        assert!(import_note("lease-token", "function").1.is_none());
        assert!(
            import_note("wasi:cli/environment@0.2.3", "instance")
                .1
                .is_none()
        );
        let outgoing = import_note("wasi:http/outgoing-handler@0.2.0", "instance");
        assert!(outgoing.1.is_none(), "{outgoing:?}");
        assert!(outgoing.0.contains("plugin.sandbox.http"), "{outgoing:?}");
        let serving = import_note("wasi:http/incoming-handler@0.2.0", "instance")
            .1
            .expect("a problem");
        assert!(serving.contains("-d http fetch-event"), "{serving}");
        let p3 = import_note("wasi:cli/environment@0.3.0", "instance")
            .1
            .expect("a problem");
        assert!(p3.contains("WASI 0.2"), "{p3}");
        assert!(
            import_note("shoal:processor/types@0.1.0", "instance")
                .1
                .is_none()
        );
        let old = import_note("shoal:processor/metrics@0.0.9", "instance")
            .1
            .expect("a problem");
        assert!(
            old.contains("shoal:processor@0.0.9") && old.contains(WORLD),
            "{old}"
        );
        let other = import_note("acme:db/query@1.0.0", "instance")
            .1
            .expect("a problem");
        assert!(other.contains("does not provide"), "{other}");
    }
}

#[cfg(test)]
mod outbound_tests {
    use super::ungranted_outbound;
    use crate::egress::{EgressGrants, parse_socket};

    fn imports(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn outbound_imports_without_a_grant_are_named() {
        let all = imports(&[
            "log",
            "wasi:sockets/tcp@0.2.0",
            "wasi:sockets/udp-create-socket@0.2.0",
            "wasi:sockets/ip-name-lookup@0.2.0",
        ]);
        let none = ungranted_outbound(&all, &EgressGrants::default());
        assert_eq!(none.len(), 3, "{none:?}");
        assert!(
            none[0].contains("`wasi:sockets/tcp@0.2.0`")
                && none[0].contains("no `tcp` destination")
        );
        assert!(none[1].contains("no `udp` destination"));
        assert!(none[2].contains("every name lookup will be refused"));

        let by_address = EgressGrants {
            tcp: vec![parse_socket("127.0.0.1:6379", false).expect("grant")],
            ..EgressGrants::default()
        };
        let report = ungranted_outbound(&all, &by_address);
        assert_eq!(report.len(), 2, "{report:?}");
        assert!(
            report[1].contains("name lookup"),
            "an address grants no lookups"
        );

        let by_name = EgressGrants {
            tcp: vec![parse_socket("cache:6379", false).expect("grant")],
            udp: vec![parse_socket("10.0.0.2:8125", false).expect("grant")],
            ..EgressGrants::default()
        };
        assert!(ungranted_outbound(&all, &by_name).is_empty());
        assert!(ungranted_outbound(&imports(&["log"]), &EgressGrants::default()).is_empty());
    }
}
