//! Web pages and the local HTTP API: an attacker page tries every way
//! around the origin binding — a token stolen from another page, leaving
//! the `Origin` out, the owner token from a page, a preflight from an
//! unknown origin, a rebound DNS name, a flood of access requests.
//!
//! Requests are written by hand on a TCP stream, so that each header
//! (`Host` and `Origin` included) is exactly what a browser, or an
//! attacker, would send.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use basic_testkit::Data;
use serde_json::{Value as Json, json};

/// The binary under test.
const BASIC: &str = env!("CARGO_BIN_EXE_basic");

const PAGE: &str = "http://todo.localhost:8080";
const EVIL: &str = "http://evil.example";

/// An answer: status, headers (names lowercase), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Json,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Panics if any CORS header lets a page read this answer.
    fn no_cors(&self) {
        for (name, value) in &self.headers {
            assert!(!name.starts_with("access-control-allow"), "{name}: {value} on {self:?}");
        }
    }
}

/// One HTTP/1.1 request to `address`, with `headers` as given (a `Host`
/// naming the API unless one is given).
fn send(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Json>,
) -> Answer {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("host: {address}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.map(Json::to_string).unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let Some((name, value)) = line.trim_end().split_once(':') else { break };
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let streaming =
        headers.iter().any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream"));
    let body = if streaming {
        // The first event of a live query, and no more.
        let mut event = String::new();
        while !event.contains("\n\n") {
            let mut chunk = String::new();
            if reader.read_line(&mut chunk).unwrap() == 0 {
                break;
            }
            event.push_str(&chunk);
        }
        Json::String(event)
    } else {
        let mut text = Vec::new();
        reader.read_to_end(&mut text).unwrap();
        let text = dechunk(&headers, &text);
        serde_json::from_slice(&text).unwrap_or(Json::Null)
    };
    Answer { status, headers, body }
}

/// The body of a chunked answer, put together.
fn dechunk(headers: &[(String, String)], raw: &[u8]) -> Vec<u8> {
    if !headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        return raw.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[end + 2..end + 2 + size]);
        rest = &rest[end + 2 + size + 2..];
    }
    out
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A web app at `origin` asks for read-write on todo; the owner approves
/// with the CLI; the page polls for its token.
fn web_app_token(data: &Data, address: SocketAddr, origin: &str) -> String {
    let asked = json!({ "name": "Todo web", "scopes": { "todo": "read_write" } });
    let made = send(address, "POST", "/v0/apps/requests", &[("origin", origin)], Some(&asked));
    assert_eq!(made.status, 201, "{made:?}");
    assert_eq!(made.header("access-control-allow-origin"), Some(origin));
    let (id, secret) = (made.body["id"].as_str().unwrap(), made.body["secret"].as_str().unwrap());
    let listed = data.basic(&["app", "requests"]).ok();
    assert!(listed.contains(id) && listed.contains(origin), "{listed}");
    data.basic(&["app", "approve", id]).ok();
    let poll = format!("/v0/apps/requests/{id}?secret={secret}");
    let state = send(address, "GET", &poll, &[("origin", origin)], None);
    assert_eq!((state.status, state.body["status"].as_str()), (200, Some("approved")));
    assert_eq!(state.header("access-control-allow-origin"), Some(origin));
    state.body["token"].as_str().unwrap().to_owned()
}

