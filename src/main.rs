//! `callhook`: the command-line entry point (wired up as the stages land).

fn main() {
    println!("callhook");
}
