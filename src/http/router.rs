//! The route table: method + path template (`/assets/{uid}`) → handler, plus the documentation each
//! route carries (parameters, request body, responses) from which `/openapi.json` is generated, so the
//! document and the router can never disagree.
//!
//! Matching rules: one trailing slash is ignored (`/assets/` answers as `/assets`); a literal segment
//! beats a `{param}` segment, for the path as a whole: the most literal template that matches names the
//! resource, whatever the method (`GET /assets/register` is a 405 from `POST /assets/register`, not
//! `GET /assets/{uid}` with uid `register`); `HEAD` is answered by the `GET` route; a method the resource
//! lacks is a 405 listing the ones it has. This module decides nothing about security or bodies.

use std::sync::Arc;

use serde_json::{json, Value};

use super::request::Req;
use super::response::{ApiError, Reply};
use super::AppState;

/// The methods routes can be registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// Methods that change state need the API token when one is configured.
    pub fn changes_state(self) -> bool {
        !matches!(self, Method::Get)
    }

    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }
}

/// What a handler is: plain data in, a reply or an error envelope out. Handlers never see tiny_http.
pub type Handler = Arc<dyn Fn(&AppState, &mut Req<'_>) -> Result<Reply, ApiError> + Send + Sync>;

/// Which configured size limit applies to a route's request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// `obs.server.max_json_bytes`.
    Json,
    /// `obs.server.max_upload_bytes`.
    Upload,
}

/// Where a documented parameter lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamIn {
    Path,
    Query,
    Header,
}

impl ParamIn {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamIn::Path => "path",
            ParamIn::Query => "query",
            ParamIn::Header => "header",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub location: ParamIn,
    pub required: bool,
    pub description: String,
    /// JSON Schema of the value.
    pub schema: Value,
}

#[derive(Debug, Clone)]
pub struct RequestBody {
    pub content_type: String,
    pub schema: Value,
    pub required: bool,
    pub limit: BodyLimit,
}

#[derive(Debug, Clone)]
pub struct ResponseDoc {
    pub status: u16,
    pub description: String,
    /// Media type and JSON Schema of the body, if it has one.
    pub content: Option<(String, Value)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// One route: what it answers, how it is documented, and its handler.
#[derive(Clone)]
pub struct Route {
    pub method: Method,
    /// The template, e.g. `/assets/{uid}` (no trailing slash).
    pub path: String,
    pub summary: String,
    pub description: String,
    /// OpenAPI tag (the route group).
    pub tag: String,
    pub params: Vec<Param>,
    pub body: Option<RequestBody>,
    pub responses: Vec<ResponseDoc>,
    /// Named schemas this route's documentation refers to as `#/components/schemas/<name>`.
    pub components: Vec<(String, Value)>,
    /// Needs `Authorization: Bearer` when a token is configured (default: every method but GET).
    pub state_changing: bool,
    pub(crate) handler: Handler,
    segments: Vec<Segment>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Route({} {})", self.method.as_str(), self.path)
    }
}

/// `{"$ref": "#/components/schemas/<name>"}`.
pub fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

