//! AFL target `map_coocenter`: runs `callhook_fuzz::check_map_coocenter` on each input (persistent mode).

fn main() {
    afl::fuzz!(|data: &[u8]| callhook_fuzz::check_map_coocenter(data));
}
