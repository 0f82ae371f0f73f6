//! The merge on strings: Debian's packaged config and `containerd config default` of 1.6, 1.7
//! and 2.1 (fixtures in src/install/fixtures, captured from those builds).

use super::*;

const DEBIAN: &str = include_str!("../fixtures/debian-12.toml");
const DEFAULT_16: &str = include_str!("../fixtures/config-default-1.6.toml");
const DEFAULT_17: &str = include_str!("../fixtures/config-default-1.7.toml");
const DEFAULT_21: &str = include_str!("../fixtures/config-default-2.1.toml");

fn installed(text: &str, options: Option<&str>) -> (String, bool) {
    match install(text, options) {
        Ok(Installed::Changed { text, added_runc }) => (text, added_runc),
        other => panic!("expected a change, got {other:?}"),
    }
}

fn runtime_type(text: &str, schema: Schema, name: &str) -> Option<String> {
    let doc: DocumentMut = text.parse().ok()?;
    cri_containerd(&doc, schema)?
        .get("runtimes")?
        .get(name)?
        .get("runtime_type")?
        .as_str()
        .map(str::to_string)
}

fn option(text: &str, schema: Schema, key: &str) -> Option<String> {
    let doc: DocumentMut = text.parse().ok()?;
    cri_containerd(&doc, schema)?
        .get("runtimes")?
        .get("tender")?
        .get("options")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

#[test]
fn debian_config_gets_runc_and_tender_and_keeps_every_byte() {
    let (out, added_runc) = installed(DEBIAN, None);
    assert!(added_runc);
    assert!(
        out.starts_with(DEBIAN),
        "the original text is a prefix:\n{out}"
    );
    assert_eq!(
        runtime_type(&out, Schema::V2, "runc").as_deref(),
        Some("io.containerd.runc.v2")
    );
    assert_eq!(
        runtime_type(&out, Schema::V2, "tender").as_deref(),
        Some("io.containerd.tender.v2")
    );
    assert_eq!(
        option(&out, Schema::V2, "ConfigPath").as_deref(),
        Some(DEFAULT_OPTIONS_FILE)
    );
}

#[test]
fn config_default_of_1x_keeps_its_runc_and_gets_only_tender() {
    for text in [DEFAULT_16, DEFAULT_17] {
        assert_eq!(check(text), Ok(Schema::V2));
        let (out, added_runc) = installed(text, None);
        assert!(!added_runc);
        assert!(out.starts_with(text));
        assert_eq!(
            option(&out, Schema::V2, "ConfigPath").as_deref(),
            Some(DEFAULT_OPTIONS_FILE)
        );
        // The runc table is the original one (with its options), not a second definition.
        assert!(!out[text.len()..].contains(".runc]"));
    }
}

#[test]
fn config_default_of_2x_gets_tender_with_inline_options() {
    assert_eq!(check(DEFAULT_21), Ok(Schema::V3));
    let (out, added_runc) = installed(DEFAULT_21, None);
    assert!(!added_runc);
    assert!(out.starts_with(DEFAULT_21));
    assert_eq!(
        runtime_type(&out, Schema::V3, "tender").as_deref(),
        Some("io.containerd.tender.v2")
    );
    assert_eq!(
        option(&out, Schema::V3, "BinaryName").as_deref(),
        Some("runc")
    );
    assert_eq!(option(&out, Schema::V3, "ConfigPath"), None);
    // An explicit options file is used on version 3 as well.
    let (out, _) = installed(DEFAULT_21, Some("/opt/t \"x\".toml"));
    assert_eq!(
        option(&out, Schema::V3, "ConfigPath").as_deref(),
        Some("/opt/t \"x\".toml")
    );
}

#[test]
fn v3_never_adds_runc_even_without_one() {
    let (_, added_runc) = installed("version = 3\n", None);
    assert!(!added_runc);
}

#[test]
fn runc_is_added_only_when_the_default_runtime_is_runc_and_undefined() {
    let crun_default = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  \
                        default_runtime_name = \"crun\"\n";
    assert!(!installed(crun_default, None).1);
    let runc_default = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  \
                        default_runtime_name = \"runc\"\n";
    assert!(installed(runc_default, None).1);
    let has_runc =
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  \
                    runtime_type = \"io.containerd.runc.v2\"\n";
    assert!(!installed(has_runc, None).1);
    // Single-quoted and dotted spellings of the same table count too.
    let dotted = "version = 2\n[plugins.'io.containerd.grpc.v1.cri'.containerd]\n  \
                  runtimes.runc.runtime_type = 'io.containerd.runc.v2'\n";
    assert!(!installed(dotted, None).1);
}

#[test]
fn install_twice_is_install_once() {
    for text in [DEBIAN, DEFAULT_16, DEFAULT_17, DEFAULT_21] {
        let (out, _) = installed(text, None);
        assert_eq!(install(&out, None), Ok(Installed::Already));
    }
}

#[test]
fn uninstall_removes_exactly_the_block() {
    for text in [
        DEBIAN,
        DEFAULT_16,
        DEFAULT_17,
        DEFAULT_21,
        "version = 2",
        "",
    ] {
        if text.is_empty() {
            continue; // no version: refused, see refusals
        }
        let (out, _) = installed(text, None);
        let back = match uninstall(&out) {
            Ok(Removed::Changed(t)) => t,
            other => panic!("{other:?}"),
        };
        if text.ends_with('\n') {
            assert_eq!(back, text);
        } else {
            assert_eq!(back, format!("{text}\n"));
        }
        assert_eq!(uninstall(&back), Ok(Removed::NotInstalled));
    }
}

#[test]
fn uninstall_keeps_changes_made_after_install() {
    let (out, _) = installed(DEBIAN, None);
    let edited = out.replace("/usr/lib/cni", "/opt/cni/bin") + "\n# mine\n[plugins.x]\n  y = 1\n";
    let back = match uninstall(&edited) {
        Ok(Removed::Changed(t)) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        back,
        DEBIAN.replace("/usr/lib/cni", "/opt/cni/bin") + "\n# mine\n[plugins.x]\n  y = 1\n"
    );
}

#[test]
fn a_tender_runtime_not_added_here_is_refused() {
    let theirs = format!("{DEBIAN}\n{}", "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.tender]\n  runtime_type = \"io.containerd.tender.v2\"\n");
    let e = install(&theirs, None).unwrap_err();
    assert!(e.0.contains("did not"), "{e}");
    let e = uninstall(&theirs).unwrap_err();
    assert!(e.0.contains("did not"), "{e}");
    // Ours, plus an extra tender subtable of theirs outside the block: not only ours any more.
    let (out, _) = installed(DEBIAN, None);
    let mixed = format!(
        "{out}[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.tender.extra]\n  a = 1\n"
    );
    assert!(install(&mixed, None).is_err());
    assert!(uninstall(&mixed).is_err());
}

#[test]
fn refusals() {
    // Version 1 (no version line), unknown versions, non-integer versions.
    for text in ["", "root = \"/var/lib/containerd\"\n", "[plugins.cri]\n"] {
        let e = install(text, None).unwrap_err();
        assert!(e.0.contains("version 1"), "{e}");
        assert!(uninstall(text).is_err());
    }
    for text in ["version = 4\n", "version = 1\n", "version = \"2\"\n"] {
        assert!(install(text, None).is_err(), "{text}");
        assert!(uninstall(text).is_err(), "{text}");
    }
    // Not TOML.
    for text in [
        "version = 2\n[plugins\n",
        "version = 2\nversion = 3\n",
        "\u{0}\u{1}",
        "= =",
    ] {
        let e = install(text, None).unwrap_err();
        assert!(e.0.contains("not valid TOML"), "{e}");
    }
    // A runtimes table written inline cannot take a table header.
    let inline = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  runtimes = { runc = { runtime_type = \"io.containerd.runc.v2\" } }\n";
    let e = install(inline, None).unwrap_err();
    assert!(e.0.contains("inline"), "{e}");
}

#[test]
fn garbage_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let pieces = [
        "version = 2\n",
        "version = 3\n",
        "[",
        "]",
        "\"",
        "'",
        "plugins.",
        "\n",
        "=",
        " ",
        "runtimes",
        "tender",
        BEGIN,
        END,
        "{",
        "}",
        "io.containerd.grpc.v1.cri",
        ".",
        "#",
        "1",
    ];
    for _ in 0..3000 {
        let mut s = String::new();
        for _ in 0..(seed % 12) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        seed = seed.wrapping_add(1);
        let _ = install(&s, None);
        let _ = uninstall(&s);
        let _ = block_range(&s);
    }
}

#[test]
fn a_marker_block_without_tender_is_refused_by_install_and_removed_by_uninstall() {
    let text = format!("version = 2\n\n{BEGIN}\n# emptied by hand\n{END}\n");
    let e = install(&text, None).unwrap_err();
    assert!(e.0.contains("block"), "{e}");
    assert_eq!(
        uninstall(&text),
        Ok(Removed::Changed("version = 2\n".into()))
    );
}

#[test]
fn crlf_files_keep_their_line_ends() {
    let text = DEBIAN.replace('\n', "\r\n");
    let (out, _) = installed(&text, None);
    assert!(out.starts_with(&text));
    assert_eq!(install(&out, None), Ok(Installed::Already));
    assert_eq!(uninstall(&out), Ok(Removed::Changed(text)));
}
