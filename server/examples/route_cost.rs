//! `route_cost ROUTE N`: serves N requests of one route (`healthz`, or `keyed` for the keyed
//! list of 20 packages) through `app()` in process, as `benches/routes.rs` does, and nothing
//! else. `bench/route_ir.sh` runs it under callgrind at two N and takes the difference: the
//! instructions a request costs, the same on every run, where timings on shared cores move
//! by tens of percent.

#[path = "../benches/support/mod.rs"]
mod support;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(route), Some(Ok(n))) = (args.next(), args.next().map(|n| n.parse::<usize>())) else {
        eprintln!("usage: route_cost healthz|keyed N");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (app, credential) = support::setup();
    for _ in 0..n {
        let request = match route.as_str() {
            "healthz" => Request::get("/healthz"),
            _ => Request::get("/api/v1/packages?limit=20").header("x-api-key", &credential),
        };
        let request = request.body(Body::empty()).expect("request");
        runtime.block_on(async {
            let response = app.clone().oneshot(request).await.expect("infallible");
            assert!(response.status().is_success(), "{}", response.status());
            std::hint::black_box(response.into_body().collect().await.expect("body"));
        });
    }
}
