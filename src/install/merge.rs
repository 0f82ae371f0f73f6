//! The pure part of `tender-install`: containerd config text in, config text out. Nothing here
//! touches the filesystem, so every decision is unit-testable on strings.
//!
//! What install adds is one contiguous block of text appended to the file, between two marker
//! comments ([`BEGIN`], [`END`]). Appending text instead of re-rendering the parsed document
//! leaves every other byte of the user's file (comments, order, quoting, indentation) as it was,
//! and makes the block easy to recognise and remove again.

use toml_edit::{DocumentMut, Item};

/// The first line of the block install appends.
pub const BEGIN: &str =
    "# >>> tender-install: added by `tender-install install`; `tender-install uninstall` removes it";
/// The last line of the block.
pub const END: &str = "# <<< tender-install";

/// The options file install points a `version = 2` config's handler at.
pub const DEFAULT_OPTIONS_FILE: &str = "/etc/containerd/tender.toml";

/// The options file's content when install writes one.
pub const OPTIONS_FILE_TEXT: &str = "# Tender's options (runc's field names; unknown keys are refused).\n\
# Written by tender-install. Add `SystemdCgroup = true` where the kubelet uses the systemd cgroup driver.\n\
BinaryName = \"runc\"   # or \"crun\", or an absolute path\n";

/// The config schema (`version = N` at the top of the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// `version = 2`: containerd 1.6 and 1.7 (2.x migrates it).
    V2,
    /// `version = 3`: containerd 2.x.
    V3,
}

impl Schema {
    /// The CRI plugin that holds the runtimes table in this schema.
    pub fn cri_plugin(self) -> &'static str {
        match self {
            Schema::V2 => "io.containerd.grpc.v1.cri",
            Schema::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    /// The runtimes table's path, as written in a table header.
    pub fn runtimes_header(self) -> String {
        format!("plugins.\"{}\".containerd.runtimes", self.cri_plugin())
    }
}

/// Where the tender handler takes its options from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionsSource {
    /// `options.ConfigPath = <file>` (what `version = 2` configs need: containerd 1.6 passes
    /// only `ConfigPath` to runtimes other than runc's).
    File(String),
    /// `options.BinaryName = "runc"` inline (containerd 2.x passes inline keys).
    Inline,
}

/// What install did to a config text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Installed {
    /// The `tender` handler this tool added is already there; the text is unchanged.
    Already,
    /// The new text, and whether it also adds the `runc` runtime.
    Changed { text: String, added_runc: bool },
}

/// What uninstall does to a config text (restoring the backup is decided by the caller, which
/// knows the recorded checksums).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed {
    /// No `tender` handler and no block of ours: nothing to do.
    NotInstalled,
    /// The text with the block removed.
    Changed(String),
}

/// A refusal: the text is left as it was and the message says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse(text: &str, what: &str) -> Result<DocumentMut, Refusal> {
    text.parse::<DocumentMut>().map_err(|e| {
        Refusal(format!(
            "{what} is not valid TOML, so it is left alone:\n{e}"
        ))
    })
}

/// The schema of a parsed config, or why it is refused.
pub fn schema(doc: &DocumentMut) -> Result<Schema, Refusal> {
    match doc.get("version") {
        None => Err(Refusal(
            "the config has no `version` line, i.e. it is a version 1 config (containerd 1.x's \
             old schema), which tender-install does not edit. Convert it first: containerd 2.x \
             `containerd config migrate`, or start from `containerd config default` of your \
             containerd and carry your changes over; then run tender-install again."
                .into(),
        )),
        Some(item) => match item.as_integer() {
            Some(2) => Ok(Schema::V2),
            Some(3) => Ok(Schema::V3),
            Some(n) => Err(Refusal(format!(
                "config `version = {n}` is not one tender-install knows (2: containerd 1.6/1.7, \
                 3: containerd 2.x); the file is left alone"
            ))),
            None => Err(Refusal(format!(
                "config `version` is not an integer ({}); the file is left alone",
                item.to_string().trim()
            ))),
        },
    }
}

/// The CRI plugin's `containerd` table in `doc`, if any.
fn cri_containerd(doc: &DocumentMut, schema: Schema) -> Option<&Item> {
    doc.get("plugins")?
        .get(schema.cri_plugin())?
        .get("containerd")
}

/// Whether the CRI plugin's runtimes table defines `name`.
pub fn has_runtime(doc: &DocumentMut, schema: Schema, name: &str) -> bool {
    cri_containerd(doc, schema)
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.get(name))
        .is_some()
}

/// The CRI plugin's default runtime name (`runc` when unset).
pub fn default_runtime_name(doc: &DocumentMut, schema: Schema) -> String {
    cri_containerd(doc, schema)
        .and_then(|c| c.get("default_runtime_name"))
        .and_then(Item::as_str)
        .unwrap_or("runc")
        .to_string()
}

/// The byte range of our block in `text` (from its first line through the end of its last
/// line, plus the one empty line install puts before it), if there is one.
pub fn block_range(text: &str) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    let mut begin = None;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if begin.is_none() && bare == BEGIN {
            begin = Some(offset);
        } else if let Some(b) = begin {
            if bare == END {
                let mut start = b;
                if text[..start].ends_with("\n\n") {
                    start -= 1;
                }
                return Some(start..offset + line.len());
            }
        }
        offset += line.len();
    }
    None
}

