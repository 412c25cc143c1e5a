//! A key-value datastore of people over HTTP, on a `RouterTable`.
//!
//! The original system's requests work as they were:
//! `PUT /person/update` with `{"id":100,"name":"mob"}`, and `GET /person/get`
//! with a JSON body `{"id":100}`. RESTful forms sit beside them:
//! `GET`/`PUT`/`DELETE /person/{id}` and `GET /person`. Every error is a JSON
//! `{"error": "..."}`: 400 for bad input (malformed JSON, a missing field, a
//! wrong type, a body over the limit, a bad id), 404 for an unknown id.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, State};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde::{Deserialize, Serialize};
use shardlock::RouterTable;

pub mod load;

/// A stored person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    pub id: u64,
    pub name: String,
}

/// What the handlers need of a backend; `RouterTable` is the product, the
/// `RwLock<HashMap>` is the baseline the load test compares it with.
pub trait Store: Send + Sync + 'static {
    fn get(&self, id: u64) -> Option<Person>;
    /// Inserts or replaces; returns whether it replaced.
    fn put(&self, person: Person) -> bool;
    fn delete(&self, id: u64) -> Option<Person>;
    /// Everyone, sorted by id.
    fn list(&self) -> Vec<Person>;
}

impl Store for RouterTable<u64, Person> {
    fn get(&self, id: u64) -> Option<Person> {
        RouterTable::get(self, &id)
    }
    fn put(&self, person: Person) -> bool {
        self.insert(person.id, person).is_some()
    }
    fn delete(&self, id: u64) -> Option<Person> {
        self.remove(&id)
    }
    fn list(&self) -> Vec<Person> {
        let mut all = Vec::with_capacity(self.len());
        self.for_each(|_, p| all.push(p.clone()));
        all.sort_by_key(|p| p.id);
        all
    }
}

impl Store for RwLock<HashMap<u64, Person>> {
    fn get(&self, id: u64) -> Option<Person> {
        self.read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }
    fn put(&self, person: Person) -> bool {
        let mut map = self.write().unwrap_or_else(|p| p.into_inner());
        map.insert(person.id, person).is_some()
    }
    fn delete(&self, id: u64) -> Option<Person> {
        self.write().unwrap_or_else(|p| p.into_inner()).remove(&id)
    }
    fn list(&self) -> Vec<Person> {
        let map = self.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Person> = map.values().cloned().collect();
        all.sort_by_key(|p| p.id);
        all
    }
}

/// Which backend a server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// shardlock's `RouterTable<u64, Person>`.
    RouterTable,
    /// `std::sync::RwLock<HashMap<u64, Person>>`, for comparison.
    Rwlock,
}

impl Backend {
    pub fn store(self) -> Arc<dyn Store> {
        match self {
            Backend::RouterTable => Arc::new(RouterTable::<u64, Person>::new()),
            Backend::Rwlock => Arc::new(RwLock::new(HashMap::<u64, Person>::new())),
        }
    }
}

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How much of an oversized body the server reads (and discards) before it
/// answers: a client still sending gets the 400 instead of a reset
/// (`EPIPE`) mid-send. Beyond this the connection is just closed.
pub const DRAIN_LIMIT: usize = 1024 * 1024;

/// Every error the API returns, turned into a JSON response in one place.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    NotFound(u64),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(id) => (StatusCode::NOT_FOUND, format!("no person with id {id}")),
        };
        crate::http_errors::json_error(status, message)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// `axum::Json` whose rejections are our JSON 400s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejections are our JSON 400s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct PathId<T>(pub T);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdOnly {
    id: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameOnly {
    name: String,
}

type Shared = State<Arc<dyn Store>>;

/// The HTTP API over `store`.
pub fn router(store: Arc<dyn Store>) -> Router {
    Router::new()
        .route("/person/update", put(update))
        .route("/person/get", get(get_by_body))
        .route("/person", get(list))
        .route("/person/{id}", get(get_one).put(put_one).delete(delete_one))
        .fallback(crate::http_errors::no_route)
        .method_not_allowed_fallback(crate::http_errors::wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(refuse_oversized))
        .with_state(store)
}

