//! `latchkey`: the engine as an HTTP server and admin CLI. The server itself is built in a later
//! issue; for now the binary reports its version, so the workspace layout is complete.

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("--version") | Some("-V") => {
            #[allow(clippy::print_stdout)]
            {
                println!("latchkey {version}");
            }
        }
        Some(other) => {
            eprintln!(
                "latchkey {version}: unknown command `{other}` (the server is not built yet)"
            );
            std::process::exit(2);
        }
    }
}
