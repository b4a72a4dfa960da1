//! HTTP routing: authentication, discovery, OpenAPI, reads, and the hand-off of writes to the
//! pipeline and of watches to the watch module.
use std::sync::Arc;

use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use super::pipeline::{self, Caller, Change, Reply, Target, WriteOptions};
use super::respond::{self, Body};
use super::{RequestRecord, Shared, State, protobuf, table, watch};
use crate::ApiError;
use crate::discovery::{self, Registry};
use crate::faults::Verb;
use crate::patch::PatchType;
use crate::selectors::{FieldSelector, LabelSelector, labels_of};
use crate::store::str_at;

/// kube-apiserver's request body limit.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Decoded query parameters, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k, true), percent_decode(v, true))
            })
            .collect();
        Query { pairs }
    }

    /// The first value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter (`true` or `1`).
    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// `%XX` decoding (and `+` as space in queries, as Go's url.ParseQuery does).
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(decoded) => {
                        out.push(decoded);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a path names.
#[derive(Debug)]
enum Route {
    Version,
    Health,
    CoreRoot,
    GroupsRoot,
    Group(String),
    GroupVersion(String, String),
    OpenApiRoot,
    OpenApiDocument(String),
    OpenApiV2,
    Resource(String, String, Vec<String>),
    NotFound,
}

fn parse_route(path: &str) -> Route {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::CoreRoot,
        ["api", v] => Route::GroupVersion(String::new(), (*v).to_owned()),
        ["api", v, rest @ ..] => Route::Resource(String::new(), (*v).to_owned(), strings(rest)),
        ["apis"] => Route::GroupsRoot,
        ["apis", g] => Route::Group((*g).to_owned()),
        ["apis", g, v] => Route::GroupVersion((*g).to_owned(), (*v).to_owned()),
        ["apis", g, v, rest @ ..] => Route::Resource((*g).to_owned(), (*v).to_owned(), strings(rest)),
        ["openapi", "v3"] => Route::OpenApiRoot,
        ["openapi", "v3", rest @ ..] => Route::OpenApiDocument(rest.join("/")),
        ["openapi", "v2"] => Route::OpenApiV2,
        _ => Route::NotFound,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// 404 for paths that name nothing.
fn no_such_path() -> ApiError {
    let mut err = ApiError::new(404, "NotFound", "the server could not find the requested resource");
    err.details = Some(json!({}));
    err
}

fn method_not_allowed() -> ApiError {
    let mut err = ApiError::new(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    );
    err.details = Some(json!({}));
    err
}

/// Resolve `segments` (after `/api/v1` or `/apis/<g>/<v>`) to a target; the bool says the
/// legacy `/watch/` prefix was used.
fn resolve(registry: &Registry, group: &str, version: &str, segments: &[String]) -> Result<(Target, bool), ApiError> {
    let mut rest: &[String] = segments;
    let watch_path = rest.first().is_some_and(|s| s == "watch");
    if watch_path {
        rest = rest.get(1..).unwrap_or_default();
    }
    let mut namespace = None;
    if let [first, ns, resource, tail @ ..] = rest
        && first == "namespaces"
        && registry
            .lookup(group, version, resource)
            .is_some_and(|info| info.namespaced)
    {
        namespace = Some(ns.clone());
        rest = rest.get(2..).unwrap_or_default();
        let _ = tail;
    }
    let (resource, name, subresource) = match rest {
        [resource] => (resource, None, None),
        [resource, name] => (resource, Some(name.clone()), None),
        [resource, name, sub] => (resource, Some(name.clone()), Some(sub.clone())),
        _ => return Err(no_such_path()),
    };
    let info = registry
        .lookup(group, version, resource)
        .ok_or_else(no_such_path)?
        .clone();
    if info.namespaced && namespace.is_none() && name.is_some() {
        return Err(no_such_path());
    }
    if !info.namespaced && namespace.is_some() {
        return Err(no_such_path());
    }
    if let Some(sub) = &subresource
        && !info.subresources().contains(&sub.as_str())
    {
        return Err(no_such_path());
    }
    Ok((
        Target {
            info,
            namespace,
            name,
            subresource,
        },
        watch_path,
    ))
}

/// Serve one request.
pub(crate) async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let header = |name: &str| -> String {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let query = Query::parse(&raw_query);
    let accept = header("accept");
    let content_type = header("content-type");
    let user_agent = header("user-agent");
    let user = shared.identities.authenticate(&header("authorization"));
    let index = shared.record(RequestRecord {
        method: parts.method.to_string(),
        path: path.clone(),
        query: raw_query,
        user: user.as_ref().map(|u| u.username.clone()).unwrap_or_default(),
        user_agent: user_agent.clone(),
        content_type: content_type.clone(),
    });
    // Nothing is awaited between a write taking effect and this record.
    let response = answer(
        &shared,
        parts,
        body,
        path,
        query,
        accept,
        content_type,
        user_agent,
        user,
    )
    .await;
    shared.answered(index, response.status().as_u16());
    response
}

/// Route and serve one logged request.
#[allow(clippy::too_many_arguments)]
async fn answer(
    shared: &Arc<Shared>,
    parts: hyper::http::request::Parts,
    body: Incoming,
    path: String,
    query: Query,
    accept: String,
    content_type: String,
    user_agent: String,
    user: Option<crate::UserInfo>,
) -> Response<Body> {
    let route = parse_route(&path);
    match route {
        Route::Version => return respond::json(200, &discovery::version_info()),
        Route::Health => return Response::new(respond::full("ok")),
        _ => {}
    }
    let Some(user) = user else {
        return respond::error(&ApiError::new(401, "Unauthorized", "Unauthorized"));
    };
    let get_only = |response: Response<Body>| {
        if parts.method == Method::GET {
            response
        } else {
            respond::error(&method_not_allowed())
        }
    };
    let found = |doc: Option<Value>| match doc {
        Some(doc) => respond::json(200, &doc),
        None => respond::error(&no_such_path()),
    };
    match route {
        Route::CoreRoot | Route::GroupsRoot => {
            let core = matches!(route, Route::CoreRoot);
            let state = shared.lock();
            let response = match discovery::negotiate_discovery(&accept) {
                Some(version) => {
                    respond::json_as(200, &state.registry.aggregated(core, version), &version.content_type())
                }
                None if core => respond::json(200, &state.registry.legacy_core_versions(&shared.address.to_string())),
                None => respond::json(200, &state.registry.legacy_group_list()),
            };
            get_only(response)
        }
        Route::Group(group) => get_only(found(shared.lock().registry.legacy_group(&group))),
        Route::GroupVersion(group, version) => {
            get_only(found(shared.lock().registry.legacy_resource_list(&group, &version)))
        }
        Route::OpenApiRoot => get_only(respond::json(200, &shared.lock().registry.openapi_root())),
        Route::OpenApiDocument(doc) => get_only(found(shared.lock().registry.openapi_document(&doc))),
        Route::OpenApiV2 | Route::NotFound | Route::Version | Route::Health => respond::error(&no_such_path()),
        Route::Resource(group, version, segments) => {
            let resolved = resolve(&shared.lock().registry, &group, &version, &segments);
            let (target, watch_path) = match resolved {
                Ok(resolved) => resolved,
                Err(err) => return respond::error(&err),
            };
            let request = ResourceRequest {
                shared,
                target,
                watch_path,
                query,
                accept,
                content_type,
                caller_user: user,
                user_agent,
            };
            match request.serve(parts.method, body).await {
                Ok(response) => response,
                Err(err) => respond::error(&err),
            }
        }
    }
}

/// A request for a resource, resolved.
struct ResourceRequest<'a> {
    shared: &'a Arc<Shared>,
    target: Target,
    watch_path: bool,
    query: Query,
    accept: String,
    content_type: String,
    caller_user: crate::UserInfo,
    user_agent: String,
}

impl ResourceRequest<'_> {
    fn verb(&self, method: &Method) -> Result<Verb, ApiError> {
        let item = self.target.name.is_some();
        let verb = match *method {
            Method::GET if self.watch_path || self.query.flag("watch") => Verb::Watch,
            Method::GET if item => Verb::Get,
            Method::GET => Verb::List,
            Method::POST if !item => Verb::Create,
            Method::PUT if item => Verb::Update,
            Method::PATCH if item => Verb::Patch,
            Method::DELETE if item => Verb::Delete,
            Method::DELETE => Verb::DeleteCollection,
            _ => return Err(method_not_allowed()),
        };
        let allowed = match (self.target.subresource.as_deref(), verb) {
            (None, verb) => self.target.info.verbs.iter().any(|v| v == verb.as_str()),
            (Some("finalize"), Verb::Update) => true,
            (Some("finalize"), _) => false,
            (Some(_), Verb::Get | Verb::Update | Verb::Patch) => true,
            (Some(_), _) => false,
        };
        if allowed { Ok(verb) } else { Err(method_not_allowed()) }
    }

    fn caller(&self) -> Caller {
        Caller {
            user: self.caller_user.clone(),
            options: WriteOptions {
                dry_run: self.query.all("dryRun").any(|v| v == "All"),
                field_manager: self.query.get("fieldManager").map(str::to_owned),
                force: self.query.flag("force"),
                field_validation: self.query.get("fieldValidation").map(str::to_owned),
                user_agent: self.user_agent.clone(),
            },
        }
    }

    async fn serve(self, method: Method, body: Incoming) -> Result<Response<Body>, ApiError> {
        let verb = self.verb(&method)?;
        let fault_resource = match &self.target.subresource {
            Some(sub) => format!("{}/{sub}", self.target.info.plural),
            None => self.target.info.plural.clone(),
        };
        let faults = &self.shared.faults;
        let user = self.caller_user.username.as_str();
        let latency = faults.latency(verb, &fault_resource, user);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Some(failure) = faults.check(verb, &fault_resource, user) {
            return Ok(respond::failure(&failure));
        }
        match verb {
            Verb::Get => self.get(),
            Verb::List => self.list(),
            Verb::Watch => {
                let (labels, fields) = self.selectors()?;
                Ok(watch::serve(
                    self.shared.clone(),
                    self.target,
                    labels,
                    fields,
                    &self.query,
                ))
            }
            Verb::Create => {
                let value = self.json_body(body).await?;
                self.reply(pipeline::create(self.shared, &self.target, &self.caller(), value).await)
            }
            Verb::Update => {
                let value = self.json_body(body).await?;
                let change = Change::Replace(value);
                self.reply(pipeline::update(self.shared, &self.target, &self.caller(), change).await)
            }
            Verb::Patch => {
                let patch_type = PatchType::from_content_type(&self.content_type).ok_or_else(|| {
                    ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!("the server does not support the patch type {:?}", self.content_type),
                    )
                })?;
                let bytes = read_body(body).await?;
                let change = Change::Patch(patch_type, bytes);
                self.reply(pipeline::update(self.shared, &self.target, &self.caller(), change).await)
            }
            Verb::Delete => {
                let options = self.delete_options(body).await?;
                self.reply(pipeline::delete(self.shared, &self.target, &self.caller(), options).await)
            }
            Verb::DeleteCollection => self.delete_collection(body).await,
            Verb::Any => Err(method_not_allowed()),
        }
    }

    fn reply(&self, result: Result<Reply, ApiError>) -> Result<Response<Body>, ApiError> {
        let reply = result?;
        let mut response = respond::json(reply.code, &reply.body);
        respond::add_warnings(&mut response, &reply.warnings);
        Ok(response)
    }

    async fn json_body(&self, body: Incoming) -> Result<Value, ApiError> {
        let base = self.content_type.split(';').next().unwrap_or("").trim();
        if base == protobuf::MEDIA_TYPE {
            return protobuf::decode(&read_body(body).await?);
        }
        if !base.is_empty() && base != "application/json" && base != "*/*" {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json (this test server does not decode {base})"
                ),
            ));
        }
        let bytes = read_body(body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::new(400, "BadRequest", format!("json parse error: {e}")))
    }

    /// DeleteOptions from the body, with the query's `propagationPolicy`/`orphanDependents`
    /// where the body has none (kube accepts both).
    async fn delete_options(&self, body: Incoming) -> Result<Value, ApiError> {
        let bytes = read_body(body).await?;
        let mut options: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::new(400, "BadRequest", format!("json parse error: {e}")))?
        };
        if let Some(map) = options.as_object_mut() {
            if let Some(policy) = self.query.get("propagationPolicy") {
                map.entry("propagationPolicy").or_insert_with(|| json!(policy));
            }
            if let Some(orphan) = self.query.get("orphanDependents") {
                map.entry("orphanDependents").or_insert_with(|| json!(orphan == "true"));
            }
        }
        Ok(options)
    }

    fn selectors(&self) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = match self.query.get("labelSelector") {
            Some(text) if !text.trim().is_empty() => LabelSelector::parse(text)?,
            _ => LabelSelector::default(),
        };
        let mut field_text = self.query.get("fieldSelector").unwrap_or("").to_owned();
        // The legacy `/watch/.../<name>` form watches one object.
        if let Some(name) = &self.target.name {
            if !field_text.is_empty() {
                field_text.push(',');
            }
            field_text.push_str(&format!("metadata.name={name}"));
        }
        let fields = if field_text.trim().is_empty() {
            FieldSelector::default()
        } else {
            FieldSelector::parse(&field_text)?
        };
        Ok((labels, fields))
    }

    fn get(&self) -> Result<Response<Body>, ApiError> {
        let info = &self.target.info;
        let name = self.target.name.clone().unwrap_or_default();
        let state = self.shared.lock();
        let object = state
            .store
            .get(&self.target.key(&name))
            .ok_or_else(|| crate::store::not_found(&info.group, &info.plural, &name))?;
        if self.target.subresource.as_deref() == Some("scale") {
            return Ok(respond::json(200, &pipeline::scale_of(info, object)));
        }
        let object = pipeline::response_object(info, object.clone());
        if table::wanted(&self.accept) {
            let table = table::render(info, &[object], None, self.query.get("includeObject"));
            return Ok(respond::json(200, &table));
        }
        Ok(respond::json(200, &object))
    }

    fn matching(&self, state: &State) -> Result<Vec<Value>, ApiError> {
        let (labels, fields) = self.selectors()?;
        let info = &self.target.info;
        Ok(state
            .store
            .list(&info.group, &info.plural, self.target.namespace.as_deref())
            .into_iter()
            .filter(|o| labels.matches(&labels_of(o)) && fields.matches(o))
            .cloned()
            .collect())
    }

    fn list(&self) -> Result<Response<Body>, ApiError> {
        let info = &self.target.info;
        let state = self.shared.lock();
        let items = self.matching(&state)?;
        let revision = state.store.revision();
        drop(state);
        if table::wanted(&self.accept) {
            let objects: Vec<Value> = items.into_iter().map(|o| pipeline::response_object(info, o)).collect();
            let table = table::render(info, &objects, Some(revision), self.query.get("includeObject"));
            return Ok(respond::json(200, &table));
        }
        Ok(respond::json(200, &list_document(info, items, revision)))
    }

    async fn delete_collection(&self, body: Incoming) -> Result<Response<Body>, ApiError> {
        let options = self.delete_options(body).await?;
        let names: Vec<(Option<String>, String)> = {
            let state = self.shared.lock();
            self.matching(&state)?
                .iter()
                .map(|o| {
                    let ns = str_at(o, "/metadata/namespace");
                    (
                        (!ns.is_empty()).then(|| ns.to_owned()),
                        str_at(o, "/metadata/name").to_owned(),
                    )
                })
                .collect()
        };
        let caller = self.caller();
        let mut deleted = Vec::new();
        for (namespace, name) in names {
            let target = Target {
                namespace,
                name: Some(name),
                ..self.target.clone()
            };
            match pipeline::delete(self.shared, &target, &caller, options.clone()).await {
                Ok(reply) => deleted.push(reply.body),
                Err(err) if err.code == 404 => {}
                Err(err) => return Err(err),
            }
        }
        let revision = self.shared.lock().store.revision();
        Ok(respond::json(200, &list_document(&self.target.info, deleted, revision)))
    }
}