/// Answers a body declared larger than [`BODY_LIMIT`] with a 400, after
/// reading and discarding it if it is at most [`DRAIN_LIMIT`]: answering
/// while the client still sends makes its send fail with a reset before it
/// reads the answer. (Chunked bodies without a length are cut by the body
/// limit itself.)
async fn refuse_oversized(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    match declared {
        Some(length) if length > BODY_LIMIT => {
            if length <= DRAIN_LIMIT {
                let _ = axum::body::to_bytes(request.into_body(), DRAIN_LIMIT).await;
            }
            ApiError::BadRequest(format!(
                "the request body ({length} bytes) is larger than the limit of {BODY_LIMIT}"
            ))
            .into_response()
        }
        _ => next.run(request).await,
    }
}

async fn update(State(store): Shared, Json(person): Json<Person>) -> Json<Person> {
    store.put(person.clone());
    Json(person)
}

async fn get_by_body(
    State(store): Shared,
    Json(q): Json<IdOnly>,
) -> Result<Json<Person>, ApiError> {
    store.get(q.id).map(Json).ok_or(ApiError::NotFound(q.id))
}

async fn list(State(store): Shared) -> Json<Vec<Person>> {
    Json(store.list())
}

async fn get_one(State(store): Shared, PathId(id): PathId<u64>) -> Result<Json<Person>, ApiError> {
    store.get(id).map(Json).ok_or(ApiError::NotFound(id))
}

/// The body is `{"name": ...}`, or a whole person whose id matches the path.
async fn put_one(
    State(store): Shared,
    PathId(id): PathId<u64>,
    Json(body): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    let name = match serde_json::from_value::<NameOnly>(body.clone()) {
        Ok(n) => n.name,
        Err(_) => {
            let person: Person = serde_json::from_value(body)
                .map_err(|e| ApiError::BadRequest(format!("expected {{\"name\": string}}: {e}")))?;
            if person.id != id {
                return Err(ApiError::BadRequest(format!(
                    "body id {} does not match path id {id}",
                    person.id
                )));
            }
            person.name
        }
    };
    let person = Person { id, name };
    let replaced = store.put(person.clone());
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(person)).into_response())
}

async fn delete_one(
    State(store): Shared,
    PathId(id): PathId<u64>,
) -> Result<Json<Person>, ApiError> {
    store.delete(id).map(Json).ok_or(ApiError::NotFound(id))
}

/// Loads people saved by [`save`]; a missing file is an empty store.
pub fn load_file(store: &dyn Store, path: &Path) -> std::io::Result<usize> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let people: Vec<Person> = serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let n = people.len();
    for person in people {
        store.put(person);
    }
    Ok(n)
}

/// Writes everyone to `path` atomically: a temporary file beside it,
/// fsynced, renamed over it, and the directory fsynced, so a crash leaves
/// the old file or the new one, never a torn one.
pub fn save(store: &dyn Store, path: &Path) -> std::io::Result<usize> {
    use std::io::Write;
    let people = store.list();
    let tmp: PathBuf = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        path.with_file_name(name)
    };
    {
        let mut file = std::fs::File::create(&tmp)?;
        serde_json::to_writer(&mut file, &people)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(people.len())
}

/// Saves every `every` until the task is dropped (logging failures).
pub async fn save_periodically(store: Arc<dyn Store>, path: PathBuf, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await; // the first tick is immediate
    loop {
        ticks.tick().await;
        let (store, path) = (store.clone(), path.clone());
        match tokio::task::spawn_blocking(move || save(&*store, &path)).await {
            Ok(Ok(n)) => tracing::debug!(people = n, "saved"),
            Ok(Err(e)) => tracing::error!(error = %e, "periodic save failed"),
            Err(e) => tracing::error!(error = %e, "periodic save panicked"),
        }
    }
}
