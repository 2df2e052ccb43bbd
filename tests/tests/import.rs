//! `xlb import` run as an operator runs it, on every fixture in tests/fixtures/import (one
//! keepalived.conf with its VRRP and services in included files): the TOML on stdout is the
//! fixture's expected TOML, stderr is its expected report, line by line, and `xlb check`
//! accepts the output.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Every fixture: the converter's name, the input's directory and its file name.
fn fixtures() -> Vec<(String, PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/import");
    let mut found = Vec::new();
    for kind in ["ipvsadm", "keepalived", "haproxy"] {
        let dir = root.join(kind);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            // Directories hold included files.
            let input = entry.file_type().unwrap().is_file()
                && !name.ends_with(".toml")
                && !name.ends_with(".dropped");
            if input {
                found.push((kind.to_owned(), dir.clone(), name));
            }
        }
    }
    found.sort();
    found
}

/// The `--interface` and `--tunnel-source` arguments the expected TOML's `[agent]` holds.
fn agent_args(expected: &str) -> Vec<String> {
    let table: toml::Table = toml::from_str(expected).unwrap();
    let agent = &table["agent"];
    let mut args = Vec::new();
    for interface in agent["interfaces"].as_array().unwrap() {
        args.extend([
            "--interface".to_owned(),
            interface.as_str().unwrap().to_owned(),
        ]);
    }
    for key in ["tunnel_source_v4", "tunnel_source_v6"] {
        if let Some(source) = agent.get(key) {
            args.extend([
                "--tunnel-source".to_owned(),
                source.as_str().unwrap().to_owned(),
            ]);
        }
    }
    args
}

fn assert_lines(what: &str, actual: &str, expected: &str) {
    let actual: Vec<&str> = actual.lines().collect();
    let expected: Vec<&str> = expected.lines().collect();
    for (index, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "{what}, line {}", index + 1);
    }
    assert_eq!(actual.len(), expected.len(), "{what}: number of lines");
}

#[test]
fn xlb_import_turns_each_fixture_into_its_expected_config_which_xlb_check_accepts() {
    let xlb = xlb_tests::xlb_bin().unwrap();
    let fixtures = fixtures();
    assert_eq!(fixtures.len(), 8, "{fixtures:?}");
    let out_dir = std::env::temp_dir().join(format!("xlb-import-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    for (kind, dir, file) in fixtures {
        let stem = file.rsplit_once('.').unwrap().0;
        let expected = std::fs::read_to_string(dir.join(format!("{stem}.toml"))).unwrap();
        let reported = std::fs::read_to_string(dir.join(format!("{stem}.dropped"))).unwrap();
        let out = Command::new(&xlb)
            .current_dir(&dir)
            .args(["import", &kind, &file])
            .args(agent_args(&expected))
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{kind} {file}: {stderr}");
        assert_lines(&format!("{file}: stdout"), &stdout, &expected);
        assert_lines(&format!("{file}: stderr"), &stderr, &reported);

        let written = out_dir.join(format!("{stem}-{kind}.toml"));
        std::fs::write(&written, stdout.as_bytes()).unwrap();
        let check = Command::new(&xlb)
            .args(["check", "--skip-routes", "--config"])
            .arg(&written)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{file}: xlb check refused the import: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let said = String::from_utf8_lossy(&check.stdout);
        assert!(said.contains(": valid ("), "{file}: {said}");
    }
    std::fs::remove_dir_all(&out_dir).unwrap();
}
