//! A test double for the Kubernetes API server: stateful, in memory, served
//! over real HTTP on `127.0.0.1`, for the Kubernetes-mode scenario tests (no
//! cluster can run here).
//!
//! It keeps objects as JSON and answers the REST calls Kubernetes mode makes
//! (`src/runtime/kubernetes`, `src/store/kubernetes`, `src/source/pods`)
//! the way an API server does, for the resources it uses: Pods (with
//! `status` and `log`), PersistentVolumeClaims (with `status`),
//! Leases, Events (`events.k8s.io/v1` and core), and IcarusJobs (with
//! `status`). What it models:
//!
//! - create: a uid, a `resourceVersion` from one global counter, a
//!   `creationTimestamp`, generation 1; a `generateName` without a `name`
//!   becomes the prefix and five random characters of the API server's
//!   alphabet; 409 `AlreadyExists`.
//!   The status of a resource with a status subresource is not taken from a
//!   create (a Pod or claim starts `Pending`).
//! - get, list (equality and existence `labelSelector`s), and watch
//!   (newline-delimited `{"type", "object"}` events after the given
//!   `resourceVersion`, or the current objects first for none or `0` and for
//!   `sendInitialEvents`, which ends with its bookmark; `timeoutSeconds`).
//!   The whole history is kept, so a watch never gets 410 `Gone`.
//! - metadata-only reads, as `Api::list_metadata`, `get_metadata` and
//!   `watch_metadata` ask for them in the `Accept` header
//!   (`application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` for
//!   a list, `as=PartialObjectMetadata` for a get or a watch): objects
//!   reduced to their metadata, of kind `PartialObjectMetadata[List]` in
//!   `meta.k8s.io/v1`; an `Accept` nothing of which can be served is 406.
//! - replace (PUT) with a `resourceVersion` precondition (409 `Conflict`),
//!   JSON merge patch (RFC 7386) with the same precondition if the patch
//!   names a version; through the main resource the status is left alone,
//!   through `/status` only the status changes; the generation grows only
//!   when something other than metadata and status changes, and a write that
//!   changes nothing changes nothing (no new version, no watch event).
//! - delete: immediate (no graceful deletion, no finalizers but the one
//!   below), then the garbage collector's cascade to every object whose
//!   `ownerReferences` name the deleted uid, unless `propagationPolicy:
//!   Orphan`. With `propagationPolicy: Foreground` (`kubectl delete
//!   --cascade=foreground`) an owner with dependents is first marked (a
//!   `deletionTimestamp` and the `foregroundDeletion` finalizer), its
//!   dependents are deleted, and only then (a collector's lag later) the
//!   owner. The collector acts in
//!   the same instant, unless [`KubeApi::collect_garbage_after`] gives it the
//!   lag kube-controller-manager's has (it learns of deletions through its
//!   own watches).
//! - errors as `Status` objects with the API server's reasons and codes.
//!
//! Not modelled (refused with a `Status`, never silently accepted): JSON
//! patch, strategic merge and server-side apply; set-based label selectors;
//! field selectors; deleting collections. Paging is not modelled either: a
//! list returns everything at once, without a `continue` token, which a
//! client asking for a `limit` must accept.
//!
//! Tests also read and change its state directly ([`KubeApi::object`],
//! [`KubeApi::set_log`]), inject faults ([`KubeApi::fail_next`]), hold back
//! the watch events of a kind as a lagging watch would
//! ([`KubeApi::hold_watch_events`]), and read
//! the journal of requests ([`KubeApi::requests`]), each tagged with who sent
//! it: a client from [`KubeApi::client_as`] names its actor in a header, and
//! requests without one are the orchestrator's.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The namespace the scenarios use.
pub const NAMESPACE: &str = "icarus";

/// The header a test's own client names its actor in.
const ACTOR_HEADER: &str = "x-test-actor";
/// The actor of requests without that header.
pub const ORCHESTRATOR: &str = "orchestrator";

/// A resource type the double serves.
#[derive(Debug, PartialEq, Eq)]
struct Kind {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    /// Writes to the main resource leave `.status` alone; `/status` writes only it.
    status_subresource: bool,
}

impl Kind {
    /// `plural[.group]`, as kubectl and RBAC name it.
    fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The status an object of this kind has before anything reports on it.
    fn initial_status(&self) -> Option<Value> {
        match self.plural {
            "pods" | "persistentvolumeclaims" => Some(json!({"phase": "Pending"})),
            _ => None,
        }
    }
}

const KINDS: &[Kind] = &[
    Kind {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        status_subresource: true,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        status_subresource: true,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        status_subresource: false,
    },
    Kind {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        status_subresource: false,
    },
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        status_subresource: false,
    },
    Kind {
        group: "icarus.dev",
        version: "v1alpha1",
        plural: "icarusjobs",
        kind: "IcarusJob",
        status_subresource: true,
    },
    // What metrics-server serves (`get` only; a test writes the windows).
    Kind {
        group: "metrics.k8s.io",
        version: "v1beta1",
        plural: "pods",
        kind: "PodMetrics",
        status_subresource: false,
    },
];

