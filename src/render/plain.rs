//! Plain rendering: the YAML and JSON files of a directory, taken as they are.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde_json::Value;

use super::documents::{self, Document};
use super::fields::{self, Step};
use super::json::{self, LineIndex};
use super::{FieldLines, Manifest, Origin, RenderError};
use crate::source::SourceFile;

/// File name endings that hold manifests (the ones `kubectl apply -f DIR` reads).
const MANIFEST_EXTENSIONS: [&str; 3] = [".yaml", ".yml", ".json"];

/// Fields every object needs, as (name for messages, JSON pointer).
const REQUIRED_STRINGS: [(&str, &str); 3] = [
    ("apiVersion", "/apiVersion"),
    ("kind", "/kind"),
    ("metadata.name", "/metadata/name"),
];

/// Fields that may be absent but must be strings when present.
const OPTIONAL_STRINGS: [(&str, &str); 1] = [("metadata.namespace", "/metadata/namespace")];

/// Renders every manifest file in `files`. See [`super::render_plain`].
pub(super) fn render<'a>(files: impl IntoIterator<Item = &'a SourceFile>) -> Result<Vec<Manifest>, RenderError> {
    let mut selected: Vec<&SourceFile> = files.into_iter().filter(|file| is_manifest_path(&file.path)).collect();
    selected.sort_unstable_by(|a, b| a.path.cmp(&b.path));

    let mut collector = Collector::default();
    for file in selected {
        let Some(text) = decode(file, &mut collector.errors) else {
            continue;
        };
        if file.path.ends_with(".json") {
            collector.json_file(&file.path, text);
        } else {
            collector.yaml_file(&file.path, text);
        }
    }
    collector.finish()
}

/// One document of a renderer's output (Kustomize, Helm, Jsonnet) and where it comes from.
pub(super) struct Generated<'a> {
    /// The document's YAML (or JSON) text.
    pub text: &'a str,
    /// Where it is declared: the entry file and the document's index in the output.
    pub origin: Origin,
}

/// Parses a renderer's output documents as plain files are parsed: null documents skipped,
/// `List`s expanded (items share their list's origin), objects checked, duplicates reported,
/// every problem at once.
pub(super) fn parse_generated<'a>(
    documents: impl IntoIterator<Item = Generated<'a>>,
) -> Result<Vec<Manifest>, RenderError> {
    let mut collector = Collector::default();
    for Generated { text, origin } in documents {
        match serde_saphyr::from_str_with_options::<Value>(text, yaml_options()) {
            Ok(value) => collector.accept(value, origin, &[]),
            Err(err) => {
                let document = Document {
                    text,
                    first_line: 1,
                    content_line: None,
                };
                let message = match yaml_error(&origin.file, &document, &err) {
                    RenderError::InvalidYaml { message, .. } => message,
                    other => other.to_string(),
                };
                collector.errors.push(RenderError::InvalidYaml { origin, message });
            }
        }
    }
    collector.finish()
}

/// Whether `path` is a manifest file. Hidden files and directories (`.github/`, `.vscode/`)
/// are skipped: they hold tooling configuration (CI workflows are YAML too), never objects
/// meant for the cluster.
fn is_manifest_path(path: &str) -> bool {
    let hidden = path.split('/').any(|part| part.starts_with('.'));
    if hidden {
        tracing::debug!(%path, "skipping hidden path");
    }
    !hidden && MANIFEST_EXTENSIONS.iter().any(|ext| path.ends_with(ext))
}

fn decode<'a>(file: &'a SourceFile, errors: &mut Vec<RenderError>) -> Option<&'a str> {
    match std::str::from_utf8(&file.content) {
        Ok(text) => Some(text.strip_prefix('\u{feff}').unwrap_or(text)),
        Err(err) => {
            let valid = file.content.get(..err.valid_up_to()).unwrap_or_default();
            let newlines = valid.iter().filter(|&&b| b == b'\n').count();
            errors.push(RenderError::NotUtf8 {
                origin: Origin {
                    file: file.path.clone(),
                    line: u32::try_from(newlines).unwrap_or(u32::MAX).saturating_add(1),
                    document: None,
                },
            });
            None
        }
    }
}

/// Accumulates manifests and every problem found, so one pass reports all of them.
#[derive(Default)]
struct Collector {
    manifests: Vec<Manifest>,
    errors: Vec<RenderError>,
}