impl Route {
    /// A route for `method` at `path`. Path parameters (`{name}`) are documented automatically as
    /// required strings. A malformed template is a programming error and panics when the table is
    /// built (the route-table tests build it).
    pub fn new<F>(method: Method, path: &str, handler: F) -> Route
    where
        F: Fn(&AppState, &mut Req<'_>) -> Result<Reply, ApiError> + Send + Sync + 'static,
    {
        let segments = parse_template(path).unwrap_or_else(|e| panic!("route template {path:?}: {e}"));
        let params = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(name) => Some(Param {
                    name: name.clone(),
                    location: ParamIn::Path,
                    required: true,
                    description: String::new(),
                    schema: json!({"type": "string"}),
                }),
                Segment::Literal(_) => None,
            })
            .collect();
        Route {
            method,
            path: path.to_string(),
            summary: String::new(),
            description: String::new(),
            tag: String::new(),
            params,
            body: None,
            responses: Vec::new(),
            components: Vec::new(),
            state_changing: method.changes_state(),
            handler: Arc::new(handler),
            segments,
        }
    }

    pub fn get<F>(path: &str, handler: F) -> Route
    where
        F: Fn(&AppState, &mut Req<'_>) -> Result<Reply, ApiError> + Send + Sync + 'static,
    {
        Route::new(Method::Get, path, handler)
    }

    pub fn post<F>(path: &str, handler: F) -> Route
    where
        F: Fn(&AppState, &mut Req<'_>) -> Result<Reply, ApiError> + Send + Sync + 'static,
    {
        Route::new(Method::Post, path, handler)
    }

    pub fn delete<F>(path: &str, handler: F) -> Route
    where
        F: Fn(&AppState, &mut Req<'_>) -> Result<Reply, ApiError> + Send + Sync + 'static,
    {
        Route::new(Method::Delete, path, handler)
    }

    pub fn summary(mut self, text: &str) -> Route {
        self.summary = text.to_string();
        self
    }

    pub fn describe(mut self, text: &str) -> Route {
        self.description = text.to_string();
        self
    }

    pub fn tag(mut self, tag: &str) -> Route {
        self.tag = tag.to_string();
        self
    }

    /// Document a path parameter declared in the template.
    pub fn path_param(mut self, name: &str, description: &str) -> Route {
        match self.params.iter_mut().find(|p| p.location == ParamIn::Path && p.name == name) {
            Some(p) => p.description = description.to_string(),
            None => panic!("route {}: no path parameter {{{name}}} in the template", self.path),
        }
        self
    }

    /// An optional query parameter.
    pub fn query(mut self, name: &str, schema: Value, description: &str) -> Route {
        self.params.push(Param {
            name: name.to_string(),
            location: ParamIn::Query,
            required: false,
            description: description.to_string(),
            schema,
        });
        self
    }

    /// A required query parameter.
    pub fn query_required(mut self, name: &str, schema: Value, description: &str) -> Route {
        self = self.query(name, schema, description);
        if let Some(p) = self.params.last_mut() {
            p.required = true;
        }
        self
    }

    /// A request header the route reads.
    pub fn header(mut self, name: &str, schema: Value, description: &str) -> Route {
        self.params.push(Param {
            name: name.to_string(),
            location: ParamIn::Header,
            required: false,
            description: description.to_string(),
            schema,
        });
        self
    }

    /// A JSON request body (`application/json`, limited by `obs.server.max_json_bytes`).
    pub fn json_body(mut self, schema: Value, required: bool) -> Route {
        self.body =
            Some(RequestBody { content_type: "application/json".into(), schema, required, limit: BodyLimit::Json });
        self
    }

    /// A multipart upload body (limited by `obs.server.max_upload_bytes`).
    pub fn upload_body(mut self, schema: Value) -> Route {
        self.body = Some(RequestBody {
            content_type: "multipart/form-data".into(),
            schema,
            required: true,
            limit: BodyLimit::Upload,
        });
        self
    }

    /// A 200 JSON response with this schema.
    pub fn ok(self, schema: Value) -> Route {
        self.response(200, "OK", Some(("application/json", schema)))
    }

    /// A documented response; `content` is the media type and JSON Schema of the body.
    pub fn response(mut self, status: u16, description: &str, content: Option<(&str, Value)>) -> Route {
        self.responses.push(ResponseDoc {
            status,
            description: description.to_string(),
            content: content.map(|(ct, s)| (ct.to_string(), s)),
        });
        self
    }

    /// A documented error response (the error envelope).
    pub fn error(self, status: u16, description: &str) -> Route {
        self.response(status, description, Some(("application/json", schema_ref("ErrorEnvelope"))))
    }

    /// A named schema referenced from this route's documentation.
    pub fn component(mut self, name: &str, schema: Value) -> Route {
        self.components.push((name.to_string(), schema));
        self
    }

    /// Override whether the route needs the API token (default: every method but GET does).
    pub fn state_changing(mut self, yes: bool) -> Route {
        self.state_changing = yes;
        self
    }

    /// The body limit that applies (routes without a declared body get the JSON limit).
    pub fn body_limit(&self) -> BodyLimit {
        self.body.as_ref().map(|b| b.limit).unwrap_or(BodyLimit::Json)
    }

    /// Match a normalised path; returns the still-encoded parameters.
    fn matches(&self, segments: &[&str]) -> Option<Vec<(String, String)>> {
        if segments.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (pattern, seg) in self.segments.iter().zip(segments) {
            match pattern {
                Segment::Literal(l) if l == seg => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if seg.is_empty() => return None,
                Segment::Param(name) => params.push((name.clone(), (*seg).to_string())),
            }
        }
        Some(params)
    }

    /// Which segments are literal. Among templates that match one path, the greatest (a literal at
    /// the first place where they differ) is the most specific; two templates with the same shape
    /// that match one path are the same template.
    fn specificity(&self) -> Vec<bool> {
        self.segments.iter().map(|s| matches!(s, Segment::Literal(_))).collect()
    }
}

fn parse_template(path: &str) -> Result<Vec<Segment>, String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if path.len() > 1 && path.ends_with('/') {
        return Err("must not end with '/' (both forms answer anyway)".into());
    }
    let mut out = Vec::new();
    if path == "/" {
        return Ok(out);
    }
    for seg in path[1..].split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad parameter name {name:?}"));
            }
            out.push(Segment::Param(name.to_string()));
        } else if seg.contains(['{', '}']) {
            return Err(format!("bad segment {seg:?}"));
        } else {
            out.push(Segment::Literal(seg.to_string()));
        }
    }
    Ok(out)
}