fn kind_of(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// Where an object lives: `plural[.group]`, namespace, name.
type ObjectKey = (String, String, String);

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
struct Change {
    resource_version: u64,
    resource: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

/// One request the double received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// [`ORCHESTRATOR`], or the name a test's client gave.
    pub actor: String,
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub content_type: Option<String>,
    /// The `Accept` header, as sent.
    pub accept: Option<String>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// `plural[.group]` (empty for a path the double does not serve).
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, as RBAC says.
    pub verb: &'static str,
    /// The HTTP status it was answered with.
    pub code: u16,
}

/// An error to answer instead of serving a matching request.
#[derive(Debug, Clone)]
pub struct Fault {
    pub verb: &'static str,
    /// `plural[.group]`.
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub code: u16,
    /// The `Status` message; a generic one when `None`.
    pub message: Option<&'static str>,
    /// How many matching requests get the error.
    pub times: usize,
    /// A further condition on the request (its body, say).
    pub only_if: Option<fn(&Recorded) -> bool>,
}

#[derive(Default)]
struct World {
    resource_version: u64,
    objects: BTreeMap<ObjectKey, Value>,
    history: Vec<Change>,
    logs: HashMap<(String, String), String>,
    requests: Vec<Recorded>,
    faults: Vec<Fault>,
    /// Resources (`plural[.group]`) whose changes watches do not get yet.
    held: HashSet<String>,
    /// How long after a deletion the garbage collector acts on it.
    gc_delay: Duration,
}

struct Inner {
    world: Mutex<World>,
    /// The latest resource version, for watches to wait on.
    changed: watch::Sender<u64>,
}

/// The running double. Cloning shares it; dropping the last clone stops it.
#[derive(Clone)]
pub struct KubeApi {
    inner: Arc<Inner>,
    address: SocketAddr,
    _server: Arc<AbortOnDrop>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl KubeApi {
    /// Starts serving on an ephemeral port of `127.0.0.1`.
    pub async fn start() -> KubeApi {
        let inner = Arc::new(Inner {
            world: Mutex::new(World::default()),
            changed: watch::channel(0).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KubeApi {
            inner,
            address,
            _server: Arc::new(AbortOnDrop(server)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A client as the orchestrator gets one (namespace `icarus`).
    pub fn client(&self) -> kube::Client {
        self.make_client(None)
    }

    /// A client whose requests are journalled as `actor`'s (a test playing
    /// the kubelet or kubectl) and never hit injected faults.
    pub fn client_as(&self, actor: &str) -> kube::Client {
        self.make_client(Some(actor))
    }

    fn make_client(&self, actor: Option<&str>) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().unwrap());
        config.default_namespace = NAMESPACE.to_owned();
        if let Some(actor) = actor {
            config.headers.push((
                header::HeaderName::from_static(ACTOR_HEADER),
                actor.parse().unwrap(),
            ));
        }
        // Built as `icarus serve` builds its client.
        icarus::cluster::client(config).unwrap()
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.inner)
    }

    /// The object `resource` (`plural[.group]`) `name` in `icarus`, as stored now.
    pub fn object(&self, resource: &str, name: &str) -> Option<Value> {
        let key = (resource.to_owned(), NAMESPACE.to_owned(), name.to_owned());
        self.world().objects.get(&key).cloned()
    }

    /// Every object of `resource` in `icarus`, by name.
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        self.world()
            .objects
            .iter()
            .filter(|((r, ns, _), _)| r == resource && ns == NAMESPACE)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// What `pods/{pod}/log` answers from now on (the container's output).
    pub fn set_log(&self, pod: &str, text: &str) {
        let key = (NAMESPACE.to_owned(), pod.to_owned());
        self.world().logs.insert(key, text.to_owned());
    }

    /// Answers the next `fault.times` matching requests from the
    /// orchestrator with `fault.code` instead of serving them.
    pub fn fail_next(&self, fault: Fault) {
        self.world().faults.push(fault);
    }

    /// Holds back the changes of `resource` (`plural[.group]`) from every
    /// watch, as a lagging watch would, until
    /// [`KubeApi::release_watch_events`]; reads and writes go on as usual.
    pub fn hold_watch_events(&self, resource: &str) {
        self.world().held.insert(resource.to_owned());
    }

    /// Delivers the held changes of `resource`, in order, and every one after.
    pub fn release_watch_events(&self, resource: &str) {
        self.world().held.remove(resource);
        self.inner.changed.send_modify(|_| {});
    }

    /// From now on the garbage collector deletes dependents `delay` after
    /// their owner's deletion rather than in the same instant.
    pub fn collect_garbage_after(&self, delay: Duration) {
        self.world().gc_delay = delay;
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.world().requests.clone()
    }

    /// A one-line summary of every object, for failure messages.
    pub fn summary(&self) -> String {
        let world = self.world();
        let lines: Vec<String> = world
            .objects
            .iter()
            .filter(|((resource, _, _), _)| !resource.starts_with("events"))
            .map(|((resource, _, name), object)| {
                let phase = object["status"]["phase"].as_str().unwrap_or("-");
                let reason = object["status"]["reason"].as_str().unwrap_or("");
                format!("{resource}/{name}: {phase} {reason}")
            })
            .collect();
        format!(
            "resourceVersion {}; {} requests\n  {}",
            world.resource_version,
            world.requests.len(),
            lines.join("\n  ")
        )
    }
}

fn lock(inner: &Inner) -> MutexGuard<'_, World> {
    inner
        .world
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a request's path names.
struct Target {
    kind: &'static Kind,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

/// `/api/v1/namespaces/{ns}/{plural}[/{name}[/{sub}]]` or
/// `/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}[/{sub}]]`.
fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let ["namespaces", namespace, plural, rest @ ..] = rest else {
        return None;
    };
    if rest.len() > 2 {
        return None;
    }
    Some(Target {
        kind: kind_of(group, version, plural)?,
        namespace: (*namespace).to_owned(),
        name: rest.first().map(|s| (*s).to_owned()),
        subresource: rest.get(1).map(|s| (*s).to_owned()),
    })
}

fn verb_of(method: &Method, named: bool, query: &HashMap<String, String>) -> &'static str {
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    match *method {
        Method::GET if watching => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// A Kubernetes `Status` error.
fn failure(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

fn not_found(resource: &str, name: &str) -> Response {
    failure(404, "NotFound", format!("{resource} \"{name}\" not found"))
}

fn conflict(resource: &str, name: &str) -> Response {
    failure(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
    )
}

fn ok(code: StatusCode, object: &Value) -> Response {
    (code, axum::Json(object.clone())).into_response()
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (index, response) = serve(&inner, request).await;
    lock(&inner).requests[index].code = response.status().as_u16();
    response
}

/// Journals the request, then answers it; returns its place in the journal.
async fn serve(inner: &Arc<Inner>, request: Request) -> (usize, Response) {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let actor = parts
        .headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(ORCHESTRATOR)
        .to_owned();
    let header_text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header_text(header::CONTENT_TYPE);
    let accept = header_text(header::ACCEPT);
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = parts.uri.path().to_owned();
    let target = parse_path(&path);
    let verb = verb_of(
        &parts.method,
        target.as_ref().is_some_and(|t| t.name.is_some()),
        &query,
    );
    let recorded = Recorded {
        actor,
        method: parts.method,
        path,
        query,
        content_type,
        accept,
        body,
        resource: target
            .as_ref()
            .map(|t| t.kind.resource())
            .unwrap_or_default(),
        name: target.as_ref().and_then(|t| t.name.clone()),
        subresource: target.as_ref().and_then(|t| t.subresource.clone()),
        verb,
        code: 0,
    };
    let index = {
        let mut world = lock(inner);
        world.requests.push(recorded.clone());
        let index = world.requests.len() - 1;
        if recorded.actor == ORCHESTRATOR
            && let Some(fault) = take_fault(&mut world, &recorded)
        {
            let name = recorded.name.clone().unwrap_or_default();
            let response = match (fault.code, fault.message) {
                (409, None) => conflict(&recorded.resource, &name),
                (code, message) => failure(
                    code,
                    reason_of(code),
                    message.map_or_else(|| format!("injected error {code}"), str::to_owned),
                ),
            };
            return (index, response);
        }
        index
    };
    (index, answer(inner, target, &recorded))
}

/// Answers a request the double journalled.
fn answer(inner: &Arc<Inner>, target: Option<Target>, request: &Recorded) -> Response {
    let Some(target) = target else {
        return failure(
            404,
            "NotFound",
            "the server could not find the requested resource".to_owned(),
        );
    };
    let query = &request.query;
    let body = request.body.clone();
    let reading = matches!(request.verb, "get" | "list" | "watch") && target.subresource.is_none();
    let rendering = if reading {
        match rendering_of(request.accept.as_deref(), request.verb == "list") {
            Some(rendering) => rendering,
            None => {
                return failure(
                    406,
                    "NotAcceptable",
                    format!(
                        "only the following media types are accepted: application/json, {} (this test double); not {:?}",
                        if request.verb == "list" {
                            METADATA_LIST_MEDIA_TYPE
                        } else {
                            METADATA_MEDIA_TYPE
                        },
                        request.accept
                    ),
                );
            }
        }
    } else {
        Rendering::Full
    };
    match (
        request.verb,
        target.name.clone(),
        target.subresource.as_deref(),
    ) {
        ("list", None, None) => list(inner, &target, query, rendering),
        ("watch", None, None) => watch_stream(inner, &target, query, rendering),
        ("get", Some(name), None) => get(inner, &target, &name, rendering),
        ("get", Some(name), Some("log")) if target.kind.plural == "pods" => {
            pod_log(inner, &target, &name, query)
        }
        ("create", None, None) => create(inner, &target, body),
        ("update", Some(name), sub @ (None | Some("status"))) => {
            let status_only = sub.is_some() && target.kind.status_subresource;
            update(inner, &target, &name, status_only, Write::Replace(body))
        }
        ("patch", Some(name), sub @ (None | Some("status"))) => {
            let content_type = request.content_type.as_deref();
            if !content_type.is_some_and(|t| t.starts_with("application/merge-patch+json")) {
                return failure(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "this test double applies only JSON merge patches, not {content_type:?}"
                    ),
                );
            }
            let status_only = sub.is_some() && target.kind.status_subresource;
            update(inner, &target, &name, status_only, Write::MergePatch(body))
        }
        ("delete", Some(name), None) => delete(inner, &target, &name, &body),
        (verb, _, _) => failure(
            405,
            "MethodNotAllowed",
            format!(
                "{} {} ({verb} {}) is not served by this test double",
                request.method,
                request.path,
                target.kind.resource()
            ),
        ),
    }
}

const METADATA_MEDIA_TYPE: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
const METADATA_LIST_MEDIA_TYPE: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

/// How objects are answered: whole, or as `PartialObjectMetadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rendering {
    Full,
    Metadata,
}

impl Rendering {
    fn object(self, object: &Value) -> Value {
        match self {
            Rendering::Full => object.clone(),
            Rendering::Metadata => json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": object["metadata"],
            }),
        }
    }
}

/// The first media type of `accept` the double can answer a read with
/// (`list` for a list), as the API server negotiates it; `None` if none.
fn rendering_of(accept: Option<&str>, list: bool) -> Option<Rendering> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(Rendering::Full);
    };
    accept.split(',').find_map(|media_type| {
        let mut parts = media_type.split(';').map(str::trim);
        let essence = parts.next().unwrap_or_default();
        if !matches!(essence, "application/json" | "application/*" | "*/*") {
            return None;
        }
        let parameters: HashMap<&str, &str> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let Some(shape) = parameters.get("as") else {
            return Some(Rendering::Full);
        };
        let wanted = if list {
            "PartialObjectMetadataList"
        } else {
            "PartialObjectMetadata"
        };
        let meta_group = parameters.get("g") == Some(&"meta.k8s.io")
            && matches!(parameters.get("v"), Some(&("v1" | "v1beta1")));
        (*shape == wanted && meta_group).then_some(Rendering::Metadata)
    })
}

