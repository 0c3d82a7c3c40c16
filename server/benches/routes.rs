//! `cargo bench -p latchkey-server --bench routes`
//!
//! What one request costs the thread that serves it, through `app()` in process: no socket,
//! no other thread, so the figures are the user-space work of the HTTP stack and the route,
//! steady from run to run where `bench/http.sh`'s request rates move by 10-20 % on two shared
//! cores. Issue #5 compares the two routes it loads:
//!
//! - `routes/healthz`: `GET /healthz`.
//! - `routes/keyed_list_20`: `GET /api/v1/packages?limit=20` with an API key, on a store of
//!   20 packages (the keyed load of `bench/http.sh`): verify, the limiter, the page, the
//!   rate-limit headers and the request's log entry. The log writer is not woken by requests
//!   here; once the queue is full its oldest entries are dropped, freed on this thread where
//!   the server's writer thread would free them.
//!
//! Each request is built outside the measured time; its response body is read to the end.

mod support;

use axum::body::Body;
use axum::http::Request;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use tower::ServiceExt;

// The server's allocator (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn routes(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (app, credential) = support::setup();
    let serve = |request: Request<Body>| {
        runtime.block_on(async {
            let response = app.clone().oneshot(request).await.expect("infallible");
            assert!(response.status().is_success(), "{}", response.status());
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
        })
    };
    let mut group = c.benchmark_group("routes");
    group.bench_function("healthz", |b| {
        b.iter_batched(
            || {
                Request::get("/healthz")
                    .body(Body::empty())
                    .expect("request")
            },
            serve,
            BatchSize::SmallInput,
        )
    });
    group.bench_function("keyed_list_20", |b| {
        b.iter_batched(
            || {
                Request::get("/api/v1/packages?limit=20")
                    .header("x-api-key", &credential)
                    .body(Body::empty())
                    .expect("request")
            },
            serve,
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, routes);
criterion_main!(benches);
