//! `tender-install` as an operator runs it: the built binary on config files in a temporary
//! directory. Round trips are byte-exact, the user's comments survive, `--dry-run` changes
//! nothing, and every refusal leaves the file as it was.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tender-install");

const DEBIAN: &str = include_str!("../src/install/fixtures/debian-12.toml");
const DEFAULT_16: &str = include_str!("../src/install/fixtures/config-default-1.6.toml");
const DEFAULT_17: &str = include_str!("../src/install/fixtures/config-default-1.7.toml");
const DEFAULT_21: &str = include_str!("../src/install/fixtures/config-default-2.1.toml");

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("tender-install-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn config(&self, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join("config.toml");
        fs::write(&p, text).unwrap();
        p
    }
    fn options(&self) -> PathBuf {
        self.0.join("tender.toml")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn install(config: &Path, options: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "install",
        "--config",
        config.to_str().unwrap(),
        "--options-file",
        options.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    run(&a)
}

fn uninstall(config: &Path, extra: &[&str]) -> Output {
    let mut a = vec!["uninstall", "--config", config.to_str().unwrap()];
    a.extend_from_slice(extra);
    run(&a)
}

fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(o: &Output, expect: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(expect), "expected `{expect}` in: {}", text(o));
}

fn siblings(d: &Dir) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(&d.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_is_byte_exact_on_every_starting_config() {
    for (name, original) in [
        ("debian", DEBIAN),
        ("default-1.6", DEFAULT_16),
        ("default-1.7", DEFAULT_17),
        ("default-2.1", DEFAULT_21),
    ] {
        let d = Dir::new(&format!("rt-{name}"));
        let c = d.config(original);
        let out = ok(&install(&c, &d.options(), &[]));
        assert!(out.contains("added the `tender` runtime"), "{out}");
        assert!(out.contains("restart"), "{out}");
        let installed = fs::read(&c).unwrap();
        assert!(installed.starts_with(original.as_bytes()), "{name}");
        assert_eq!(
            fs::read(c.with_extension("toml.tender-backup")).unwrap(),
            original.as_bytes()
        );
        assert_eq!(
            fs::read_to_string(d.options()).unwrap().lines().last(),
            Some("BinaryName = \"runc\"   # or \"crun\", or an absolute path")
        );
        assert_eq!(
            name == "debian",
            out.contains("and `runc`"),
            "{name}: {out}"
        );

        // Again: nothing changes.
        let out = ok(&install(&c, &d.options(), &[]));
        assert!(out.contains("already installed"), "{out}");
        assert_eq!(fs::read(&c).unwrap(), installed);

        let out = ok(&uninstall(&c, &[]));
        assert!(out.contains("restored the original"), "{out}");
        assert_eq!(fs::read(&c).unwrap(), original.as_bytes(), "{name}");
        // Backup and record are gone; the options file stays.
        assert_eq!(siblings(&d), ["config.toml", "tender.toml"], "{name}");
        let out = ok(&uninstall(&c, &[]));
        assert!(out.contains("nothing changed"), "{out}");
    }
}

#[test]
fn comments_and_layout_survive_and_later_edits_are_kept() {
    let original = "# my node's containerd\nversion = 2   # keep\n\n[plugins]\n  [plugins.'io.containerd.grpc.v1.cri']  # CRI\n    # no TLS here\n    enable_tls_streaming = false\n\n\t[plugins.\"io.containerd.grpc.v1.cri\".cni]\n\t\tbin_dir = '/opt/cni/bin'";
    let d = Dir::new("comments");
    let c = d.config(original);
    ok(&install(&c, &d.options(), &[]));
    let installed = fs::read_to_string(&c).unwrap();
    assert!(installed.starts_with(original), "{installed}");
    // The user edits the file after install: uninstall removes only what install added.
    let edited = installed.replace(
        "enable_tls_streaming = false",
        "enable_tls_streaming = true",
    ) + "\n# later\n[debug]\n  level = \"info\"\n";
    fs::write(&c, &edited).unwrap();
    let out = ok(&uninstall(&c, &[]));
    assert!(out.contains("removed only"), "{out}");
    assert_eq!(
        fs::read_to_string(&c).unwrap(),
        format!(
            "{}\n\n# later\n[debug]\n  level = \"info\"\n",
            original.replace(
                "enable_tls_streaming = false",
                "enable_tls_streaming = true"
            )
        )
    );
    // The backup of the original stays when it was not restored.
    assert!(c.with_extension("toml.tender-backup").exists());
}

#[test]
fn dry_run_changes_nothing() {
    let d = Dir::new("dry");
    let c = d.config(DEBIAN);
    let out = ok(&install(&c, &d.options(), &["--dry-run"]));
    assert!(
        out.contains("+[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.tender]"),
        "{out}"
    );
    assert!(
        out.contains("+  runtime_type = \"io.containerd.runc.v2\""),
        "{out}"
    );
    assert!(out.contains("would write"), "{out}");
    assert_eq!(siblings(&d), ["config.toml"]);
    assert_eq!(fs::read_to_string(&c).unwrap(), DEBIAN);

    ok(&install(&c, &d.options(), &[]));
    let installed = fs::read(&c).unwrap();
    let out = ok(&uninstall(&c, &["--dry-run"]));
    assert!(
        out.contains("-[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.tender]"),
        "{out}"
    );
    assert_eq!(fs::read(&c).unwrap(), installed);
    assert_eq!(
        siblings(&d),
        [
            "config.toml",
            "config.toml.tender-backup",
            "config.toml.tender-install",
            "tender.toml"
        ]
    );
}

#[test]
fn an_existing_options_file_is_left_alone() {
    let d = Dir::new("opts");
    let c = d.config(DEFAULT_17);
    fs::write(d.options(), "BinaryName = \"crun\"\n").unwrap();
    let out = ok(&install(&c, &d.options(), &[]));
    assert!(out.contains("left as it is"), "{out}");
    assert_eq!(
        fs::read_to_string(d.options()).unwrap(),
        "BinaryName = \"crun\"\n"
    );
}

#[test]
fn a_symlinked_config_is_edited_where_it_points() {
    let d = Dir::new("link");
    let target = d.0.join("real.toml");
    fs::write(&target, DEFAULT_21).unwrap();
    let link = d.0.join("config.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    ok(&install(&link, &d.options(), &[]));
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::read_to_string(&target)
        .unwrap()
        .contains("runtimes.tender]"));
    ok(&uninstall(&link, &[]));
    assert_eq!(fs::read_to_string(&target).unwrap(), DEFAULT_21);
}

#[test]
fn bad_inputs_are_refused_and_the_file_is_unchanged() {
    let foreign = format!(
        "{DEBIAN}\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.tender]\n  runtime_type = \"io.containerd.tender.v2\"\n"
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "v1",
            b"root = \"/var/lib/containerd\"\n".to_vec(),
            "version 1",
        ),
        ("v9", b"version = 9\n".to_vec(), "version = 9"),
        (
            "toml",
            b"version = 2\n[plugins\n".to_vec(),
            "not valid TOML",
        ),
        ("binary", vec![0xff, 0xfe, 0, 1, 2, b'\n'], "not UTF-8"),
        ("foreign", foreign.into_bytes(), "did not add"),
    ];
    for (name, bytes, expect) in cases {
        let d = Dir::new(&format!("bad-{name}"));
        let c = d.config(&bytes);
        refused(&install(&c, &d.options(), &[]), expect);
        refused(&uninstall(&c, &[]), expect);
        assert_eq!(fs::read(&c).unwrap(), bytes, "{name}");
        assert_eq!(siblings(&d), ["config.toml"], "{name}");
    }

    // A read-only file: refused by install and by uninstall.
    let d = Dir::new("ro");
    let c = d.config(DEBIAN);
    fs::set_permissions(&c, fs::Permissions::from_mode(0o444)).unwrap();
    refused(&install(&c, &d.options(), &[]), "read-only");
    assert_eq!(fs::read_to_string(&c).unwrap(), DEBIAN);
    assert_eq!(siblings(&d), ["config.toml"]);
    fs::set_permissions(&c, fs::Permissions::from_mode(0o644)).unwrap();
    ok(&install(&c, &d.options(), &[]));
    let installed = fs::read(&c).unwrap();
    fs::set_permissions(&c, fs::Permissions::from_mode(0o400)).unwrap();
    refused(&uninstall(&c, &[]), "read-only");
    assert_eq!(fs::read(&c).unwrap(), installed);

    // A file that does not exist.
    let d = Dir::new("missing");
    let c = d.0.join("config.toml");
    refused(
        &install(&c, &d.options(), &[]),
        "containerd config default >",
    );
    assert_eq!(siblings(&d), Vec::<String>::new());
}