impl Collector {
    fn yaml_file(&mut self, path: &str, text: &str) {
        for document in documents::split(text) {
            let Some(content_line) = document.content_line else {
                continue;
            };
            let origin = Origin {
                file: path.to_owned(),
                line: content_line,
                document: None,
            };
            match serde_saphyr::from_str_with_options::<Value>(document.text, yaml_options()) {
                Ok(value) => {
                    let records = fields::yaml_lines(document.text, document.first_line);
                    self.accept_with_lines(value, origin, &records);
                }
                Err(err) => self.errors.push(yaml_error(path, &document, &err)),
            }
        }
    }

    /// [`Self::accept`] for a YAML document whose nodes' lines are `records`: each object
    /// (each `List` item) keeps the lines of its own fields.
    fn accept_with_lines(&mut self, value: Value, origin: Origin, records: &[(Vec<Step>, u32)]) {
        let first = self.manifests.len();
        if is_list(&value) {
            let item_lines: Vec<u32> = (0..)
                .map_while(|index| {
                    let item = [Step::Key("items".to_owned()), Step::Index(index)];
                    records
                        .iter()
                        .find(|(steps, _)| steps[..] == item[..])
                        .map(|(_, line)| *line)
                })
                .collect();
            let items = value.get("items").and_then(Value::as_array).map_or(0, Vec::len);
            self.accept(value, origin, &item_lines);
            // Items were pushed in order, one each unless lists nest (then the items keep
            // their objects' lines only).
            let pushed = self.manifests.len() - first;
            let each = if pushed == items { pushed } else { 0 };
            for (index, manifest) in self.manifests.iter_mut().skip(first).take(each).enumerate() {
                let prefix = [Step::Key("items".to_owned()), Step::Index(index)];
                manifest.fields = FieldLines::from_records(fields::under(records, &prefix));
            }
        } else {
            self.accept(value, origin, &[]);
            if let Some(manifest) = self.manifests.get_mut(first) {
                manifest.fields = FieldLines::from_records(fields::under(records, &[]));
            }
        }
    }

    fn json_file(&mut self, path: &str, text: &str) {
        let (values, error) = json::values(text);
        let mut lines = LineIndex::new(text);
        for located in values {
            let origin = Origin {
                file: path.to_owned(),
                line: lines.line_at(located.start),
                document: None,
            };
            let item_lines = if is_list(&located.value) {
                let object = text.get(located.start..located.end).unwrap_or("");
                // Items lie after the list's start and before the next value: offsets keep
                // increasing, so the same index serves.
                json::item_offsets(object)
                    .into_iter()
                    .map(|offset| lines.line_at(located.start + offset))
                    .collect()
            } else {
                Vec::new()
            };
            self.accept(located.value, origin, &item_lines);
        }
        if let Some(error) = error {
            self.errors.push(RenderError::InvalidJson {
                origin: Origin {
                    file: path.to_owned(),
                    line: error.line,
                    document: None,
                },
                message: format!("{} (column {})", error.message, error.column),
            });
        }
    }

    /// Takes one parsed document: skips null documents, expands lists (each item at its own
    /// line when known), validates objects.
    fn accept(&mut self, value: Value, origin: Origin, item_lines: &[u32]) {
        if value.is_null() {
            return;
        }
        if is_list(&value) {
            let items = match value {
                Value::Object(mut map) => match map.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            for (index, item) in items.into_iter().enumerate() {
                let line = item_lines.get(index).copied().unwrap_or(origin.line);
                let item_origin = Origin {
                    file: origin.file.clone(),
                    line,
                    document: None,
                };
                // Nested lists are rare; their items share the nested list's line.
                self.accept(item, item_origin, &[]);
            }
            return;
        }
        match check_object(&value) {
            Ok(()) => self.manifests.push(Manifest::new(value, origin)),
            Err(Invalid::NotAnObject(found)) => {
                self.errors.push(RenderError::NotAnObject { origin, found });
            }
            Err(Invalid::Fields(problems)) => {
                self.errors.push(RenderError::InvalidObject { origin, problems });
            }
        }
    }

    fn finish(mut self) -> Result<Vec<Manifest>, RenderError> {
        self.find_duplicates();
        let mut errors = self.errors;
        if errors.len() > 1 {
            return Err(RenderError::Many { errors });
        }
        match errors.pop() {
            Some(only) => Err(only),
            None => Ok(self.manifests),
        }
    }

    fn find_duplicates(&mut self) {
        let mut seen: HashMap<ObjectKey<'_>, &Origin> = HashMap::with_capacity(self.manifests.len());
        let mut duplicates = Vec::new();
        for manifest in &self.manifests {
            let key = ObjectKey::of(&manifest.object);
            if key.name.is_empty() {
                // generateName: every one is a new object.
                continue;
            }
            match seen.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(&manifest.origin);
                }
                Entry::Occupied(first) => duplicates.push(RenderError::Duplicate {
                    object: first.key().to_string(),
                    origin: manifest.origin.clone(),
                    first: (*first.get()).clone(),
                }),
            }
        }
        self.errors.extend(duplicates);
    }
}