/// The result of looking a request up.
#[derive(Debug)]
pub enum Match<'r> {
    Found {
        route: &'r Route,
        params: Vec<(String, String)>,
    },
    /// The path exists, but not for this method; the methods it has.
    WrongMethod(Vec<Method>),
    NotFound,
}

/// The routes; the most literal template matching a path is the resource, its routes the methods.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Build the router; two routes with the same method and template are a programming error.
    pub fn new(routes: Vec<Route>) -> Result<Router, String> {
        // Parameter names do not matter for clashes: `/a/{x}` and `/a/{y}` answer the same paths.
        let shape = |r: &Route| -> Vec<Option<String>> {
            r.segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => Some(l.clone()),
                    Segment::Param(_) => None,
                })
                .collect()
        };
        for (i, a) in routes.iter().enumerate() {
            if routes[..i].iter().any(|b| b.method == a.method && shape(b) == shape(a)) {
                return Err(format!("route {} {} is registered twice", a.method.as_str(), a.path));
            }
        }
        Ok(Router { routes })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Find the route for `method` (`None` = a method no route has, e.g. `TRACE`) and the raw path
    /// (no query string). Path parameters are returned still percent-encoded.
    pub fn find(&self, method: Option<Method>, path: &str) -> Match<'_> {
        let path = normalise(path);
        let segments: Vec<&str> = if path == "/" { vec![] } else { path[1..].split('/').collect() };
        // The resource: every route whose template is the most specific one matching the path.
        let mut resource: Vec<(&Route, Vec<(String, String)>)> = Vec::new();
        let mut best: Option<Vec<bool>> = None;
        for route in &self.routes {
            let Some(params) = route.matches(&segments) else { continue };
            let specificity = route.specificity();
            match &best {
                Some(b) if specificity < *b => continue,
                Some(b) if specificity == *b => {}
                _ => {
                    resource.clear();
                    best = Some(specificity);
                }
            }
            resource.push((route, params));
        }
        if resource.is_empty() {
            return Match::NotFound;
        }
        if let Some(i) = resource.iter().position(|(r, _)| Some(r.method) == method) {
            let (route, params) = resource.swap_remove(i);
            return Match::Found { route, params };
        }
        let mut allowed: Vec<Method> = resource.iter().map(|(r, _)| r.method).collect();
        allowed.sort();
        allowed.dedup();
        Match::WrongMethod(allowed)
    }
}

