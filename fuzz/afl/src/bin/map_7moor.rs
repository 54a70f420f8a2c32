//! AFL target `map_7moor`: runs `callhook_fuzz::check_map_7moor` on each input (persistent mode).

fn main() {
    afl::fuzz!(|data: &[u8]| callhook_fuzz::check_map_7moor(data));
}
