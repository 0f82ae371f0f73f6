//! `tender-install`: adds Tender's runtime handler to containerd's config (see
//! `tender::install` and README "tender-install").

fn main() {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("tender-install: argument {a:?} is not UTF-8");
                std::process::exit(tender::install::EXIT_USAGE);
            }
        }
    }
    let code =
        tender::install::main_with_args(&args, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
