//! Memory of desired state (DESIGN.md section 10 budget: desired state for 10,000 objects in
//! <= 64 MiB), measured with a counting global allocator.
//!
//! For 1,000 / 10,000 / 100,000 desired objects (`workload::repo_files(n / 4)`: each app is a
//! Deployment, a ConfigMap, a Secret and a Service), it renders the files (`render_plain`),
//! builds the `DesiredSet` and publishes it in a `DesiredStore` (which builds the admission
//! index), then drops the input files, and reports:
//!
//! - `retained`: heap bytes still held by the published store (current bytes after, minus
//!   before the files were created), per object too; split into the set (`set`) and the
//!   admission index (`index`). `retained_malloc` adds glibc's per-chunk overhead and rounding
//!   (chunk = max(32, (size + 8) rounded up to 16)), which is closer to what the process pays.
//! - `peak`: the highest heap use during render + build + publish, above the baseline before
//!   the input files existed (so it includes the files themselves, `source`).
//! - `allocs`: allocation calls (alloc + realloc) during render + build + publish.
//! - render / build / index time (best of several runs for the two smaller sizes; the
//!   counting allocator adds a little to every allocation).
//! - `json`: of `set`, what the `serde_json::Value` trees alone take (measured by cloning them);
//!   for 10,000 objects, a breakdown per kind and of the trees (maps, strings, arrays).
//!
//! Bytes are what the program requests from the allocator (`Layout::size`). Each row is also
//! printed as one `MEMORY-JSON {...}` line for scripts.
//!
//! `cargo bench --bench memory`

#[path = "../tests/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use driftguard::api::Mode;
use driftguard::desired::{DesiredSet, DesiredStore};
use driftguard::render::render_plain;
use serde_json::{Value, json};
use support::workload;

/// Wraps the system allocator, counting requested bytes (current and peak), glibc chunk bytes
/// and allocation calls.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CHUNKS: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

/// glibc malloc's chunk size for a request of `size` bytes (64-bit): header + rounding.
fn chunk(size: usize) -> usize {
    (size + 8).div_ceil(16).max(2) * 16
}

fn grow(size: usize) {
    let now = CURRENT.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(now, Relaxed);
}

