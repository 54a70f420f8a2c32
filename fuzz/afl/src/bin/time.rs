//! AFL target `time`: runs `callhook_fuzz::scalars::check_time` on each input (persistent mode).

fn main() {
    afl::fuzz!(|data: &[u8]| callhook_fuzz::scalars::check_time(data));
}
