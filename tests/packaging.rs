//! The shipped artefacts besides the code: the systemd unit (`systemd-analyze verify`), the
//! configs baked into the image and the unit (they must validate, and agree with the
//! Dockerfile and the unit on the state directory and the user), and the release binary
//! (no debug info). The image itself is run in tests/container_e2e.rs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::release::fresh_release_binary;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = read("deploy/systemd/log-capturer.service");
    for directive in [
        "DynamicUser=yes",
        "SupplementaryGroups=docker",
        "StateDirectory=log-capturer",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/local/bin/log-capturer run -c /etc/log-capturer/config.yaml",
        "RestartPreventExitStatus=2",
    ] {
        assert!(unit.contains(directive), "the unit lacks {directive:?}");
    }
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        println!(
            "SKIPPED systemd-analyze verify: systemd-analyze is not installed (Debian package \
             `systemd`; bash scripts/test installs it)"
        );
        return;
    };
    println!(
        "{}",
        String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or_default()
    );
    // verify insists that ExecStart's binary exists: point it at the binary under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("log-capturer.service");
    let exe = env!("CARGO_BIN_EXE_log-capturer");
    std::fs::write(&copy, unit.replace("/usr/local/bin/log-capturer", exe)).expect("unit copy");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on unknown keys and bad values ("ignoring"): any output is a finding.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}):\n{said}",
        out.status
    );
}

fn validate(config: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .args(["validate", "-c"])
        .arg(repo(config))
        .output()
        .expect("log-capturer validate");
    assert!(
        out.status.success(),
        "{config}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_configs_validate_and_agree_with_the_image_and_the_unit() {
    validate("deploy/docker/config.yaml");
    validate("deploy/systemd/config.yaml");
    let docker_config = read("deploy/docker/config.yaml");
    let dockerfile = read("Dockerfile");
    let rootfs = read("deploy/docker/rootfs.sh");
    let unit = read("deploy/systemd/log-capturer.service");
    let systemd_config = read("deploy/systemd/config.yaml");
    // The state directory is the image's volume and the unit's StateDirectory.
    assert!(docker_config.contains("state_dir: /var/lib/log-capturer"));
    assert!(dockerfile.contains("VOLUME [\"/var/lib/log-capturer\"]"));
    assert!(systemd_config.contains("state_dir: /var/lib/log-capturer"));
    assert!(unit.contains("StateDirectory=log-capturer\n"));
    // Reachable from outside the container's network namespace.
    assert!(docker_config.contains("listen: 0.0.0.0:8001"));
    assert!(dockerfile.contains("EXPOSE 8001"));
    // The image's user exists in its /etc/passwd and owns the state directory.
    assert!(dockerfile.contains("\nUSER 10001:10001\n"));
    assert!(rootfs.contains("log-capturer:x:10001:10001:"));
    assert!(rootfs.contains("chown 10001:10001 \"$root/var/lib/log-capturer\""));
}

/// Names of an ELF64 little-endian file's sections.
fn elf_section_names(bytes: &[u8]) -> Vec<String> {
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u32_at =
        |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes")) as usize;
    let u64_at =
        |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes")) as usize;
    assert_eq!(&bytes[..5], b"\x7fELF\x02", "not an ELF64 file");
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(header(shstrndx) + 0x18);
    (0..shnum)
        .map(|i| {
            let start = strtab + u32_at(header(i));
            let end = bytes[start..]
                .iter()
                .position(|&b| b == 0)
                .map_or(bytes.len(), |n| start + n);
            String::from_utf8_lossy(&bytes[start..end]).into_owned()
        })
        .collect()
}

#[test]
fn the_release_binary_carries_no_debug_info() {
    let Some(release) = fresh_release_binary() else {
        println!(
            "SKIPPED: target/release/log-capturer is missing or older than the sources \
             (bash scripts/test builds it before the tests)"
        );
        return;
    };
    let bytes = std::fs::read(&release).expect("release binary");
    let names = elf_section_names(&bytes);
    let debug: Vec<&String> = names.iter().filter(|n| n.starts_with(".debug")).collect();
    assert!(debug.is_empty(), "{}: {debug:?}", release.display());
    // The symbol table stays, so that a panic's backtrace names functions.
    assert!(names.iter().any(|n| n == ".symtab"), "{names:?}");
    // The test build does carry debug info: the parser sees it when it is there.
    let test_build = std::fs::read(env!("CARGO_BIN_EXE_log-capturer")).expect("test build");
    assert!(
        elf_section_names(&test_build)
            .iter()
            .any(|n| n == ".debug_info")
    );
    println!(
        "{}: {} bytes, sections {names:?}",
        release.display(),
        bytes.len()
    );
}
