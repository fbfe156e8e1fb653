//! The fuzz corpora replayed on the stable toolchain: every input committed under
//! `fuzz/corpus/<target>/` goes through that target's checks (the same code `cargo fuzz`
//! runs, included from `fuzz/src`), so CI proves the parsers still hold on everything the
//! fuzzer found interesting, without fuzzing.

#[path = "../fuzz/src/lib.rs"]
mod fuzz;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn names_in(dir: &Path, strip_rs: bool) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| if strip_rs { n.strip_suffix(".rs").map(str::to_string) } else { Some(n) })
        .collect()
}

#[test]
fn every_target_has_a_fuzz_target_file_and_a_corpus() {
    let targets: BTreeSet<String> = fuzz::TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(names_in(&fuzz_dir().join("fuzz_targets"), true), targets);
    assert_eq!(names_in(&fuzz_dir().join("corpus"), false), targets);
}

#[test]
fn every_corpus_input_passes_its_target() {
    let mut failed = Vec::new();
    for (name, run) in fuzz::TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{} is empty", dir.display());
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(input.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "inputs failing their target's checks (reproduce: cargo +nightly fuzz run <target> <file>):\n{}",
        failed.join("\n")
    );
}