#[test]
fn a_web_apps_token_works_from_its_own_page_only() {
    let data = Data::with_todo(BASIC);
    let node = data.up(&[]);
    let address = node.api_address();
    let select = json!({ "sql": "SELECT count(*) AS n FROM todo.items" });

    // Before any app asked from it, a page's preflight for an app route
    // gets nothing; the page where apps first ask gets its own origin back.
    let preflight = |path: &str, method: &str, origin: &str| {
        send(
            address,
            "OPTIONS",
            path,
            &[
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", "authorization, content-type"),
                ("access-control-request-private-network", "true"),
            ],
            None,
        )
    };
    let early = preflight("/v0/sql", "POST", PAGE);
    assert_eq!((early.status, early.code()), (403, "origin_refused"));
    early.no_cors();
    let ask = preflight("/v0/apps/requests", "POST", PAGE);
    assert_eq!(ask.status, 204, "{ask:?}");
    assert_eq!(ask.header("access-control-allow-origin"), Some(PAGE));
    assert_eq!(ask.header("access-control-allow-private-network"), Some("true"));
    // A sandboxed page (origin `null`) cannot ask: no origin to bind to.
    let null = preflight("/v0/apps/requests", "POST", "null");
    assert_eq!(null.status, 403);
    null.no_cors();
    let asked = json!({ "name": "Sandboxed", "scopes": { "todo": "read" } });
    let made = send(address, "POST", "/v0/apps/requests", &[("origin", "null")], Some(&asked));
    assert_eq!(made.status, 400, "{made:?}");
    made.no_cors();

    let token = web_app_token(&data, address, PAGE);
    let listed = data.basic(&["app", "list"]).ok();
    assert!(listed.contains(&format!("web app at {PAGE}")), "{listed}");
    let (status, apps) = node.get("/v0/apps", Some(&node.token));
    assert_eq!((status, apps[0]["origin"].as_str()), (200, Some(PAGE)), "{apps}");

    // Its own page: the preflight names it exactly (never `*`), with the
    // Private Network Access answer; the query runs and the page may read it.
    let own = preflight("/v0/sql", "POST", PAGE);
    assert_eq!(own.status, 204, "{own:?}");
    assert_eq!(own.header("access-control-allow-origin"), Some(PAGE));
    assert_eq!(own.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(own.header("access-control-allow-private-network"), Some("true"));
    let auth = bearer(&token);
    let ran = send(
        address,
        "POST",
        "/v0/sql",
        &[("origin", PAGE), ("authorization", &auth)],
        Some(&select),
    );
    assert_eq!(ran.status, 200, "{ran:?}");
    assert_eq!(ran.header("access-control-allow-origin"), Some(PAGE));

    // The attacker's page, with the stolen token: its preflight gets no
    // CORS header, and the request itself (sent as a "simple" request,
    // which skips the preflight) is refused without running.
    preflight("/v0/sql", "POST", EVIL).no_cors();
    let stolen = send(
        address,
        "POST",
        "/v0/sql",
        &[("origin", EVIL), ("authorization", &auth)],
        Some(&select),
    );
    assert_eq!((stolen.status, stolen.code()), (403, "origin_refused"), "{stolen:?}");
    stolen.no_cors();
    let write =
        json!({ "sql": "INSERT INTO todo.items (id, title, done) VALUES ('x', 'x', false)" });
    let stolen = send(
        address,
        "POST",
        "/v0/sql",
        &[("origin", EVIL), ("authorization", &auth)],
        Some(&write),
    );
    assert_eq!(stolen.status, 403);
    // The stolen token without any Origin (a script outside a browser, or
    // a request that leaves the header out) is refused too.
    let bare = send(address, "POST", "/v0/sql", &[("authorization", &auth)], Some(&select));
    assert_eq!((bare.status, bare.code()), (403, "origin_refused"), "{bare:?}");
    // An Origin differing only in port or scheme is another origin.
    for near in ["http://todo.localhost:8081", "https://todo.localhost:8080"] {
        let near = send(
            address,
            "POST",
            "/v0/sql",
            &[("origin", near), ("authorization", &auth)],
            Some(&select),
        );
        assert_eq!(near.status, 403, "{near:?}");
    }
    let (_, count) = node.sql_as(&node.token, "SELECT count(*) AS n FROM todo.items", json!([]));
    assert_eq!(count["rows"][0][0], 0, "nothing was written");

    // The owner token from any page is refused, and owner routes answer no
    // page at all: not the preflight, not the request.
    let owner = bearer(&node.token);
    let from_page = send(
        address,
        "POST",
        "/v0/sql",
        &[("origin", PAGE), ("authorization", &owner)],
        Some(&select),
    );
    assert_eq!((from_page.status, from_page.code()), (403, "origin_refused"));
    let status =
        send(address, "GET", "/v0/status", &[("origin", PAGE), ("authorization", &owner)], None);
    assert_eq!((status.status, status.code()), (403, "origin_refused"));
    status.no_cors();
    // The page's own app token is no owner token either.
    let status =
        send(address, "GET", "/v0/status", &[("origin", PAGE), ("authorization", &auth)], None);
    assert_eq!((status.status, status.code()), (403, "forbidden"));
    status.no_cors();
    for path in ["/v0/apps/requests/0011223344556677/approve", "/v0/status", "/v0/health"] {
        let preflight = preflight(path, "POST", PAGE);
        assert_ne!(preflight.status / 100, 2, "{path}");
        preflight.no_cors();
    }

    // A token of a non-browser app is refused when an Origin is present.
    let (_, native) = {
        let asked = json!({ "name": "CLI tool", "scopes": { "todo": "read" } });
        let made = send(address, "POST", "/v0/apps/requests", &[], Some(&asked));
        assert_eq!(made.status, 201);
        let (id, secret) =
            (made.body["id"].as_str().unwrap(), made.body["secret"].as_str().unwrap());
        data.basic(&["app", "approve", id]).ok();
        node.get(&format!("/v0/apps/requests/{id}?secret={secret}"), None)
    };
    let native = bearer(native["token"].as_str().unwrap());
    let fine = send(address, "POST", "/v0/sql", &[("authorization", &native)], Some(&select));
    assert_eq!(fine.status, 200);
    let from_page = send(
        address,
        "POST",
        "/v0/sql",
        &[("origin", PAGE), ("authorization", &native)],
        Some(&select),
    );
    assert_eq!((from_page.status, from_page.code()), (403, "origin_refused"));

    // A live query from the page: streaming fetch with the Authorization
    // header (no token in the URL), readable by the page.
    let live = send(
        address,
        "GET",
        "/v0/live?sql=SELECT%20count(*)%20AS%20n%20FROM%20todo.items",
        &[("origin", PAGE), ("authorization", &auth)],
        None,
    );
    assert_eq!(live.status, 200, "{live:?}");
    assert_eq!(live.header("access-control-allow-origin"), Some(PAGE));
    assert!(live.body.as_str().unwrap().contains("event: rows"), "{live:?}");
    let live = send(
        address,
        "GET",
        "/v0/live?sql=SELECT%201",
        &[("origin", EVIL), ("authorization", &auth)],
        None,
    );
    assert_eq!(live.status, 403);
    live.no_cors();

    // Revoked: the page can still read that it was (its origin stays
    // known), and the query is refused.
    data.basic(&["app", "revoke", apps[0]["id"].as_str().unwrap()]).ok();
    let revoked = send(
        address,
        "POST",
        "/v0/sql",
        &[("origin", PAGE), ("authorization", &auth)],
        Some(&select),
    );
    assert_eq!((revoked.status, revoked.code()), (403, "forbidden"), "{revoked:?}");
    assert_eq!(revoked.header("access-control-allow-origin"), Some(PAGE));
}

#[test]
fn a_rebound_dns_name_reaches_nothing() {
    let data = Data::with_todo(BASIC);
    let node = data.up(&[]);
    let address = node.api_address();
    let port = address.port();
    let owner = bearer(&node.token);
    // The page's name rebinds to 127.0.0.1: the browser sends that name.
    let rebound = format!("evil.example:{port}");
    for (method, path) in [
        ("GET", "/v0/health"),
        ("GET", "/v0/status"),
        ("POST", "/v0/sql"),
        ("POST", "/v0/apps/requests"),
    ] {
        let answer = send(
            address,
            method,
            path,
            &[("host", &rebound), ("authorization", &owner)],
            Some(&json!({ "sql": "SELECT 1" })),
        );
        assert_eq!(
            (answer.status, answer.code()),
            (421, "wrong_host"),
            "{method} {path}: {answer:?}"
        );
        answer.no_cors();
    }
    // A name that merely starts like ours, another port, no port: not us.
    for host in [
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "localhost".into(),
        "127.1".into(),
    ] {
        let answer = send(address, "GET", "/v0/health", &[("host", &host)], None);
        assert_eq!(answer.status, 421, "{host}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let answer = send(address, "GET", "/v0/health", &[("host", &host)], None);
        assert_eq!(answer.status, 200, "{host}");
    }
}

#[test]
fn a_page_cannot_flood_the_user_with_requests() {
    let data = Data::with_todo(BASIC);
    let node = data.up(&[]);
    let address = node.api_address();
    let ask = |origin: &str| {
        let asked = json!({ "name": "Flood", "scopes": { "todo": "read" } });
        send(address, "POST", "/v0/apps/requests", &[("origin", origin)], Some(&asked))
    };
    // Buckets refill as time passes (one request every 6 s per origin, one
    // a second in all): the counts allow for the time the test takes.
    let start = Instant::now();
    let answers: Vec<Answer> = (0..15).map(|_| ask(EVIL)).collect();
    let made = answers.iter().filter(|a| a.status == 201).count() as u64;
    assert!((10..=10 + start.elapsed().as_secs() / 6).contains(&made), "{made} at once");
    let refused = answers.last().unwrap();
    assert_eq!((refused.status, refused.code()), (429, "too_many_requests"));
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=6).contains(&wait), "{wait}");
    // The page can read the refusal, to say so.
    assert_eq!(refused.header("access-control-allow-origin"), Some(EVIL));
    // Another page is not held up by it…
    assert_eq!(ask(PAGE).status, 201);
    // …but pages of many origins together are held to the total.
    let spread: Vec<u16> =
        (0..40).map(|i| ask(&format!("http://o{i}.evil.example")).status).collect();
    assert!(spread.iter().all(|s| *s == 201 || *s == 429), "{spread:?}");
    let total = made + 1 + spread.iter().filter(|s| **s == 201).count() as u64;
    assert!((30..=30 + start.elapsed().as_secs()).contains(&total), "{total}: {spread:?}");
    assert_eq!(spread.last(), Some(&429));
    let (status, pending) = node.get("/v0/apps/requests", Some(&node.token));
    assert_eq!((status, pending.as_array().unwrap().len() as u64), (200, total));
}
