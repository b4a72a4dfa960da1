//! Jsonnet rendering: ext vars and top-level arguments, imports confined to the checkout,
//! limits, determinism, and the same output as the C++ `jsonnet` (Debian package `jsonnet`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use driftguard::render::jsonnet::{JsonnetLimits, JsonnetOptions, render_jsonnet};
use driftguard::render::{Manifest, RenderError};
use serde_json::{Value, json};

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn entry(entry: &str) -> JsonnetOptions {
    JsonnetOptions {
        entry: entry.to_owned(),
        ..JsonnetOptions::default()
    }
}

fn limits() -> JsonnetLimits {
    JsonnetLimits {
        timeout: Duration::from_secs(60),
        ..JsonnetLimits::default()
    }
}

fn render_err(root: &Path, options: &JsonnetOptions, limits: &JsonnetLimits) -> String {
    match render_jsonnet(root, options, limits) {
        Ok(manifests) => panic!("expected an error, got {} manifests", manifests.len()),
        Err(err) => {
            assert!(matches!(err, RenderError::Jsonnet { .. }), "{err:?}");
            eprintln!("--- {err}");
            err.to_string()
        }
    }
}

fn objects(manifests: &[Manifest]) -> Vec<Value> {
    manifests.iter().map(|m| m.object.clone()).collect()
}

/// What driftguard accepts, applied to `jsonnet`'s output: manifests, arrays and objects of
/// them (fields in order), null skipped.
fn flatten(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Null => {}
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        Value::Object(object) if object.contains_key("apiVersion") && object.contains_key("kind") => {
            out.push(value.clone());
        }
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            keys.into_iter().for_each(|key| flatten(&object[key], out));
        }
        other => panic!("not a manifest: {other}"),
    }
}

/// Runs the C++ `jsonnet` in `dir` with `args`, and flattens its output.
fn cpp_jsonnet(dir: &Path, args: &[&str]) -> Vec<Value> {
    let output = Command::new("jsonnet")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the `jsonnet` binary (Debian package jsonnet; scripts/test installs it)");
    assert!(
        output.status.success(),
        "jsonnet {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut out = Vec::new();
    flatten(&value, &mut out);
    out
}

#[test]
fn ext_vars_ext_code_and_top_level_arguments() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "apps/main.jsonnet",
        r"
        function(name, replicas, labels={}) {
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: { name: name, namespace: std.extVar('namespace'), labels: labels },
          data: {
            replicas: std.toString(replicas * 2),
            region: std.extVar('settings').region,
            zones: std.join(',', std.extVar('settings').zones),
          },
        }",
    );
    let options = JsonnetOptions {
        entry: "apps/main.jsonnet".to_owned(),
        ext_vars: map(&[("namespace", "prod")]),
        ext_code: map(&[("settings", "{ region: 'eu', zones: ['a', 'b'] }")]),
        tla_vars: map(&[("name", "web")]),
        tla_code: map(&[("replicas", "1 + 2"), ("labels", "{ team: 'shop' }")]),
        jpath: Vec::new(),
    };
    let manifests = render_jsonnet(dir.path(), &options, &limits()).unwrap();
    assert_eq!(
        objects(&manifests),
        vec![json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": "prod", "labels": {"team": "shop"}},
            "data": {"replicas": "6", "region": "eu", "zones": "a,b"},
        })]
    );
    assert_eq!(manifests[0].origin.file, "apps/main.jsonnet");
    assert_eq!(manifests[0].origin.line, 0);
    assert_eq!(manifests[0].origin.document, Some(1));
    assert_eq!(manifests[0].origin.to_string(), "apps/main.jsonnet (document 1)");

    // A missing ext var is Jsonnet's error, with the location.
    let mut missing = options.clone();
    missing.ext_vars.clear();
    let message = render_err(dir.path(), &missing, &limits());
    assert!(message.starts_with("apps/main.jsonnet: Jsonnet: "), "{message}");
    assert!(message.contains("namespace"), "{message}");
    assert!(message.contains("apps/main.jsonnet:5"), "{message}");
}