/// A `<Kind>List`: built-in kinds' items carry no apiVersion/kind (kube's typed lists), custom
/// resources' items do.
fn list_document(info: &crate::discovery::ResourceInfo, items: Vec<Value>, revision: u64) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|item| {
            let mut item = pipeline::response_object(info, item);
            if !info.custom
                && let Some(map) = item.as_object_mut()
            {
                map.remove("apiVersion");
                map.remove("kind");
            }
            item
        })
        .collect();
    json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    })
}

async fn read_body(body: Incoming) -> Result<Vec<u8>, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(err) => Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body could not be read: {err}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_like_kube() {
        let registry = Registry::new();
        let resolve_path = |path: &str| -> Result<(Target, bool), ApiError> {
            match parse_route(path) {
                Route::Resource(g, v, segments) => resolve(&registry, &g, &v, &segments),
                other => panic!("{path}: {other:?}"),
            }
        };
        let (t, _) = resolve_path("/api/v1/namespaces/team").unwrap();
        assert_eq!(
            (t.info.plural.as_str(), t.name.as_deref(), t.namespace.as_deref()),
            ("namespaces", Some("team"), None)
        );
        let (t, _) = resolve_path("/api/v1/namespaces/team/status").unwrap();
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let (t, _) = resolve_path("/api/v1/namespaces/team/configmaps").unwrap();
        assert_eq!(
            (t.info.plural.as_str(), t.namespace.as_deref(), t.name.as_deref()),
            ("configmaps", Some("team"), None)
        );
        let (t, w) = resolve_path("/apis/apps/v1/watch/namespaces/a/deployments/web").unwrap();
        assert!(w);
        assert_eq!(t.name.as_deref(), Some("web"));
        let (t, _) = resolve_path("/apis/apps/v1/namespaces/a/deployments/web/scale").unwrap();
        assert_eq!(t.subresource.as_deref(), Some("scale"));
        let (t, _) = resolve_path("/apis/apps/v1/deployments").unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        for bad in [
            "/api/v1/configmaps/x",
            "/api/v1/namespaces/a/namespaces",
            "/api/v1/namespaces/a/configmaps/x/scale",
            "/apis/apps/v1/namespaces/a/nothings",
            "/apis/apps/v2/deployments",
        ] {
            assert_eq!(resolve_path(bad).unwrap_err().code, 404, "{bad}");
        }
        assert!(matches!(parse_route("/openapi/v3/apis/apps/v1"), Route::OpenApiDocument(d) if d == "apis/apps/v1"));
    }

    #[test]
    fn queries_decode_percent_and_plus() {
        let q = Query::parse("labelSelector=app%20in%20(a%2Cb)&x=a+b&watch=1&dryRun=All");
        assert_eq!(q.get("labelSelector"), Some("app in (a,b)"));
        assert_eq!(q.get("x"), Some("a b"));
        assert!(q.flag("watch"));
        assert_eq!(q.all("dryRun").collect::<Vec<_>>(), ["All"]);
        assert_eq!(percent_decode("100%", false), "100%");
    }
}
