//! Render budget (DESIGN.md section 10): a plain repository of 10,000 objects must be read
//! from Git and rendered in <= 2 s.
//!
//! Builds a repository in a temp dir with 100 files of 100 documents each (Deployments,
//! ConfigMaps and Services shaped like real ones, nested directories), commits it with git2,
//! and measures `read_files` + `render_plain` at that commit; `render_plain` alone is measured
//! too, to separate Git reads from parsing.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use driftguard::render::render_plain;
use driftguard::source::{GitReference, LocalRepository};

const FILES: usize = 100;
const OBJECTS_PER_FILE: usize = 100;

fn deployment(out: &mut String, ns: &str, name: &str, i: usize) {
    let _ = write!(
        out,
        r#"# web tier {i}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: {name}
    app.kubernetes.io/part-of: shop
  annotations:
    team: payments
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {name}
    spec:
      serviceAccountName: {name}
      containers:
      - name: app
        image: registry.example.com/shop/{name}:1.{i}.0
        args: ["--port=8080", "--log-level=info"]
        ports:
        - containerPort: 8080
          protocol: TCP
        env:
        - name: MODE
          value: production
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        resources:
          requests:
            cpu: 100m
            memory: 128Mi
          limits:
            cpu: "1"
            memory: 512Mi
        readinessProbe:
          httpGet:
            path: /healthz
            port: 8080
          periodSeconds: 10
        volumeMounts:
        - name: config
          mountPath: /etc/app
      volumes:
      - name: config
        configMap:
          name: {name}-config
          defaultMode: 0644
"#,
        replicas = i % 5 + 1
    );
}

fn config_map(out: &mut String, ns: &str, name: &str, i: usize) {
    let _ = write!(
        out,
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-config
  namespace: {ns}
data:
  LOG_LEVEL: info
  FEATURE_FLAGS: "checkout,search,recommendations"
  settings.yaml: |
    server:
      port: 8080
      timeout: 30s
    cache:
      size: {i}
"#
    );
}

fn service(out: &mut String, ns: &str, name: &str) {
    let _ = write!(
        out,
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: {name}
spec:
  type: ClusterIP
  selector:
    app.kubernetes.io/name: {name}
  ports:
  - name: http
    port: 80
    targetPort: 8080
    protocol: TCP
"#
    );
}

/// Writes the repository's files and commits them (no git CLI needed).
fn build_repository(root: &Path) {
    for f in 0..FILES {
        let ns = format!("team-{}", f % 10);
        let mut text = String::with_capacity(OBJECTS_PER_FILE * 1200);
        for o in 0..OBJECTS_PER_FILE {
            let i = f * OBJECTS_PER_FILE + o;
            let name = format!("svc-{}", i / 3);
            if o > 0 {
                text.push_str("---\n");
            }
            match i % 3 {
                0 => deployment(&mut text, &ns, &name, i),
                1 => config_map(&mut text, &ns, &name, i),
                _ => service(&mut text, &ns, &name),
            }
        }
        let dir = root.join(format!("clusters/prod/{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("objects-{f:03}.yaml")), text).unwrap();
    }
    std::fs::write(root.join("README.md"), "# fleet\n").unwrap();

    let repo = git2::Repository::init(root).unwrap();
    let mut index = repo.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let who = git2::Signature::now("bench", "bench@example.com").unwrap();
    repo.commit(Some("HEAD"), &who, &who, "fleet", &tree, &[]).unwrap();
}

fn bench_render(c: &mut Criterion) {
    let tmp = tempfile::TempDir::new().unwrap();
    build_repository(tmp.path());
    let repo = LocalRepository::open(tmp.path().to_str().unwrap()).unwrap();
    let revision = repo.resolve(&GitReference::Head).unwrap();

    let files = repo.read_files(&revision, "clusters").unwrap();
    let rendered = render_plain(&files).unwrap();
    assert_eq!(rendered.len(), FILES * OBJECTS_PER_FILE);

    let mut group = c.benchmark_group("render_plain_10k");
    group.sample_size(10);
    group.bench_function("read_files+render_plain", |b| {
        b.iter(|| {
            let files = repo.read_files(&revision, "clusters").unwrap();
            black_box(render_plain(&files).unwrap())
        })
    });
    group.bench_function("render_plain", |b| {
        b.iter(|| black_box(render_plain(black_box(&files)).unwrap()))
    });
    group.bench_function("read_files", |b| {
        b.iter(|| black_box(repo.read_files(&revision, "clusters").unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
