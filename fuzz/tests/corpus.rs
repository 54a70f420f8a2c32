//! Replays every file of `fuzz/corpus/<target>/` through its target's check, as the AFL
//! binaries run them: a corpus input that breaks an invariant fails here, without AFL.

use std::fs;
use std::path::Path;

use callhook_fuzz::TARGETS;

#[test]
fn test_every_corpus_file_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in TARGETS {
        let folder = root.join(target.name);
        let mut files: Vec<_> = fs::read_dir(&folder)
            .unwrap_or_else(|error| panic!("{}: {error}", folder.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} has no inputs", folder.display());
        for file in files {
            let data = fs::read(&file).expect("a readable corpus file");
            let outcome = std::panic::catch_unwind(|| (target.check)(&data));
            assert!(outcome.is_ok(), "{} fails its check", file.display());
        }
    }
}

#[test]
fn test_every_target_has_a_corpus_folder_and_nothing_else_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut folders: Vec<String> = fs::read_dir(&root)
        .expect("fuzz/corpus")
        .map(|entry| entry.expect("a corpus folder").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut names: Vec<&str> = TARGETS.iter().map(|target| target.name).collect();
    names.sort();
    assert_eq!(folders, names);
}