fn yaml_options() -> serde_saphyr::Options {
    // Kubernetes parses YAML 1.1 style: `defaultMode: 0644` is octal (420). Comments are not
    // needed, so the parser need not keep them. Snippets would quote document-relative lines;
    // the error carries the file line instead.
    serde_saphyr::options! {
        legacy_octal_numbers: true,
        emit_comments: false,
        with_snippet: false,
    }
}

/// Lines of the items of a YAML `List` document, found by a second, span-recording parse
/// (only List documents pay for it).
fn yaml_error(path: &str, document: &Document<'_>, err: &serde_saphyr::Error) -> RenderError {
    let offset = document.first_line.saturating_sub(1);
    let located = err.location().filter(|location| location.line() > 0).map(|location| {
        let line = u32::try_from(location.line()).unwrap_or(u32::MAX);
        (offset.saturating_add(line), location.column())
    });
    // The user formatter drops hints aimed at programmers ("set DuplicateKeyPolicy...").
    let rendered = err.render_with_options(serde_saphyr::render_options! {
        formatter: &serde_saphyr::UserMessageFormatter,
        line_offset: u64::from(offset),
        snippets: serde_saphyr::SnippetMode::Off,
    });
    let (line, message) = match located {
        Some((line, column)) => {
            let suffix = format!(" at line {line}, column {column}");
            let text = rendered.strip_suffix(&suffix).unwrap_or(&rendered);
            (line, format!("{text} (column {column})"))
        }
        None => (document.content_line.unwrap_or(document.first_line), rendered),
    };
    RenderError::InvalidYaml {
        origin: Origin {
            file: path.to_owned(),
            line,
            document: None,
        },
        message,
    }
}

/// A `List` (v1 `List` or a typed `FooList`) is a wrapper whose `items` are the objects, as
/// `kubectl get -o yaml` writes them.
fn is_list(value: &Value) -> bool {
    value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array)
}

