//! Runs files through a fuzz target's check and reports each outcome, for triage of AFL's
//! `crashes/` and `hangs/`: `cargo run -p callhook-fuzz --example replay -- TARGET FILE...`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(target) = args.next().and_then(|name| callhook_fuzz::target(&name)) else {
        eprintln!("usage: replay TARGET FILE...");
        return ExitCode::from(2);
    };
    let mut failed = false;
    for path in args {
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(error) => {
                eprintln!("{path}: {error}");
                failed = true;
                continue;
            }
        };
        eprintln!(
            "== {path} ({} bytes): {:?}",
            data.len(),
            String::from_utf8_lossy(&data)
        );
        if std::panic::catch_unwind(|| (target.check)(&data)).is_err() {
            failed = true;
        }
    }
    ExitCode::from(u8::from(failed))
}