fn shrink(size: usize) {
    CURRENT.fetch_sub(size, Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            ALLOCS.fetch_add(1, Relaxed);
            CHUNKS.fetch_add(chunk(layout.size()), Relaxed);
            grow(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            ALLOCS.fetch_add(1, Relaxed);
            CHUNKS.fetch_add(chunk(layout.size()), Relaxed);
            grow(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        CHUNKS.fetch_sub(chunk(layout.size()), Relaxed);
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            ALLOCS.fetch_add(1, Relaxed);
            CHUNKS.fetch_sub(chunk(layout.size()), Relaxed);
            CHUNKS.fetch_add(chunk(new_size), Relaxed);
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn current() -> usize {
    CURRENT.load(Relaxed)
}

/// Sizes, in desired objects (4 per app).
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// DESIGN.md section 10: desired state for 10,000 objects.
const BUDGET_OBJECTS: usize = 10_000;
const BUDGET_BYTES: usize = 64 << 20;

struct Row {
    objects: usize,
    apps: usize,
    source: usize,
    retained: usize,
    retained_malloc: usize,
    set: usize,
    index: usize,
    json: usize,
    peak: usize,
    allocs: usize,
    weight: u32,
    render: Duration,
    build: Duration,
    publish: Duration,
}

/// One render + build + publish of `apps` apps; memory figures from the counters. `report`
/// prints where the bytes go (for the budget's size).
fn measure(apps: usize, report: bool) -> Row {
    let template = workload::desired_set(1, Mode::Deny);
    let (guard, revision) = (template.guard.clone(), template.revision.clone());
    drop(template);

    let base = current();
    let base_chunks = CHUNKS.load(Relaxed);
    let files = workload::repo_files(apps);
    let source = files.iter().map(|f| f.content.len()).sum();
    let with_files = current();

    PEAK.store(with_files, Relaxed);
    let allocs = ALLOCS.load(Relaxed);
    let start = Instant::now();
    let manifests = render_plain(&files).unwrap();
    let rendered = Instant::now();
    let set = Arc::new(DesiredSet::build(guard, revision, manifests).unwrap());
    let built = Instant::now();
    let after_build = current();
    let store = DesiredStore::new();
    store.publish(vec![set], true);
    let published = Instant::now();
    let after_publish = current();
    let peak = PEAK.load(Relaxed) - base;
    let allocs = ALLOCS.load(Relaxed) - allocs;

    drop(files);
    let retained = current() - base;
    let retained_malloc = CHUNKS.load(Relaxed) - base_chunks;

    let index = store.index();
    let set = &index.sets()[0];
    assert_eq!(set.objects.len(), apps * 4);
    let before_clone = current();
    let texts: Vec<Box<serde_json::value::RawValue>> = set.objects.iter().map(|o| o.object.clone()).collect();
    // The stored JSON texts (the Vec's buffer stands for the boxes inside the `DesiredObject`s).
    let json = current() - before_clone;
    drop(texts);
    let weight = set.weight();
    if report && apps * 4 == BUDGET_OBJECTS {
        breakdown(set, retained, json);
    }
    drop(index);
    black_box(&store);

    Row {
        objects: apps * 4,
        apps,
        source,
        retained,
        retained_malloc,
        set: after_build - with_files,
        index: after_publish - after_build,
        json,
        peak,
        allocs,
        weight,
        render: rendered - start,
        build: built - rendered,
        publish: published - built,
    }
}

/// Shape of JSON trees: maps, arrays and string bytes.
#[derive(Default)]
struct Census {
    maps: usize,
    entries: usize,
    arrays: usize,
    elements: usize,
    string_bytes: usize,
}

fn census(value: &Value, c: &mut Census) {
    match value {
        Value::Object(map) => {
            c.maps += 1;
            c.entries += map.len();
            for (k, v) in map {
                c.string_bytes += k.len();
                census(v, c);
            }
        }
        Value::Array(items) => {
            c.arrays += 1;
            c.elements += items.len();
            items.iter().for_each(|v| census(v, c));
        }
        Value::String(s) => c.string_bytes += s.len(),
        _ => {}
    }
}

/// Where the retained bytes of one set go: per kind, and inside the JSON trees.
fn breakdown(set: &DesiredSet, retained: usize, json: usize) {
    // One B-tree leaf node: what every JSON map costs, however few entries it has.
    let before = current();
    let mut one = serde_json::Map::new();
    one.insert(String::new(), Value::Null);
    let leaf = current() - before;
    drop(one);

    let objects = set.objects.len();
    println!(
        "where the {objects}-object desired state goes ({} MiB retained):",
        mib(retained) as u32
    );
    let mut kinds: Vec<&str> = set.objects.iter().map(|o| o.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        let of_kind: Vec<_> = set.objects.iter().filter(|o| o.kind == kind).collect();
        let text: usize = of_kind.iter().map(|o| o.object.get().len()).sum();
        // What one parse of them costs while it is in use (admission parses one per request).
        let before = current();
        let trees: Vec<Value> = of_kind.iter().map(|o| o.value().unwrap()).collect();
        let parsed = current() - before;
        let mut c = Census::default();
        trees.iter().for_each(|v| census(v, &mut c));
        drop(trees);
        let n = of_kind.len();
        println!(
            "  {kind:<10} {:>6} B/object stored as JSON text ({:>6} B as a parsed tree): {:>3} maps ({} entries), {} arrays, {} B of strings",
            text / n,
            parsed / n,
            c.maps / n,
            c.entries / n,
            c.arrays / n,
            c.string_bytes / n,
        );
    }
    let mut c = Census::default();
    set.objects.iter().for_each(|o| census(&o.value().unwrap(), &mut c));
    println!(
        "  JSON texts {:.1} MiB ({:.0}%); parsed they would hold {} maps x {leaf} B B-tree leaf node = {:.1} MiB ({:.1} entries/map), strings {:.1} MiB, array slots {:.1} MiB",
        mib(json),
        json as f64 * 100.0 / retained as f64,
        c.maps,
        mib(c.maps * leaf),
        c.entries as f64 / c.maps as f64,
        mib(c.string_bytes),
        mib(c.elements * size_of::<Value>()),
    );
    println!(
        "  the rest {:.1} MiB: identity strings, origins, ignore lists, the index; the cache weigher estimates {:.1} MiB",
        mib(retained - json),
        mib(set.weight() as usize),
    );
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let mut rows = Vec::new();
    for objects in SIZES {
        let apps = objects / 4;
        let runs = if objects <= 10_000 { 3 } else { 1 };
        let mut row = measure(apps, true);
        for _ in 1..runs {
            let again = measure(apps, false);
            row.render = row.render.min(again.render);
            row.build = row.build.min(again.build);
            row.publish = row.publish.min(again.publish);
        }
        rows.push(row);
    }

    println!(
        "{:>8} {:>10} {:>11} {:>9} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "objects",
        "source MiB",
        "retain MiB",
        "B/object",
        "malloc MiB",
        "set MiB",
        "index MiB",
        "json MiB",
        "peak MiB",
        "allocs",
        "render ms",
        "build ms",
        "index ms"
    );
    for r in &rows {
        println!(
            "{:>8} {:>10.2} {:>11.2} {:>9} {:>11.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10} {:>9.1} {:>9.1} {:>9.1}",
            r.objects,
            mib(r.source),
            mib(r.retained),
            r.retained / r.objects,
            mib(r.retained_malloc),
            mib(r.set),
            mib(r.index),
            mib(r.json),
            mib(r.peak),
            r.allocs,
            ms(r.render),
            ms(r.build),
            ms(r.publish),
        );
    }
    for r in &rows {
        let line = json!({
            "objects": r.objects,
            "apps": r.apps,
            "source_bytes": r.source,
            "retained_bytes": r.retained,
            "retained_bytes_per_object": r.retained / r.objects,
            "retained_malloc_bytes": r.retained_malloc,
            "set_bytes": r.set,
            "index_bytes": r.index,
            "json_value_bytes": r.json,
            "cache_weight_estimate": r.weight,
            "peak_bytes": r.peak,
            "allocations": r.allocs,
            "render_ms": ms(r.render),
            "build_ms": ms(r.build),
            "index_ms": ms(r.publish),
            "render_build_ms": ms(r.render + r.build + r.publish),
        });
        println!("MEMORY-JSON {line}");
    }
    if let Some(r) = rows.iter().find(|r| r.objects == BUDGET_OBJECTS) {
        let verdict = if r.retained_malloc <= BUDGET_BYTES {
            "holds"
        } else {
            "MISSED"
        };
        println!(
            "budget: desired state for {BUDGET_OBJECTS} objects <= {} MiB: {verdict} ({:.2} MiB retained, {:.2} MiB with malloc overhead)",
            BUDGET_BYTES >> 20,
            mib(r.retained),
            mib(r.retained_malloc)
        );
    }
}
