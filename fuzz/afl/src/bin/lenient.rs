//! AFL target `lenient`: runs `callhook_fuzz::literal::check_lenient` on each input (persistent mode).

fn main() {
    afl::fuzz!(|data: &[u8]| callhook_fuzz::literal::check_lenient(data));
}