#[test]
fn example_equals_cpp_jsonnet() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jsonnet");
    let options = JsonnetOptions {
        entry: "main.jsonnet".to_owned(),
        ext_vars: map(&[("namespace", "shop")]),
        tla_code: map(&[("replicas", "3")]),
        tla_vars: map(&[("image", "registry.example/web:2.0.0")]),
        jpath: vec!["lib".to_owned()],
        ..JsonnetOptions::default()
    };
    let started = Instant::now();
    let manifests = render_jsonnet(&root, &options, &limits()).unwrap();
    eprintln!("examples/jsonnet rendered in {:?}", started.elapsed());
    let want = cpp_jsonnet(
        &root,
        &[
            "-J",
            "lib",
            "--ext-str",
            "namespace=shop",
            "--tla-code",
            "replicas=3",
            "--tla-str",
            "image=registry.example/web:2.0.0",
            "main.jsonnet",
        ],
    );
    assert_eq!(objects(&manifests), want);
    let kinds: Vec<&str> = manifests.iter().map(|m| m.object["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "Deployment", "Service"]);
    let documents: Vec<Option<u32>> = manifests.iter().map(|m| m.origin.document).collect();
    assert_eq!(documents, [Some(1), Some(2), Some(3)]);
}

#[test]
fn language_corners_equal_cpp_jsonnet() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "vendor/base.libsonnet",
        "{ data+: { fromVendor: 'v' }, hidden:: 'h' }",
    );
    write(dir.path(), "lib/base.libsonnet", "{ data+: { fromLib: 'l' } }");
    write(
        dir.path(),
        "files/motd.txt",
        "hello\n\tworld \"quoted\" \u{e9}\u{1F600}\n",
    );
    write(
        dir.path(),
        "main.jsonnet",
        r#"
        local base = import 'base.libsonnet';
        local cm(name, data) = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: name }, data: data };
        {
          Zed: cm('upper', { b: '2', a: '1', B: '0', 'é': 'accent', _u: 'underscore' }),
          alpha: [
            cm('numbers', {
              int: 42, negative: -7, float: 0.1, third: 1 / 3, big: 1e20, huge: 1.5e300,
              tiny: 5e-324, pow: std.pow(2, 60), neg0: -0, exp: 1e-7,
            }),
            [cm('nested', { yaml: std.manifestYamlDoc({ b: [1, 2], a: { c: null } }) })],
            null,
          ],
          beta: cm('strings', {
            motd: importstr 'files/motd.txt',
            escapes: '\u0000\u001f\u007f\u2028<>&\'"\\',
            format: '%05.2f|%-4s|%x' % [3.14159, 'ab', 255],
            sorted: std.sort(['b', 'B', 'a', 'é', '_']),
          }) + base + { data+: { objectFields: std.objectFields(base) } },
          gamma: { apiVersion: 'v1', kind: 'List', items: [cm('in-list', {})] },
          delta: { [name]: cm(name, { n: std.length(name) }) for name in ['y', 'x'] },
        }
        "#,
    );
    let options = JsonnetOptions {
        entry: "main.jsonnet".to_owned(),
        jpath: vec!["lib".to_owned(), "vendor".to_owned()],
        ..JsonnetOptions::default()
    };
    let manifests = render_jsonnet(dir.path(), &options, &limits()).unwrap();
    let mut want = cpp_jsonnet(dir.path(), &["-J", "lib", "-J", "vendor", "main.jsonnet"]);
    // driftguard expands a `List` into its items; expand the C++ output the same way.
    let list = want.iter().position(|v| v["kind"] == "List").unwrap();
    let items = want[list]["items"].as_array().unwrap().clone();
    want.splice(list..=list, items);
    assert_eq!(objects(&manifests), want);
    // Right-most -J wins, as with `jsonnet`.
    assert_eq!(manifests[3].object["data"]["fromVendor"], "v");
}

#[test]
fn imports_outside_the_repository_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    let root = dir.path().join("repo");
    write(&outside, "x.libsonnet", "{ secret: 'leaked' }");
    write(&root, "lib/ok.libsonnet", "{ ok: true }");
    let secret = outside.join("x.libsonnet");
    let cases = [
        (
            "dots.jsonnet",
            "import '../../etc/x.libsonnet'".to_owned(),
            "points outside the repository",
        ),
        (
            "dots-existing.jsonnet",
            "import '../../outside/x.libsonnet'".to_owned(),
            "points outside the repository",
        ),
        (
            "absolute.jsonnet",
            format!("import '{}'", secret.display()),
            "absolute import paths are not allowed",
        ),
        (
            "importstr.jsonnet",
            "importstr '/etc/hostname'".to_owned(),
            "absolute import paths are not allowed",
        ),
        (
            "link.jsonnet",
            "import '../lib/link.libsonnet'".to_owned(),
            "symlink to outside the repository",
        ),
        (
            "dirlink.jsonnet",
            "import '../lib/outdir/x.libsonnet'".to_owned(),
            "symlink to outside the repository",
        ),
    ];
    std::os::unix::fs::symlink(&secret, root.join("lib/link.libsonnet")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("lib/outdir")).unwrap();
    for (file, code, why) in &cases {
        write(
            &root,
            &format!("apps/{file}"),
            &format!("local ok = import '../lib/ok.libsonnet';\n{code}\n"),
        );
        let message = render_err(&root, &entry(&format!("apps/{file}")), &limits());
        assert!(message.contains("refused"), "{file}: {message}");
        assert!(message.contains(why), "{file}: {message}");
        assert!(message.contains(&format!("in apps/{file}")), "{file}: {message}");
        assert!(!message.contains("leaked"), "{file}: {message}");
    }
    // The same from a library directory (jpath) lookup and for the entry itself.
    write(&root, "apps/jpath.jsonnet", "import '../../outside/x.libsonnet'");
    let options = JsonnetOptions {
        jpath: vec!["lib".to_owned()],
        ..entry("apps/jpath.jsonnet")
    };
    assert!(render_err(&root, &options, &limits()).contains("refused"));
    let message = render_err(&root, &entry("../outside/x.libsonnet"), &limits());
    assert!(message.contains("outside the repository"), "{message}");
    let message = render_err(&root, &entry("lib/link.libsonnet"), &limits());
    assert!(message.contains("symlink to outside"), "{message}");
    let options = JsonnetOptions {
        jpath: vec!["/etc".to_owned()],
        ..entry("apps/jpath.jsonnet")
    };
    assert!(render_err(&root, &options, &limits()).contains("absolute path"));
}

