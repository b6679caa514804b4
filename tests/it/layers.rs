//! The shape of `src/`, as docs/ARCHITECTURE.md draws it: each layer
//! imports only from itself and the layers below (`cli` on top, imported
//! by `main` and `lib` alone), the queue imports nothing
//! but its sibling `sync`, and `unsafe` is allowed in the leaf modules
//! only. Read from the sources, so that a change that breaks the picture
//! fails here rather than drifting from the docs.

use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path, text));
        }
    }
    out
}

/// The code of `text`, without comment lines (docs mention other modules).
fn code(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim_start().starts_with("//"))
}

/// The top-level modules that `text` names as `crate::NAME`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in code(text) {
        for (i, _) in line.match_indices("crate::") {
            // `$crate::` in a macro is not an import.
            if line[..i].ends_with('$') {
                continue;
            }
            let name: String = line[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::Error` is the facade's re-export, not a layer.
            if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                names.push(name);
            }
        }
    }
    names
}

/// The layer a source file belongs to: its folder, or its own name for the
/// files at the top (`serve.rs` belongs with `serve/`).
fn layer(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

#[test]
fn each_layer_imports_only_from_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed = |layer: &str| -> &[&str] {
        match layer {
            "error" | "units" => &["error", "units"],
            "sys" => &["sys", "error", "units"],
            "engine" => &["engine", "sys", "error", "units"],
            "serve" => &["serve", "engine", "sys", "error", "units"],
            // The clients read where the daemon serves (its default paths).
            "client" => &["client", "serve", "engine", "sys", "error", "units"],
            "cli" => &["cli", "client", "serve", "engine", "sys", "error", "units"],
            // The facade and the binary may use everything.
            "lib" | "main" => &["cli", "client", "serve", "engine", "sys", "error", "units"],
            other => panic!("{other}: a layer docs/ARCHITECTURE.md does not know"),
        }
    };
    let mut checked = 0;
    for (file, text) in sources(&src) {
        let layer = layer(&src, &file);
        for name in crate_paths(&text) {
            assert!(
                allowed(&layer).contains(&name.as_str()),
                "{} (layer {layer}) uses crate::{name}",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "found only {checked} crate:: paths");
}

/// `tests/queue_shuttle.rs` compiles `engine/queue.rs` with shuttle's
/// primitives as its sibling `sync`, next to `sys/memory.rs`: anything else
/// they named would have to exist there too.
#[test]
fn the_queue_imports_nothing_but_sync_and_memory() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let queue = std::fs::read_to_string(src.join("engine/queue.rs")).unwrap();
    let memory = std::fs::read_to_string(src.join("sys/memory.rs")).unwrap();
    assert_eq!(crate_paths(&queue), ["sys"]);
    assert_eq!(crate_paths(&memory), Vec::<String>::new());
    let uses: Vec<&str> = code(&queue)
        .filter(|l| l.contains("super::") || l.contains("crate::"))
        .map(str::trim)
        .collect();
    assert_eq!(
        uses,
        [
            "use super::sync::{Condvar, Mutex, MutexGuard};",
            "use crate::sys::memory::{self, Piece};"
        ]
    );
}

/// `unsafe_code` is denied crate-wide; only the leaf modules may expect it,
/// and only they contain `unsafe`: the raw system calls, the ring buffers
/// shared with the kernel, and the queue's chunk memory.
#[test]
fn unsafe_lives_in_leaf_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let leaves = [
        src.join("sys/raw.rs"),
        src.join("sys/uring.rs"),
        src.join("sys/memory.rs"),
    ];
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    assert!(lib.contains("#![deny(unsafe_code)]"));
    let mut allowed = Vec::new();
    for (file, text) in sources(&src) {
        for line in code(&text) {
            assert!(
                !line.contains("allow(unsafe_code)"),
                "{}: an exception is an #[expect(unsafe_code, reason = ...)]",
                file.display()
            );
            if line.contains("expect(") && line.contains("unsafe_code") {
                allowed.push(file.clone());
            }
            let has_unsafe = line
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|w| w == "unsafe");
            // Lint attributes name `unsafe_op_in_unsafe_fn`, not `unsafe`.
            if has_unsafe && !line.contains("#![deny(") {
                assert!(
                    leaves.contains(&file),
                    "unsafe in {}: {line}",
                    file.display()
                );
            }
        }
    }
    // The `#[expect(unsafe_code, ...)]`s sit on the declarations of the leaves.
    allowed.sort();
    assert_eq!(
        allowed,
        [src.join("sys.rs"), src.join("sys.rs"), src.join("sys.rs")]
    );
}
