//! AFL target `map_uincall`: runs `callhook_fuzz::check_map_uincall` on each input (persistent mode).

fn main() {
    afl::fuzz!(|data: &[u8]| callhook_fuzz::check_map_uincall(data));
}
