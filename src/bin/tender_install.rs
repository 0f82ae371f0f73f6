//! `tender-install`: adds Tender's runtime handler to containerd's config (see
//! `tender::install` and README "tender-install").

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code =
        tender::install::main_with_args(&args, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
