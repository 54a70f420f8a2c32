//! AFL target `ingest`: runs `callhook_fuzz::http::check_ingest` on each input (persistent mode).

fn main() {
    afl::fuzz!(|data: &[u8]| callhook_fuzz::http::check_ingest(data));
}
