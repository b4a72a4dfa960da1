//! Jsonnet rendering, in process with jrsonnet (`jrsonnet-evaluator`, pinned in Cargo.toml).
//!
//! One entry file is evaluated with external variables and top-level arguments; imports are
//! confined to the checkout (see [`ConfinedResolver`]); the result is walked into manifests.
//!
//! # What the result may be
//!
//! The conventions of kubecfg and Tanka:
//! - a manifest: an object with `apiVersion` and `kind` (a `kind: *List` with an `items` array
//!   expands into its items, as in plain rendering);
//! - an array: each element in order;
//! - any other object: each visible field in Jsonnet's order (sorted by name, as `jsonnet`
//!   prints them);
//! - `null`: nothing (so `if enabled then {...}` works);
//! - any nesting of those. Strings, numbers, booleans and functions are refused.
//!
//! Each manifest gets `Origin { file: entry, line: 0, document: Some(n) }`, `n` counting from 1
//! in that order. The same inputs always give the same manifests in the same order.
//!
//! # Bounds
//!
//! - Stack: jrsonnet's own frame limit ([`JsonnetLimits::max_stack`]); the evaluation thread has
//!   a large native stack so that the limit, not the thread, is what stops deep recursion.
//! - Output: the manifested size (compact JSON, strings counted unescaped) is counted while the
//!   result is walked, and the walk stops as soon as it passes [`JsonnetLimits::max_output_bytes`].
//! - Time: jrsonnet has no interrupt hook, so evaluation runs on its own thread and is abandoned
//!   after [`JsonnetLimits::timeout`]. The abandoned thread cannot be stopped: it keeps its CPU
//!   and memory until it finishes or hits the stack limit (a tight loop over a huge range can
//!   take long). The caller gets its error at the deadline either way.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use jrsonnet_evaluator::function::TlaArg;
use jrsonnet_evaluator::gc::GcHashMap;
use jrsonnet_evaluator::trace::{CompactFormat, PathResolver, TraceFormat};
use jrsonnet_evaluator::{
    ImportResolver, ObjValue, ResultExt, State, Val, apply_tla,
    parser::{ParserSettings, Source, SourceFile, SourcePath},
};
use jrsonnet_gcmodule::Trace;
use serde_json::{Map, Number, Value};

use super::{Manifest, Origin, RenderError};

/// Native stack of the evaluation thread. jrsonnet recurses on the native stack for each
/// Jsonnet frame; this leaves room for [`JsonnetLimits::max_stack`] frames well past 1000.
const EVALUATION_THREAD_STACK: usize = 256 * 1024 * 1024;

/// What to evaluate: the `jsonnet` command line, with paths relative to the checkout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonnetOptions {
    /// Repository-relative path of the `.jsonnet` file to evaluate.
    pub entry: String,
    /// `--ext-str NAME=VALUE`: `std.extVar(NAME)` is the string.
    pub ext_vars: BTreeMap<String, String>,
    /// `--ext-code NAME=CODE`: `std.extVar(NAME)` is the value of the Jsonnet code.
    pub ext_code: BTreeMap<String, String>,
    /// `--tla-str NAME=VALUE`: when the file evaluates to a function, its argument NAME.
    pub tla_vars: BTreeMap<String, String>,
    /// `--tla-code NAME=CODE`: the same, with the value of the Jsonnet code.
    pub tla_code: BTreeMap<String, String>,
    /// `-J DIR`: repository-relative library directories. As with `jsonnet`, an import is
    /// looked up next to the importing file first, then in these, the last one first.
    pub jpath: Vec<String>,
}

/// How much one evaluation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonnetLimits {
    /// Jsonnet stack frames (function calls, object fields, imports being evaluated).
    pub max_stack: usize,
    /// Size of the manifested output in bytes (compact JSON).
    pub max_output_bytes: usize,
    /// Wall-clock time for evaluation and manifestation together.
    pub timeout: Duration,
}

