//! containerd-shim-tender-v2: a containerd shim v2.
//!
//! `start` and `delete` are the actions containerd runs; without an action the binary is the
//! daemon started by hand (the listening socket on fd 3; `start` forks its daemon instead).
//! See `bootstrap` for each.

use tender::bootstrap;

fn main() {
    let flags = match bootstrap::flags::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-tender-v2: {e}");
            std::process::exit(2);
        }
    };
    if flags.version {
        println!("containerd-shim-tender-v2 {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let result = match flags.action.as_deref() {
        Some("start") => bootstrap::start(&flags),
        Some("delete") => bootstrap::delete(&flags),
        None => bootstrap::serve(&flags),
        Some(other) => Err(format!("unknown action {other:?}")),
    };
    if let Err(e) = result {
        eprintln!("containerd-shim-tender-v2: {e}");
        std::process::exit(1);
    }
}