/// Whether `text` holds a `tender` handler for `schema`, and whether it is the one this tool
/// added: true when removing our block leaves a valid config without it.
fn ours(text: &str, schema: Schema) -> Result<Option<bool>, Refusal> {
    let doc = parse(text, "the config")?;
    if !has_runtime(&doc, schema, "tender") {
        return Ok(None);
    }
    let Some(range) = block_range(text) else {
        return Ok(Some(false));
    };
    let mut rest = text.to_string();
    rest.replace_range(range, "");
    Ok(Some(match rest.parse::<DocumentMut>() {
        Ok(d) => !has_runtime(&d, schema, "tender"),
        Err(_) => false,
    }))
}

fn not_ours(schema: Schema) -> Refusal {
    Refusal(format!(
        "the config already defines a `tender` runtime ([{}.tender]) that tender-install did not \
         add; it is left alone. Edit it by hand, or remove it and run tender-install again.",
        schema.runtimes_header()
    ))
}

/// The block install appends for `schema`.
pub fn block(schema: Schema, options: &OptionsSource, add_runc: bool) -> String {
    let rt = schema.runtimes_header();
    let mut b = String::new();
    b.push_str(BEGIN);
    b.push('\n');
    if add_runc {
        b.push_str(
            "# Keep the default runtime: defining any runtime replaces containerd 1.x's built-in table.\n",
        );
        b.push_str(&format!(
            "[{rt}.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n"
        ));
    }
    b.push_str(&format!(
        "[{rt}.tender]\n  runtime_type = \"io.containerd.tender.v2\"\n  [{rt}.tender.options]\n"
    ));
    match options {
        OptionsSource::File(path) => {
            if schema == Schema::V2 {
                b.push_str(
                    "    # containerd 1.6 passes only ConfigPath to runtimes other than io.containerd.runc.v2.\n",
                );
            }
            let quoted = toml_edit::Value::from(path.as_str()).to_string();
            b.push_str(&format!("    ConfigPath = {}\n", quoted.trim()));
        }
        OptionsSource::Inline => b.push_str("    BinaryName = \"runc\"\n"),
    }
    b.push_str(END);
    b.push('\n');
    b
}

/// Where the tender handler of `schema` takes its options from: the options file for
/// `version = 2`, inline for `version = 3` unless an options file was asked for.
pub fn options_source(schema: Schema, options_file: Option<&str>) -> OptionsSource {
    match (schema, options_file) {
        (_, Some(p)) => OptionsSource::File(p.to_string()),
        (Schema::V2, None) => OptionsSource::File(DEFAULT_OPTIONS_FILE.to_string()),
        (Schema::V3, None) => OptionsSource::Inline,
    }
}

/// The config's schema (refusing what install and uninstall refuse).
pub fn check(text: &str) -> Result<Schema, Refusal> {
    schema(&parse(text, "the config")?)
}

/// Adds the `tender` handler (and `runc` where the file would otherwise lose it) to `text`.
pub fn install(text: &str, options_file: Option<&str>) -> Result<Installed, Refusal> {
    let doc = parse(text, "the config")?;
    let schema = schema(&doc)?;
    match ours(text, schema)? {
        Some(true) => return Ok(Installed::Already),
        Some(false) => return Err(not_ours(schema)),
        None => {}
    }
    if block_range(text).is_some() {
        return Err(Refusal(format!(
            "the config holds a `{END}` block without a `tender` runtime in it (edited by \
             hand?); remove the block and run tender-install again"
        )));
    }
    // containerd 1.x replaces its built-in runtimes (runc) as soon as the file defines any, and
    // then refuses to load CRI when the default runtime is not among them.
    let add_runc = schema == Schema::V2
        && default_runtime_name(&doc, schema) == "runc"
        && !has_runtime(&doc, schema, "runc");
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&block(
        schema,
        &options_source(schema, options_file),
        add_runc,
    ));
    // Appending a table header fails where the user wrote a parent as an inline table.
    match out.parse::<DocumentMut>() {
        Ok(d) if has_runtime(&d, schema, "tender") => {}
        Ok(_) | Err(_) => {
            return Err(Refusal(format!(
                "the config's layout does not allow adding [{}.tender] as a table (is the \
                 runtimes table or one of its parents written inline, `x = {{ ... }}`?); add \
                 the handler by hand as the README says",
                schema.runtimes_header()
            )))
        }
    }
    Ok(Installed::Changed {
        text: out,
        added_runc: add_runc,
    })
}

/// Removes the block install added from `text`, keeping everything else.
pub fn uninstall(text: &str) -> Result<Removed, Refusal> {
    let doc = parse(text, "the config")?;
    let schema = schema(&doc)?;
    match ours(text, schema)? {
        Some(false) => Err(not_ours(schema)),
        Some(true) | None => {
            let Some(range) = block_range(text) else {
                return Ok(Removed::NotInstalled);
            };
            let mut rest = text.to_string();
            rest.replace_range(range, "");
            parse(&rest, "the config without tender-install's block")?;
            Ok(Removed::Changed(rest))
        }
    }
}

#[cfg(test)]
mod tests;