impl Default for JsonnetLimits {
    /// `jsonnet`'s default stack (500), 64 MiB of output, 30 seconds.
    fn default() -> Self {
        JsonnetLimits {
            max_stack: 500,
            max_output_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Evaluates `options.entry` under `root` (a checkout on disk) into manifests. See the module
/// documentation for what the result may be and how evaluation is bounded.
pub fn render_jsonnet(
    root: &Path,
    options: &JsonnetOptions,
    limits: &JsonnetLimits,
) -> Result<Vec<Manifest>, RenderError> {
    let fail = |message: String| RenderError::Jsonnet {
        entry: options.entry.clone(),
        message,
    };
    let root = root
        .canonicalize()
        .map_err(|err| fail(format!("cannot open the checkout {}: {err}", root.display())))?;
    let entry = confined_path(&root, &root, &options.entry, "the entry file").map_err(fail)?;
    let mut jpath = Vec::with_capacity(options.jpath.len());
    for dir in &options.jpath {
        jpath.push(confined_path(&root, &root, dir, "the library directory (jpath)").map_err(fail)?);
    }
    // Right-most wins, as with `jsonnet -J`.
    jpath.reverse();

    let job = Job {
        root,
        entry,
        jpath,
        options: options.clone(),
        limits: *limits,
    };
    let (sender, receiver) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("jsonnet".to_owned())
        .stack_size(EVALUATION_THREAD_STACK)
        .spawn(move || {
            // The receiver may be gone (timed out): nothing to do then.
            let _ = sender.send(job.run());
        })
        .map_err(|err| fail(format!("cannot start the evaluation thread: {err}")))?;
    match receiver.recv_timeout(limits.timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(fail(format!(
            "evaluation did not finish within the time limit of {:?} (an endless or very long \
             computation?); it was abandoned",
            limits.timeout
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(fail(
            "the evaluation thread stopped without a result (it panicked)".to_owned(),
        )),
    }
}

/// Resolves the repository-relative `path` under `root`, refusing absolute paths and paths
/// that leave `root` (by `..` or through a symlink). `path` must exist.
fn confined_path(root: &Path, base: &Path, path: &str, what: &str) -> Result<PathBuf, String> {
    if Path::new(path).is_absolute() {
        return Err(format!(
            "{what} {path:?} is an absolute path; give it relative to the repository"
        ));
    }
    let joined = normalize(&base.join(path));
    if !joined.starts_with(root) {
        return Err(format!("{what} {path:?} is outside the repository"));
    }
    let real = joined.canonicalize().map_err(|err| format!("{what} {path:?}: {err}"))?;
    if !real.starts_with(root) {
        return Err(format!("{what} {path:?} is a symlink to outside the repository"));
    }
    Ok(real)
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn relative(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(inner) if inner.as_os_str().is_empty() => ".".to_owned(),
        Ok(inner) => inner.to_string_lossy().into_owned(),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

/// Keeps the message and the first frames of a long stack trace, runs of one repeated frame
/// (recursion) folded into one line.
fn shorten(text: &str) -> String {
    const MAX_LINES: usize = 25;
    let text = text.replacen("runtime error: import ", "import ", 1);
    let mut lines: Vec<String> = Vec::new();
    let mut all = text.lines().peekable();
    while let Some(line) = all.next() {
        let mut repeats = 0;
        while all.peek() == Some(&line) {
            all.next();
            repeats += 1;
        }
        lines.push(line.to_owned());
        if repeats > 0 {
            lines.push(format!("    ... the same frame {repeats} more times"));
        }
    }
    if lines.len() > MAX_LINES {
        let more = lines.len() - MAX_LINES;
        lines.truncate(MAX_LINES);
        lines.push(format!("    ... {more} more frames"));
    }
    lines.join("\n")
}

/// Everything the evaluation thread needs (jrsonnet's values are not `Send`: they are all
/// created on that thread).
struct Job {
    root: PathBuf,
    entry: PathBuf,
    jpath: Vec<PathBuf>,
    options: JsonnetOptions,
    limits: JsonnetLimits,
}

impl Job {
    fn run(self) -> Result<Vec<Manifest>, RenderError> {
        let entry = self.options.entry.clone();
        self.evaluate()
            .map_err(|message| RenderError::Jsonnet { entry, message })?
    }

    /// The manifests, or the invalid ones; `Err` for a failed evaluation.
    fn evaluate(self) -> Result<Result<Vec<Manifest>, RenderError>, String> {
        // Per thread; the thread is ours alone.
        jrsonnet_evaluator::stack::set_stack_depth_limit(self.limits.max_stack);
        let format = CompactFormat {
            resolver: PathResolver::Relative(self.root.clone()),
            max_trace: 20,
            padding: 4,
        };
        let max_stack = self.limits.max_stack;
        let describe_full = |err: jrsonnet_evaluator::Error| {
            if matches!(err.error(), jrsonnet_evaluator::error::ErrorKind::StackOverflow) {
                let mut text = format!(
                    "stack limit of {max_stack} frames exceeded (endless recursion?); raise max_stack only for \
                     legitimately deep code"
                );
                let mut trace = String::new();
                if format.write_trace(&mut trace, &err).is_ok()
                    && let Some((_, frames)) = trace.split_once('\n')
                {
                    text.push('\n');
                    text.push_str(frames);
                }
                return text;
            }
            let mut text = String::new();
            if format.write_trace(&mut text, &err).is_err() {
                text = err.to_string();
            }
            text
        };

        let describe = |err: jrsonnet_evaluator::Error| shorten(&describe_full(err));
        let context = jrsonnet_stdlib::ContextInitializer::new(PathResolver::Relative(self.root.clone()));
        for (name, value) in &self.options.ext_vars {
            context.add_ext_str(name.as_str().into(), value.as_str().into());
        }
        for (name, code) in &self.options.ext_code {
            context
                .add_ext_code(name, code.as_str())
                .map_err(|err| format!("ext code {name:?}: {}", describe(err)))?;
        }
        let mut tla: GcHashMap<jrsonnet_evaluator::IStr, TlaArg> = GcHashMap::new();
        for (name, value) in &self.options.tla_vars {
            tla.0
                .insert(name.as_str().into(), TlaArg::String(value.as_str().into()));
        }
        for (name, code) in &self.options.tla_code {
            let source = Source::new_virtual(format!("<top-level-arg:{name}>").into(), code.as_str().into());
            let parsed = jrsonnet_evaluator::parser::parse(code, &ParserSettings { source })
                .map_err(|err| format!("top-level argument {name:?}: invalid Jsonnet: {err}"))?;
            tla.0.insert(name.as_str().into(), TlaArg::Code(parsed));
        }

        let mut builder = State::builder();
        builder
            .import_resolver(ConfinedResolver {
                root: self.root.clone(),
                jpath: self.jpath.clone(),
            })
            .context_initializer(context);
        let state = builder.build();

        let value = state
            .import(&self.entry)
            .and_then(|value| apply_tla(state.clone(), &tla, value))
            .map_err(describe)?;
        let mut walker = Walker {
            entry: self.options.entry.clone(),
            budget: self.limits.max_output_bytes,
            limit: self.limits.max_output_bytes,
            manifests: Vec::new(),
            errors: Vec::new(),
            invalid: Vec::new(),
        };
        walker.collect(&value, &mut String::new()).map_err(|err| match err {
            WalkError::Jsonnet(err) => describe(err),
            WalkError::Other(message) => message,
        })?;
        if !walker.errors.is_empty() {
            return Err(walker.errors.join("; "));
        }
        let mut invalid = walker.invalid;
        Ok(match invalid.len() {
            0 => Ok(walker.manifests),
            1 => Err(invalid.remove(0)),
            _ => Err(RenderError::Many { errors: invalid }),
        })
    }
}

/// Imports relative to the importing file, then in the library directories, never leaving the
/// checkout: absolute paths, `..` past the root and symlinks pointing out are refused.
#[derive(Trace)]
struct ConfinedResolver {
    /// The checkout, canonical.
    root: PathBuf,
    /// Library directories, canonical, inside `root`, in lookup order.
    jpath: Vec<PathBuf>,
}

impl ConfinedResolver {
    fn refuse(&self, from: &SourcePath, path: &str, why: &str) -> jrsonnet_evaluator::Error {
        let file = from
            .path()
            .map_or_else(|| from.to_string(), |file| relative(&self.root, file));
        jrsonnet_evaluator::RuntimeError(format!("import {path:?} in {file} refused: {why}").into()).into()
    }

    /// `Some(file)` when `candidate` exists (and stays inside the checkout).
    fn check(&self, from: &SourcePath, path: &str, candidate: &Path) -> jrsonnet_evaluator::Result<Option<SourcePath>> {
        let candidate = normalize(candidate);
        if !candidate.starts_with(&self.root) {
            return Err(self.refuse(from, path, "it points outside the repository"));
        }
        if std::fs::symlink_metadata(&candidate).is_err() {
            return Ok(None);
        }
        let real = candidate
            .canonicalize()
            .map_err(|err| self.refuse(from, path, &format!("cannot resolve it: {err}")))?;
        if !real.starts_with(&self.root) {
            return Err(self.refuse(from, path, "it is a symlink to outside the repository"));
        }
        if !real.is_file() {
            return Err(self.refuse(from, path, "it is not a regular file"));
        }
        Ok(Some(SourcePath::new(SourceFile::new(real))))
    }
}

impl ImportResolver for ConfinedResolver {
    fn resolve_from(&self, from: &SourcePath, path: &str) -> jrsonnet_evaluator::Result<SourcePath> {
        if Path::new(path).is_absolute() {
            return Err(self.refuse(
                from,
                path,
                "absolute import paths are not allowed; import relative to the file or a library directory",
            ));
        }
        // Ext code and top-level arguments have no file: they import from the root.
        let base = match from.downcast_ref::<SourceFile>() {
            Some(file) => file.path().parent().unwrap_or(&self.root).to_path_buf(),
            None => self.root.clone(),
        };
        if let Some(found) = self.check(from, path, &base.join(path))? {
            return Ok(found);
        }
        for dir in &self.jpath {
            if let Some(found) = self.check(from, path, &dir.join(path))? {
                return Ok(found);
            }
        }
        let file = from
            .path()
            .map_or_else(|| from.to_string(), |file| relative(&self.root, file));
        let dirs: Vec<String> = self.jpath.iter().map(|dir| relative(&self.root, dir)).collect();
        Err(jrsonnet_evaluator::RuntimeError(
            format!("import {path:?} in {file}: no such file next to it or in the library directories {dirs:?}").into(),
        )
        .into())
    }

    /// Only the entry file comes here (from [`State::import`]); it was checked already.
    fn resolve(&self, path: &Path) -> jrsonnet_evaluator::Result<SourcePath> {
        match path.canonicalize() {
            Ok(real) if real.starts_with(&self.root) && real.is_file() => Ok(SourcePath::new(SourceFile::new(real))),
            _ => Err(jrsonnet_evaluator::AbsoluteImportFileNotFound(path.to_owned()).into()),
        }
    }

    fn load_file_contents(&self, resolved: &SourcePath) -> jrsonnet_evaluator::Result<Vec<u8>> {
        let Some(file) = resolved.downcast_ref::<SourceFile>() else {
            return Err(jrsonnet_evaluator::RuntimeError(format!("cannot load {resolved}").into()).into());
        };
        std::fs::read(file.path())
            .map_err(|err| jrsonnet_evaluator::ImportIo(format!("{}: {err}", relative(&self.root, file.path()))).into())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

enum WalkError {
    Jsonnet(jrsonnet_evaluator::Error),
    Other(String),
}

impl From<jrsonnet_evaluator::Error> for WalkError {
    fn from(err: jrsonnet_evaluator::Error) -> Self {
        WalkError::Jsonnet(err)
    }
}

/// Turns the evaluated value into manifests (see the module documentation).
struct Walker {
    entry: String,
    /// Output bytes still allowed.
    budget: usize,
    /// Output bytes allowed in all.
    limit: usize,
    manifests: Vec<Manifest>,
    /// Values that are not manifests, by their path in the result.
    errors: Vec<String>,
    /// Manifests without the identity every object needs.
    invalid: Vec<RenderError>,
}

impl Walker {
    fn collect(&mut self, value: &Val, at: &mut String) -> Result<(), WalkError> {
        match value {
            Val::Null => Ok(()),
            Val::Arr(items) => {
                for (index, item) in items.iter().enumerate() {
                    let item = item.with_description(|| format!("elem <{index}> evaluation"))?;
                    let len = at.len();
                    let _ = write!(at, "[{index}]");
                    self.collect(&item, at)?;
                    at.truncate(len);
                }
                Ok(())
            }
            Val::Obj(object) if is_manifest(object) => {
                let object = self.json(value)?;
                if let Some(Value::Array(items)) = list_items(&object) {
                    for item in items {
                        self.push(item.clone());
                    }
                } else {
                    self.push(object);
                }
                Ok(())
            }
            Val::Obj(object) => {
                object.run_assertions()?;
                for (key, field) in object.iter() {
                    let field = field.with_description(|| format!("field <{key}> evaluation"))?;
                    let len = at.len();
                    let _ = write!(at, ".{}", &*key);
                    self.collect(&field, at)?;
                    at.truncate(len);
                }
                Ok(())
            }
            other => {
                self.errors.push(format!(
                    "the result{} is {}, not a manifest, an array or an object of manifests",
                    if at.is_empty() {
                        String::new()
                    } else {
                        format!(" at {at}")
                    },
                    type_name(other)
                ));
                Ok(())
            }
        }
    }

    fn push(&mut self, object: Value) {
        let index = self.manifests.len() + self.invalid.len() + 1;
        let origin = Origin {
            file: self.entry.clone(),
            line: 0,
            document: Some(u32::try_from(index).unwrap_or(u32::MAX)),
        };
        let problems = identity_problems(&object);
        if problems.is_empty() {
            self.manifests.push(Manifest::new(object, origin));
        } else {
            self.invalid.push(RenderError::InvalidObject { origin, problems });
        }
    }

    fn spend(&mut self, bytes: usize) -> Result<(), WalkError> {
        match self.budget.checked_sub(bytes) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(WalkError::Other(format!(
                "the output is larger than the limit of {} bytes (max_output_bytes); it was stopped",
                self.limit
            ))),
        }
    }

    /// Manifests `value` as JSON, as `jsonnet` does (assertions checked, hidden fields left
    /// out, fields sorted), spending the output budget on the way.
    fn json(&mut self, value: &Val) -> Result<Value, WalkError> {
        Ok(match value {
            Val::Null => {
                self.spend(4)?;
                Value::Null
            }
            Val::Bool(b) => {
                self.spend(5)?;
                Value::Bool(*b)
            }
            Val::Str(s) => {
                let flat = s.clone().into_flat();
                self.spend(flat.len() + 2)?;
                Value::String(flat.to_string())
            }
            Val::Num(n) => {
                self.spend(8)?;
                number(n.get())
            }
            Val::Arr(items) => {
                self.spend(2)?;
                let mut out = Vec::with_capacity(items.len().min(1024));
                for (index, item) in items.iter().enumerate() {
                    let item = item.with_description(|| format!("elem <{index}> evaluation"))?;
                    self.spend(1)?;
                    out.push(self.json_frame(&item, || format!("elem <{index}> manifestification"))?);
                }
                Value::Array(out)
            }
            Val::Obj(object) => {
                object.run_assertions()?;
                self.spend(2)?;
                let mut out = Map::new();
                for (key, field) in object.iter() {
                    let field = field.with_description(|| format!("field <{key}> evaluation"))?;
                    self.spend(key.len() + 4)?;
                    let field = self.json_frame(&field, || format!("field <{key}> manifestification"))?;
                    out.insert(key.to_string(), field);
                }
                Value::Object(out)
            }
            Val::Func(_) => {
                return Err(WalkError::Jsonnet(
                    jrsonnet_evaluator::RuntimeError("tried to manifest a function".into()).into(),
                ));
            }
        })
    }

    /// [`Walker::json`] inside a counted stack frame, so that deep values hit the stack limit.
    fn json_frame(&mut self, value: &Val, describe: impl FnOnce() -> String) -> Result<Value, WalkError> {
        let _guard = jrsonnet_evaluator::stack::check_depth().map_err(jrsonnet_evaluator::Error::from)?;
        self.json(value).map_err(|err| match err {
            WalkError::Jsonnet(err) => WalkError::Jsonnet(Err::<(), _>(err).with_description(describe).unwrap_err()),
            other => other,
        })
    }
}

/// A manifest has a string `apiVersion` and a string `kind`.
fn is_manifest(object: &ObjValue) -> bool {
    let is_string = |name: &str| matches!(object.get(name.into()), Ok(Some(Val::Str(_))));
    is_string("apiVersion") && is_string("kind")
}

fn list_items(object: &Value) -> Option<&Value> {
    let kind = object.get("kind").and_then(Value::as_str)?;
    if kind.ends_with("List") {
        object.get("items").filter(|items| items.is_array())
    } else {
        None
    }
}

fn identity_problems(object: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, pointer) in [
        ("apiVersion", "/apiVersion"),
        ("kind", "/kind"),
        ("metadata.name", "/metadata/name"),
    ] {
        match object.pointer(pointer) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            Some(Value::String(_)) => problems.push(format!("{name} is empty")),
            None | Some(Value::Null) => problems.push(format!("{name} is missing")),
            Some(_) => problems.push(format!("{name} must be a string")),
        }
    }
    problems
}

/// A Jsonnet number as JSON: integers as integers (as `jsonnet` prints them), others as floats.
fn number(n: f64) -> Value {
    // Exact comparisons: both bounds are powers of two, representable in f64.
    const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;
    const U64_BOUND: f64 = 18_446_744_073_709_551_616.0;
    // `-0` stays a float: `jsonnet` prints it as `-0`.
    if n.fract() == 0.0 && !(n == 0.0 && n.is_sign_negative()) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        if (-I64_BOUND..I64_BOUND).contains(&n) {
            return Value::from(n as i64);
        } else if (0.0..U64_BOUND).contains(&n) {
            return Value::from(n as u64);
        }
    }
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}

fn type_name(value: &Val) -> &'static str {
    match value {
        Val::Null => "null",
        Val::Bool(_) => "a boolean",
        Val::Str(_) => "a string",
        Val::Num(_) => "a number",
        Val::Arr(_) => "an array",
        Val::Obj(_) => "an object",
        Val::Func(_) => "a function (missing top-level arguments?)",
    }
}
