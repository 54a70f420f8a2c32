//! AFL target `phone`: runs `callhook_fuzz::scalars::check_phone` on each input (persistent mode).

fn main() {
    afl::fuzz!(|data: &[u8]| callhook_fuzz::scalars::check_phone(data));
}