#[test]
fn infinite_recursion_is_stopped_by_the_stack_limit() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.jsonnet", "local f(x) = f(x + 1) + 1;\nf(0)\n");
    let started = Instant::now();
    let message = render_err(dir.path(), &entry("main.jsonnet"), &limits());
    eprintln!("stopped after {:?}", started.elapsed());
    assert!(message.contains("stack limit of 500 frames exceeded"), "{message}");
    assert!(message.contains("main.jsonnet:1"), "{message}");
    assert!(message.contains("the same frame"), "{message}");
    assert!(message.lines().count() <= 27, "{message}");

    // Deep but finite recursion passes with a larger limit.
    write(
        dir.path(),
        "deep.jsonnet",
        "local f(x) = if x == 0 then [] else f(x - 1);\nf(900)\n",
    );
    assert!(render_err(dir.path(), &entry("deep.jsonnet"), &limits()).contains("stack limit"));
    let deep = JsonnetLimits {
        max_stack: 2000,
        ..limits()
    };
    assert!(
        render_jsonnet(dir.path(), &entry("deep.jsonnet"), &deep)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn huge_output_hits_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "main.jsonnet",
        "[{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' + i }, data: { x: std.repeat('a', 1000) } }\n\
         for i in std.range(1, 1000000)]\n",
    );
    let small = JsonnetLimits {
        max_output_bytes: 1024 * 1024,
        ..limits()
    };
    let started = Instant::now();
    let message = render_err(dir.path(), &entry("main.jsonnet"), &small);
    assert!(message.contains("larger than the limit of 1048576 bytes"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

#[test]
fn a_long_evaluation_is_abandoned_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "main.jsonnet",
        "std.foldl(function(a, b) a + b, std.range(1, 100000000), 0)\n",
    );
    let quick = JsonnetLimits {
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let started = Instant::now();
    let message = render_err(dir.path(), &entry("main.jsonnet"), &quick);
    assert!(message.contains("time limit of 300ms"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn results_that_are_not_manifests() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "scalar.jsonnet",
        "{ a: [{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } }, 'text'] }",
    );
    let message = render_err(dir.path(), &entry("scalar.jsonnet"), &limits());
    assert!(message.contains("the result at .a[1] is a string"), "{message}");

    write(dir.path(), "function.jsonnet", "function(name) {}");
    let message = render_err(dir.path(), &entry("function.jsonnet"), &limits());
    assert!(message.contains("name"), "{message}");

    write(
        dir.path(),
        "nameless.jsonnet",
        "[{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'ok' } }, { apiVersion: 'v1', kind: 'Secret' }]",
    );
    match render_jsonnet(dir.path(), &entry("nameless.jsonnet"), &limits()) {
        Err(RenderError::InvalidObject { origin, problems }) => {
            assert_eq!(origin.to_string(), "nameless.jsonnet (document 2)");
            assert_eq!(problems, ["metadata.name is missing"]);
        }
        other => panic!("{other:?}"),
    }

    write(dir.path(), "missing.jsonnet", "import 'nowhere.libsonnet'");
    let options = JsonnetOptions {
        jpath: vec![".".to_owned()],
        ..entry("missing.jsonnet")
    };
    let message = render_err(dir.path(), &options, &limits());
    assert!(
        message.contains("import \"nowhere.libsonnet\" in missing.jsonnet: no such file"),
        "{message}"
    );
    assert!(!message.contains(&dir.path().display().to_string()), "{message}");

    write(dir.path(), "syntax.jsonnet", "{ a: }");
    let message = render_err(dir.path(), &entry("syntax.jsonnet"), &limits());
    assert!(message.contains("syntax.jsonnet:1"), "{message}");
}

#[test]
fn the_same_revision_renders_byte_identically() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jsonnet");
    let options = JsonnetOptions {
        entry: "main.jsonnet".to_owned(),
        ext_vars: map(&[("namespace", "shop")]),
        jpath: vec!["lib".to_owned()],
        ..JsonnetOptions::default()
    };
    let bytes = || {
        let manifests = render_jsonnet(&root, &options, &limits()).unwrap();
        manifests
            .iter()
            .map(|m| format!("{} {}\n", m.origin, serde_json::to_string(&m.object).unwrap()))
            .collect::<String>()
    };
    let first = bytes();
    for _ in 0..3 {
        assert_eq!(bytes(), first);
    }
}