/// The `reason` an API server gives with `code`.
fn reason_of(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

fn take_fault(world: &mut World, request: &Recorded) -> Option<Fault> {
    let index = world.faults.iter().position(|f| {
        f.times > 0
            && f.verb == request.verb
            && f.resource == request.resource
            && f.subresource == request.subresource.as_deref()
            && f.only_if.is_none_or(|condition| condition(request))
    })?;
    let fault = &mut world.faults[index];
    fault.times -= 1;
    Some(fault.clone())
}

/// One label selector requirement; only equality and existence are modelled.
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

fn parse_selector(text: &str) -> Result<Vec<Requirement>, String> {
    let mut requirements = Vec::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if term.contains('(') || term.contains(' ') {
            return Err(format!(
                "set-based selector {term:?} is not supported by this test double"
            ));
        }
        let requirement = if let Some((key, value)) = term.split_once("!=") {
            Requirement::NotEquals(key.to_owned(), value.to_owned())
        } else if let Some((key, value)) = term.split_once("==") {
            Requirement::Equals(key.to_owned(), value.to_owned())
        } else if let Some((key, value)) = term.split_once('=') {
            Requirement::Equals(key.to_owned(), value.to_owned())
        } else if let Some(key) = term.strip_prefix('!') {
            Requirement::Absent(key.to_owned())
        } else {
            Requirement::Exists(term.to_owned())
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

fn selects(requirements: &[Requirement], object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    requirements.iter().all(|r| match r {
        Requirement::Equals(key, value) => label(key) == Some(value.as_str()),
        Requirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
        Requirement::Exists(key) => label(key).is_some(),
        Requirement::Absent(key) => label(key).is_none(),
    })
}

/// The label selector of a list or watch, or why it cannot be served.
fn selector_of(query: &HashMap<String, String>) -> Result<Vec<Requirement>, String> {
    if query.get("fieldSelector").is_some_and(|s| !s.is_empty()) {
        return Err("field selectors are not supported by this test double".to_owned());
    }
    parse_selector(query.get("labelSelector").map_or("", String::as_str))
}

fn list(
    inner: &Inner,
    target: &Target,
    query: &HashMap<String, String>,
    rendering: Rendering,
) -> Response {
    let selector = match selector_of(query) {
        Ok(selector) => selector,
        Err(message) => return failure(400, "BadRequest", message),
    };
    let world = lock(inner);
    let resource = target.kind.resource();
    let items: Vec<Value> = world
        .objects
        .iter()
        .filter(|((r, ns, _), object)| {
            *r == resource && *ns == target.namespace && selects(&selector, object)
        })
        .map(|(_, object)| rendering.object(object))
        .collect();
    let (api_version, kind) = match rendering {
        Rendering::Full => (
            target.kind.api_version(),
            format!("{}List", target.kind.kind),
        ),
        Rendering::Metadata => (
            "meta.k8s.io/v1".to_owned(),
            "PartialObjectMetadataList".to_owned(),
        ),
    };
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"resourceVersion": world.resource_version.to_string()},
        "items": items,
    });
    ok(StatusCode::OK, &body)
}