/// Drop one trailing slash (`/assets/` → `/assets`), keeping `/`.
pub fn normalise(path: &str) -> &str {
    if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else if path.is_empty() {
        "/"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(_: &AppState, _: &mut Req<'_>) -> Result<Reply, ApiError> {
        Ok(Reply::json(&json!({})))
    }

    fn router() -> Router {
        Router::new(vec![
            Route::get("/assets", h),
            Route::get("/assets/{uid}", h),
            Route::delete("/assets/{uid}", h),
            Route::post("/assets/register", h),
            Route::get("/", h),
        ])
        .unwrap()
    }

    #[test]
    fn trailing_slash_and_literal_preference() {
        let r = router();
        assert!(matches!(r.find(Some(Method::Get), "/assets/"), Match::Found { route, .. } if route.path == "/assets"));
        assert!(matches!(r.find(Some(Method::Get), "/"), Match::Found { route, .. } if route.path == "/"));
        match r.find(Some(Method::Post), "/assets/register") {
            Match::Found { route, params } => {
                assert_eq!(route.path, "/assets/register");
                assert!(params.is_empty());
            }
            other => panic!("{other:?}"),
        }
        match r.find(Some(Method::Get), "/assets/abc%20d") {
            Match::Found { params, .. } => assert_eq!(params, [("uid".to_string(), "abc%20d".to_string())]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_method_lists_allowed_and_unknown_is_not_found() {
        let r = router();
        match r.find(Some(Method::Put), "/assets/x") {
            Match::WrongMethod(m) => assert_eq!(m, [Method::Get, Method::Delete]),
            other => panic!("{other:?}"),
        }
        match r.find(None, "/assets") {
            Match::WrongMethod(m) => assert_eq!(m, [Method::Get]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.find(Some(Method::Get), "/nope"), Match::NotFound));
        assert!(matches!(r.find(Some(Method::Get), "/assets//"), Match::NotFound));
        assert!(matches!(r.find(Some(Method::Get), "/assets/x/y"), Match::NotFound));
    }

    /// `GET /assets/register` answered 404 "Asset not found" (uid `register`) and `OPTIONS` listed
    /// `GET, HEAD, POST, DELETE`: the `{uid}` routes' methods leaked onto the literal path.
    #[test]
    fn literal_path_owns_its_methods_and_params_do_not_leak_in() {
        let r = router();
        match r.find(Some(Method::Get), "/assets/register") {
            Match::WrongMethod(m) => assert_eq!(m, [Method::Post]),
            other => panic!("{other:?}"),
        }
        match r.find(None, "/assets/register/") {
            Match::WrongMethod(m) => assert_eq!(m, [Method::Post]),
            other => panic!("{other:?}"),
        }
        match r.find(Some(Method::Delete), "/assets/registe") {
            Match::Found { route, .. } => assert_eq!(route.path, "/assets/{uid}"),
            other => panic!("{other:?}"),
        }
        // The first place the templates differ decides: `/a/b/{y}` over `/a/{x}/c`.
        let r = Router::new(vec![Route::get("/a/{x}/c", h), Route::post("/a/b/{y}", h)]).unwrap();
        match r.find(Some(Method::Get), "/a/b/c") {
            Match::WrongMethod(m) => assert_eq!(m, [Method::Post]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.find(Some(Method::Get), "/a/z/c"), Match::Found { route, .. } if route.path == "/a/{x}/c"));
    }

    #[test]
    fn bad_templates_and_duplicates_are_refused() {
        assert!(parse_template("assets").is_err());
        assert!(parse_template("/assets/").is_err());
        assert!(parse_template("/a/{b-c}").is_err());
        assert!(parse_template("/a/x{b}").is_err());
        assert!(Router::new(vec![Route::get("/a/{x}", h), Route::get("/a/{y}", h)]).is_err());
    }
}