#[test]
fn file_mode_is_kept() {
    let d = Dir::new("mode");
    let c = d.config(DEBIAN);
    fs::set_permissions(&c, fs::Permissions::from_mode(0o600)).unwrap();
    ok(&install(&c, &d.options(), &[]));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&c), 0o600);
    assert_eq!(mode(&c.with_extension("toml.tender-backup")), 0o600);
}

#[test]
fn command_line() {
    let o = run(&["--help"]);
    assert!(ok(&o).contains("tender-install install"));
    for bad in [
        &[][..],
        &["install", "--nope"],
        &["frobnicate"],
        &["install", "--options-file", "rel"],
    ] {
        let o = run(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Usage"),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn a_garbled_record_or_missing_backup_falls_back_to_removing_the_block() {
    for what in ["record", "backup"] {
        let d = Dir::new(&format!("fallback-{what}"));
        let c = d.config(DEFAULT_16);
        ok(&install(&c, &d.options(), &[]));
        if what == "record" {
            fs::write(c.with_extension("toml.tender-install"), "\u{0}[[[ not toml").unwrap();
        } else {
            fs::remove_file(c.with_extension("toml.tender-backup")).unwrap();
        }
        let out = ok(&uninstall(&c, &[]));
        assert!(out.contains("removed only"), "{what}: {out}");
        assert_eq!(fs::read_to_string(&c).unwrap(), DEFAULT_16, "{what}");
    }
}

#[test]
fn an_options_file_tender_would_refuse_is_reported() {
    let d = Dir::new("bad-opts");
    let c = d.config(DEBIAN);
    fs::write(d.options(), "BinaryNam = \"runc\"\n").unwrap();
    let o = install(&c, &d.options(), &[]);
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("would refuse its options file"),
        "{}",
        text(&o)
    );
}