fn watch_event(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

/// A streaming watch: the events after the requested version (or the
/// current objects first), then every change as it happens.
fn watch_stream(
    inner: &Arc<Inner>,
    target: &Target,
    query: &HashMap<String, String>,
    rendering: Rendering,
) -> Response {
    let selector = match selector_of(query) {
        Ok(selector) => selector,
        Err(message) => return failure(400, "BadRequest", message),
    };
    let resource = target.kind.resource();
    let namespace = target.namespace.clone();
    let requested = query.get("resourceVersion").cloned().unwrap_or_default();
    let initial_events = query.get("sendInitialEvents").map(String::as_str) == Some("true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let mut pending = VecDeque::new();
    let mut changes = inner.changed.subscribe();
    let position = {
        let world = lock(inner);
        changes.borrow_and_update();
        let from_now = requested.is_empty() || requested == "0" || initial_events;
        if from_now {
            for ((r, ns, _), object) in &world.objects {
                if *r == resource && *ns == namespace && selects(&selector, object) {
                    pending.push_back(watch_event("ADDED", &rendering.object(object)));
                }
            }
        }
        if initial_events {
            let bookmark = json!({
                "kind": target.kind.kind, "apiVersion": target.kind.api_version(),
                "metadata": {
                    "resourceVersion": world.resource_version.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            });
            pending.push_back(watch_event("BOOKMARK", &rendering.object(&bookmark)));
        }
        if from_now {
            world.history.len()
        } else {
            let Ok(after) = requested.parse::<u64>() else {
                return failure(
                    400,
                    "BadRequest",
                    format!("invalid resourceVersion {requested:?}"),
                );
            };
            world
                .history
                .iter()
                .position(|c| c.resource_version > after)
                .unwrap_or(world.history.len())
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let state = (
        Arc::clone(inner),
        changes,
        position,
        pending,
        resource,
        namespace,
        selector,
    );
    let stream = futures::stream::unfold(state, move |mut state| async move {
        let (inner, changes, position, pending, resource, namespace, selector) = &mut state;
        loop {
            if let Some(line) = pending.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(line), state));
            }
            {
                let world = lock(inner);
                changes.borrow_and_update();
                if !world.held.contains(resource.as_str()) {
                    for change in &world.history[*position..] {
                        if change.resource == *resource
                            && change.namespace == *namespace
                            && selects(selector, &change.object)
                        {
                            let object = rendering.object(&change.object);
                            pending.push_back(watch_event(change.kind, &object));
                        }
                    }
                    *position = world.history.len();
                }
            }
            if !pending.is_empty() {
                continue;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn get(inner: &Inner, target: &Target, name: &str, rendering: Rendering) -> Response {
    let world = lock(inner);
    let resource = target.kind.resource();
    let key = (resource.clone(), target.namespace.clone(), name.to_owned());
    match world.objects.get(&key) {
        Some(object) => ok(StatusCode::OK, &rendering.object(object)),
        None => not_found(&resource, name),
    }
}

/// `pods/{name}/log`: the text the test set, honouring `tailLines` and `limitBytes`.
fn pod_log(
    inner: &Inner,
    target: &Target,
    name: &str,
    query: &HashMap<String, String>,
) -> Response {
    let world = lock(inner);
    let key = ("pods".to_owned(), target.namespace.clone(), name.to_owned());
    if !world.objects.contains_key(&key) {
        return not_found("pods", name);
    }
    let text = world
        .logs
        .get(&(target.namespace.clone(), name.to_owned()))
        .cloned()
        .unwrap_or_default();
    let mut text = match query.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let kept = &lines[lines.len().saturating_sub(n)..];
            kept.iter().map(|l| format!("{l}\n")).collect()
        }
        None => text,
    };
    if let Some(limit) = query
        .get("limitBytes")
        .and_then(|n| n.parse::<usize>().ok())
    {
        while text.len() > limit {
            text.pop();
        }
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Records a change: a new resource version, stamped on the object, in the
/// history, and wakes the watches.
fn commit(
    inner: &Inner,
    world: &mut World,
    key: &ObjectKey,
    kind: &'static str,
    mut object: Value,
) -> Value {
    world.resource_version += 1;
    let version = world.resource_version;
    object["metadata"]["resourceVersion"] = json!(version.to_string());
    if kind == "DELETED" {
        world.objects.remove(key);
    } else {
        world.objects.insert(key.clone(), object.clone());
    }
    world.history.push(Change {
        resource_version: version,
        resource: key.0.clone(),
        namespace: key.1.clone(),
        kind,
        object: object.clone(),
    });
    inner.changed.send_replace(version);
    object
}

/// The characters the API server draws generated name suffixes from
/// (`k8s.io/apimachinery/pkg/util/rand`: no vowels, no confusable digits).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Five random characters of [`NAME_ALPHABET`], as `generateName` appends.
fn random_suffix() -> String {
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|byte| char::from(NAME_ALPHABET[usize::from(*byte) % NAME_ALPHABET.len()]))
        .collect()
}

fn create(inner: &Inner, target: &Target, mut object: Value) -> Response {
    let resource = target.kind.resource();
    if !object.is_object() {
        return failure(
            400,
            "BadRequest",
            "the body is not a JSON object".to_owned(),
        );
    }
    let mut world = lock(inner);
    let metadata = &mut object["metadata"];
    if !metadata.is_object() {
        *metadata = json!({});
    }
    if metadata["name"].as_str().is_none_or(str::is_empty) {
        match metadata["generateName"].as_str() {
            Some(prefix) => metadata["name"] = json!(format!("{prefix}{}", random_suffix())),
            None => {
                return failure(
                    422,
                    "Invalid",
                    format!("{resource} is invalid: metadata.name: Required value"),
                );
            }
        }
    }
    match metadata["namespace"].as_str() {
        Some(ns) if ns != target.namespace => {
            return failure(
                400,
                "BadRequest",
                "the namespace of the object does not match the namespace of the request"
                    .to_owned(),
            );
        }
        _ => metadata["namespace"] = json!(target.namespace),
    }
    let name = metadata["name"].as_str().unwrap().to_owned();
    let key = (resource.clone(), target.namespace.clone(), name.clone());
    if world.objects.contains_key(&key) {
        return failure(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        );
    }
    metadata["uid"] = json!(uuid::Uuid::new_v4().to_string());
    metadata["creationTimestamp"] = json!(now());
    metadata["generation"] = json!(1);
    if let Some(map) = metadata.as_object_mut() {
        map.remove("deletionTimestamp");
    }
    object["apiVersion"] = json!(target.kind.api_version());
    object["kind"] = json!(target.kind.kind);
    if target.kind.status_subresource {
        match target.kind.initial_status() {
            Some(status) => object["status"] = status,
            None => {
                object.as_object_mut().unwrap().remove("status");
            }
        }
    }
    let created = commit(inner, &mut world, &key, "ADDED", object);
    ok(StatusCode::CREATED, &created)
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().unwrap();
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The object without metadata and status: what a generation counts.
fn desired_part(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(map) = rest.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    rest
}

enum Write {
    Replace(Value),
    MergePatch(Value),
}

fn update(inner: &Inner, target: &Target, name: &str, status_only: bool, write: Write) -> Response {
    let resource = target.kind.resource();
    let key = (resource.clone(), target.namespace.clone(), name.to_owned());
    let mut world = lock(inner);
    let Some(old) = world.objects.get(&key).cloned() else {
        return not_found(&resource, name);
    };
    let (written, precondition) = match write {
        Write::Replace(object) => {
            if object["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n != name)
            {
                return failure(
                    400,
                    "BadRequest",
                    "the name of the object does not match the name in the URL".to_owned(),
                );
            }
            let version = object["metadata"]["resourceVersion"].clone();
            (object, version)
        }
        Write::MergePatch(patch) => {
            if !patch.is_object() {
                return failure(
                    400,
                    "BadRequest",
                    "the patch is not a JSON object".to_owned(),
                );
            }
            let mut patched = old.clone();
            merge_patch(&mut patched, &patch);
            (patched, patch["metadata"]["resourceVersion"].clone())
        }
    };
    if let Some(version) = precondition.as_str()
        && version != old["metadata"]["resourceVersion"]
    {
        return conflict(&resource, name);
    }
    let mut new = if status_only {
        let mut new = old.clone();
        match written.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                new.as_object_mut().unwrap().remove("status");
            }
        }
        new
    } else {
        let mut new = written;
        if target.kind.status_subresource {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    new.as_object_mut().unwrap().remove("status");
                }
            }
        }
        new
    };
    // What the server owns stays the server's.
    for field in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "generation",
        "resourceVersion",
    ] {
        new["metadata"][field] = old["metadata"][field].clone();
    }
    new["apiVersion"] = old["apiVersion"].clone();
    new["kind"] = old["kind"].clone();
    if new == old {
        return ok(StatusCode::OK, &old);
    }
    if desired_part(&new) != desired_part(&old) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
        new["metadata"]["generation"] = json!(generation + 1);
    }
    let updated = commit(inner, &mut world, &key, "MODIFIED", new);
    ok(StatusCode::OK, &updated)
}

fn delete(inner: &Arc<Inner>, target: &Target, name: &str, options: &Value) -> Response {
    let resource = target.kind.resource();
    let key = (resource.clone(), target.namespace.clone(), name.to_owned());
    let mut world = lock(inner);
    let Some(object) = world.objects.get(&key).cloned() else {
        return not_found(&resource, name);
    };
    let preconditions = &options["preconditions"];
    let stale = |field: &str| {
        preconditions[field]
            .as_str()
            .is_some_and(|expected| object["metadata"][field] != expected)
    };
    if stale("resourceVersion") || stale("uid") {
        return conflict(&resource, name);
    }
    match options["propagationPolicy"].as_str() {
        Some("Orphan") => {
            let deleted = commit(inner, &mut world, &key, "DELETED", object);
            ok(StatusCode::OK, &deleted)
        }
        Some("Foreground") if !dependents(&world, &object).is_empty() => {
            // The owner stays, marked, until the collector has deleted its
            // dependents; then the collector removes it.
            let mut marked = object;
            marked["metadata"]["deletionTimestamp"] = json!(now());
            let finalizers = marked["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !finalizers.contains(&json!("foregroundDeletion")) {
                let mut finalizers = finalizers;
                finalizers.push(json!("foregroundDeletion"));
                marked["metadata"]["finalizers"] = json!(finalizers);
            }
            let marked = commit(inner, &mut world, &key, "MODIFIED", marked);
            let owner = marked.clone();
            let delay = world.gc_delay;
            if delay.is_zero() {
                collect_garbage(inner, &mut world, &owner);
                finish_foreground_deletion(inner, &mut world, &key, &owner);
            } else {
                // The collector sees the dependents gone through its own
                // watches: the owner goes a lag after them.
                drop(world);
                let inner = Arc::clone(inner);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    collect_garbage(&inner, &mut lock(&inner), &owner);
                    tokio::time::sleep(delay).await;
                    finish_foreground_deletion(&inner, &mut lock(&inner), &key, &owner);
                });
            }
            ok(StatusCode::OK, &marked)
        }
        _ => {
            let deleted = commit(inner, &mut world, &key, "DELETED", object);
            let owner = deleted.clone();
            after_gc_delay(inner, world, move |inner, world| {
                collect_garbage(inner, world, &owner);
            });
            ok(StatusCode::OK, &deleted)
        }
    }
}