enum Invalid {
    NotAnObject(&'static str),
    Fields(Vec<String>),
}

fn check_object(value: &Value) -> Result<(), Invalid> {
    if !value.is_object() {
        return Err(Invalid::NotAnObject(type_name(value)));
    }
    let mut problems = Vec::new();
    if let Some(metadata) = value.get("metadata")
        && !metadata.is_object()
        && !metadata.is_null()
    {
        problems.push(format!("metadata must be a mapping, found {}", type_name(metadata)));
    }
    // An object named by the API server (`generateName`) is checked here and left out of the
    // desired state later, with a warning naming its file and line.
    let generated = value
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .is_some_and(|prefix| !prefix.trim().is_empty());
    for (name, pointer) in REQUIRED_STRINGS {
        if generated && name == "metadata.name" && value.pointer(pointer).is_none_or(Value::is_null) {
            continue;
        }
        match value.pointer(pointer) {
            None | Some(Value::Null) => problems.push(format!("{name} is missing")),
            Some(Value::String(s)) if s.trim().is_empty() => {
                problems.push(format!("{name} is empty"));
            }
            Some(Value::String(_)) => {}
            Some(other) => problems.push(format!("{name} must be a string, found {}", type_name(other))),
        }
    }
    for (name, pointer) in OPTIONAL_STRINGS {
        match value.pointer(pointer) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => problems.push(format!("{name} must be a string, found {}", type_name(other))),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Invalid::Fields(problems))
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// What makes two declarations the same object: the API group (versions are views of one
/// object), kind, namespace and name.
#[derive(PartialEq, Eq, Hash)]
struct ObjectKey<'a> {
    group: &'a str,
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
}

impl<'a> ObjectKey<'a> {
    /// Reads the key of a checked object (missing parts read as empty).
    fn of(object: &'a Value) -> Self {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or("");
        let api_version = text("/apiVersion");
        ObjectKey {
            group: api_version.rsplit_once('/').map_or("", |(group, _version)| group),
            kind: text("/kind"),
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
        }
    }
}

impl std::fmt::Display for ObjectKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if self.namespace.is_empty() {
            write!(f, " {}", self.name)
        } else {
            write!(f, " {}/{}", self.namespace, self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_objects_know_their_field_lines_compactly() {
        let file = SourceFile {
            path: "apps/list.yaml".into(),
            content: b"# two\napiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: a}\n    data:\n      x: \"1\"\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata:\n      name: b\n    data:\n      y: \"2\"\n".to_vec(),
        };
        let manifests = render([&file]).unwrap();
        let line = |index: usize, keys: &[&str]| {
            let path = crate::drift::FieldPath::from_fields(keys.iter().map(|k| (*k).to_owned()));
            manifests[index].fields.line_of(&path)
        };
        assert_eq!((manifests[0].origin.line, manifests[1].origin.line), (5, 10));
        assert_eq!(line(0, &["data", "x"]), Some(9));
        assert_eq!(line(1, &["data", "y"]), Some(15));
        assert_eq!(line(1, &["metadata", "name"]), Some(13));

        // The example Deployment (47 lines): a few hundred bytes, 8 per written node.
        let deployment = SourceFile {
            path: "examples/app/deployment.yaml".into(),
            content: include_bytes!("../../examples/app/deployment.yaml").to_vec(),
        };
        let manifests = render([&deployment]).unwrap();
        let bytes = manifests[0].fields.heap_bytes();
        assert!((200..=512).contains(&bytes), "{bytes} bytes");
    }

    #[test]
    fn manifest_paths() {
        for (path, want) in [
            ("a.yaml", true),
            ("dir/b.yml", true),
            ("c.json", true),
            ("README.md", false),
            ("kustomize.yaml.bak", false),
            ("Chart.YAML", false),
            (".github/workflows/ci.yaml", false),
            ("apps/.hidden.yaml", false),
        ] {
            assert_eq!(is_manifest_path(path), want, "{path}");
        }
    }

    #[test]
    fn object_checks() {
        let good = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert!(check_object(&good).is_ok());
        let Err(Invalid::Fields(problems)) =
            check_object(&json!({"kind": 3, "metadata": {"name": "", "namespace": 1}}))
        else {
            panic!("expected field problems");
        };
        assert_eq!(
            problems,
            vec![
                "apiVersion is missing",
                "kind must be a string, found a number",
                "metadata.name is empty",
                "metadata.namespace must be a string, found a number",
            ]
        );
        let generated = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "migrate-"}});
        assert!(check_object(&generated).is_ok());
        let Err(Invalid::Fields(problems)) = check_object(&json!({"apiVersion": "v1", "kind": "Job", "metadata": {}}))
        else {
            panic!("expected field problems");
        };
        assert_eq!(problems, vec!["metadata.name is missing"]);
        assert!(matches!(
            check_object(&json!(["a"])),
            Err(Invalid::NotAnObject("a list"))
        ));
    }

    #[test]
    fn keys_ignore_the_version() {
        let v1 = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "n"}});
        let beta =
            json!({"apiVersion": "apps/v1beta2", "kind": "Deployment", "metadata": {"name": "w", "namespace": "n"}});
        let core = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "w"}});
        assert!(ObjectKey::of(&v1) == ObjectKey::of(&beta));
        assert!(ObjectKey::of(&v1) != ObjectKey::of(&core));
        assert_eq!(ObjectKey::of(&v1).to_string(), "Deployment.apps n/w");
        assert_eq!(ObjectKey::of(&core).to_string(), "Service w");
    }

    #[test]
    fn list_detection() {
        assert!(is_list(&json!({"kind": "List", "items": []})));
        assert!(is_list(&json!({"kind": "ConfigMapList", "items": []})));
        assert!(!is_list(&json!({"kind": "List", "items": {}})));
        assert!(!is_list(&json!({"kind": "ConfigMap", "items": []})));
    }
}