/// Removes the owner marked for foreground deletion, unless it is another
/// object by now.
fn finish_foreground_deletion(inner: &Inner, world: &mut World, key: &ObjectKey, owner: &Value) {
    if let Some(current) = world.objects.get(key).cloned()
        && current["metadata"]["uid"] == owner["metadata"]["uid"]
    {
        commit(inner, world, key, "DELETED", current);
    }
}

/// Runs the collector's `work` now (no lag set) or once the lag has passed.
fn after_gc_delay(
    inner: &Arc<Inner>,
    mut world: MutexGuard<'_, World>,
    work: impl FnOnce(&Inner, &mut World) + Send + 'static,
) {
    let delay = world.gc_delay;
    if delay.is_zero() {
        work(inner, &mut world);
        return;
    }
    drop(world);
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut world = lock(&inner);
        work(&inner, &mut world);
    });
}

/// The objects whose `ownerReferences` name `owner`.
fn dependents(world: &World, owner: &Value) -> Vec<(ObjectKey, Value)> {
    let Some(uid) = owner["metadata"]["uid"].as_str() else {
        return Vec::new();
    };
    world
        .objects
        .iter()
        .filter(|(_, object)| {
            object["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|owners| owners.iter().any(|o| o["uid"] == uid))
        })
        .map(|(key, object)| (key.clone(), object.clone()))
        .collect()
}

/// The garbage collector: deletes what the deleted object owned, and so on.
fn collect_garbage(inner: &Inner, world: &mut World, owner: &Value) {
    for (key, object) in dependents(world, owner) {
        let deleted = commit(inner, world, &key, "DELETED", object);
        collect_garbage(inner, world, &deleted);
    }
}

#[cfg(test)]
mod tests {
    //! The double itself, through a real kube client.

    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    use serde_json::json;

    use super::*;

    fn pod(name: &str, labels: Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "agent", "image": "busybox"}]},
            "status": {"phase": "Succeeded"},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn mock_api_double_creates_gets_lists_patches_and_deletes_like_an_api_server() {
        let server = KubeApi::start().await;
        let pods: Api<Pod> = Api::default_namespaced(server.client());
        let created = pods
            .create(
                &PostParams::default(),
                &pod("a", json!({"app": "x", "tier": "1"})),
            )
            .await
            .unwrap();
        assert!(created.metadata.uid.is_some());
        assert_eq!(created.metadata.generation, Some(1));
        assert_eq!(
            created.status.unwrap().phase.as_deref(),
            Some("Pending"),
            "a create does not set the status"
        );
        pods.create(&PostParams::default(), &pod("b", json!({"app": "y"})))
            .await
            .unwrap();
        let again = pods
            .create(&PostParams::default(), &pod("a", json!({})))
            .await
            .unwrap_err();
        assert!(
            matches!(again, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
        );

        let selected = pods
            .list(&ListParams::default().labels("app=x,tier=1"))
            .await
            .unwrap();
        assert_eq!(selected.items.len(), 1);
        assert!(pods.get_opt("missing").await.unwrap().is_none());

        let status = json!({"status": {"phase": "Running"}, "spec": {"nodeName": "ignored"}});
        let patched = pods
            .patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        assert_eq!(patched.status.unwrap().phase.as_deref(), Some("Running"));
        assert_eq!(
            patched.spec.unwrap().node_name,
            None,
            "/status writes only the status"
        );
        assert_eq!(patched.metadata.generation, Some(1));
        let spec = json!({"spec": {"activeDeadlineSeconds": 5}, "status": {"phase": "Failed"}});
        let patched = pods
            .patch("a", &PatchParams::default(), &Patch::Merge(&spec))
            .await
            .unwrap();
        assert_eq!(patched.metadata.generation, Some(2));
        assert_eq!(
            patched.status.unwrap().phase.as_deref(),
            Some("Running"),
            "the main resource leaves the status alone"
        );

        let mut stale = pods.get("a").await.unwrap();
        stale.metadata.resource_version = Some("1".to_owned());
        let replaced = pods.replace("a", &PostParams::default(), &stale).await;
        assert!(matches!(replaced, Err(kube::Error::Api(s)) if s.code == 409));

        pods.delete("a", &DeleteParams::default()).await.unwrap();
        let gone = pods.get("a").await.unwrap_err();
        assert!(matches!(gone, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"));
    }

    #[tokio::test]
    async fn mock_api_double_watches_from_a_version_and_collects_owned_objects() {
        use futures::StreamExt;
        let server = KubeApi::start().await;
        let pods: Api<Pod> = Api::default_namespaced(server.client());
        let owner = pods
            .create(&PostParams::default(), &pod("owner", json!({})))
            .await
            .unwrap();
        let version = owner.metadata.resource_version.clone().unwrap();
        let maps: Api<ConfigMap> = Api::default_namespaced(server.client());
        assert!(
            maps.list(&ListParams::default()).await.is_err(),
            "unserved kinds are 404"
        );
        let mut dependent = pod("dependent", json!({"app": "x"}));
        dependent.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod", "name": "owner",
                "uid": owner.metadata.uid.clone().unwrap(),
            }))
            .unwrap(),
        ]);
        pods.create(&PostParams::default(), &dependent)
            .await
            .unwrap();
        let params = kube::api::WatchParams::default().labels("app=x");
        let mut events = pods.watch(&params, &version).await.unwrap().boxed();
        let mut next_event = async || {
            tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("a watch event within 10 s")
                .unwrap()
                .unwrap()
        };
        let first = next_event().await;
        assert!(
            matches!(first, kube::api::WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("dependent"))
        );
        pods.delete("owner", &DeleteParams::default())
            .await
            .unwrap();
        let next = next_event().await;
        assert!(
            matches!(next, kube::api::WatchEvent::Deleted(p) if p.metadata.name.as_deref() == Some("dependent")),
            "the garbage collector deleted the dependent"
        );
        assert!(server.objects("pods").is_empty());
    }

    fn owned_by(owner: &Pod, name: &str) -> Pod {
        let mut dependent = pod(name, json!({}));
        dependent.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "name": owner.metadata.name.clone().unwrap(),
                "uid": owner.metadata.uid.clone().unwrap(),
            }))
            .unwrap(),
        ]);
        dependent
    }

    #[tokio::test]
    async fn mock_api_double_generates_names_and_answers_metadata_only_reads() {
        let server = KubeApi::start().await;
        let pods: Api<Pod> = Api::default_namespaced(server.client());
        let mut generated = pod("", json!({}));
        generated.metadata.name = None;
        generated.metadata.generate_name = Some("job-".to_owned());
        let created = pods
            .create(&PostParams::default(), &generated)
            .await
            .unwrap();
        let name = created.metadata.name.clone().unwrap();
        let suffix = name.strip_prefix("job-").unwrap();
        assert_eq!(suffix.len(), 5, "{name}");
        assert!(suffix.bytes().all(|b| NAME_ALPHABET.contains(&b)), "{name}");
        let second = pods
            .create(&PostParams::default(), &generated)
            .await
            .unwrap();
        assert_ne!(second.metadata.name, created.metadata.name);

        let listed = pods.list_metadata(&ListParams::default()).await.unwrap();
        assert_eq!(
            (
                listed.types.api_version.as_str(),
                listed.types.kind.as_str()
            ),
            ("meta.k8s.io/v1", "PartialObjectMetadataList")
        );
        assert_eq!(listed.items.len(), 2);
        let item = &listed.items[0];
        assert_eq!(
            item.types.as_ref().map(|t| t.kind.as_str()),
            Some("PartialObjectMetadata")
        );
        assert!(item.metadata.uid.is_some());
        let list = server.requests().pop().unwrap();
        assert_eq!((list.verb, list.code), ("list", 200));
        assert_eq!(list.accept.as_deref(), Some(METADATA_LIST_MEDIA_TYPE));
        let one = pods.get_metadata(&name).await.unwrap();
        assert_eq!(one.metadata.uid, created.metadata.uid);

        // Only the metadata is sent, and what cannot be served is refused.
        let url = format!("{}/api/v1/namespaces/{NAMESPACE}/pods", server.url());
        let http = reqwest::Client::new();
        let raw: Value = http
            .get(&url)
            .header("accept", METADATA_LIST_MEDIA_TYPE)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            raw["items"][0]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["apiVersion", "kind", "metadata"]
        );
        for accept in [
            "application/json;as=Table;g=meta.k8s.io;v=v1",
            METADATA_MEDIA_TYPE,
            "application/yaml",
        ] {
            let refused = http
                .get(&url)
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            assert_eq!(refused.status(), 406, "a list accepting {accept}");
        }
        let fallback = http
            .get(&url)
            .header(
                "accept",
                "application/json;as=Table;g=meta.k8s.io;v=v1, application/json",
            )
            .send()
            .await
            .unwrap();
        let fallback: Value = fallback.json().await.unwrap();
        assert_eq!(fallback["kind"], "PodList", "the next acceptable type");
    }

    /// Polls every 10 ms until `done` (fails after 10 s).
    async fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn mock_api_double_deletes_dependents_first_in_the_foreground_and_after_its_lag() {
        let server = KubeApi::start().await;
        server.collect_garbage_after(Duration::from_millis(300));
        let pods: Api<Pod> = Api::default_namespaced(server.client());
        let owner = pods
            .create(&PostParams::default(), &pod("owner", json!({})))
            .await
            .unwrap();
        pods.create(&PostParams::default(), &owned_by(&owner, "dependent"))
            .await
            .unwrap();

        pods.delete("owner", &DeleteParams::foreground())
            .await
            .unwrap();
        let marked = server
            .object("pods", "owner")
            .expect("kept until its dependents are gone");
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(
            marked["metadata"]["finalizers"],
            json!(["foregroundDeletion"])
        );
        assert!(
            server.object("pods", "dependent").is_some(),
            "the collector lags"
        );
        poll_until("the dependent deleted", || {
            server.object("pods", "dependent").is_none()
        })
        .await;
        assert!(
            server.object("pods", "owner").is_some(),
            "the owner goes a lag after its dependents"
        );
        poll_until("the owner deleted", || server.objects("pods").is_empty()).await;

        let owner = pods
            .create(&PostParams::default(), &pod("owner", json!({})))
            .await
            .unwrap();
        pods.create(&PostParams::default(), &owned_by(&owner, "dependent"))
            .await
            .unwrap();
        pods.delete("owner", &DeleteParams::background())
            .await
            .unwrap();
        assert!(server.object("pods", "owner").is_none(), "gone at once");
        assert!(
            server.object("pods", "dependent").is_some(),
            "the collector lags"
        );
        poll_until("the dependent deleted", || {
            server.objects("pods").is_empty()
        })
        .await;
    }

    #[tokio::test]
    async fn mock_api_double_holds_back_watch_events_until_released() {
        use futures::StreamExt;
        let server = KubeApi::start().await;
        let pods: Api<Pod> = Api::default_namespaced(server.client());
        let mut events = pods
            .watch(&kube::api::WatchParams::default(), "0")
            .await
            .unwrap()
            .boxed();
        server.hold_watch_events("pods");
        pods.create(&PostParams::default(), &pod("a", json!({})))
            .await
            .unwrap();
        let early = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
        assert!(early.is_err(), "held back");
        server.release_watch_events("pods");
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("delivered once released")
            .unwrap()
            .unwrap();
        assert!(
            matches!(event, kube::api::WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("a"))
        );
    }
}
