//! How one run seed becomes every seed in the run: independent-looking values derived with
//! splitmix64, one per purpose, so the simulation and the live mode seed the same things the
//! same way (the server's token generator, the proxy's loss choices, each agent's RNG, ...).

/// A 64-bit mix of a seed and two inputs (splitmix64's finaliser).
pub fn mix_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The server database's token generator.
pub fn server_db(run: u64) -> u64 {
    mix_seed(run, 1, 0)
}

/// The proxy's `loss` choices.
pub fn proxy(run: u64) -> u64 {
    mix_seed(run, 3, 0)
}

/// Agent `index`'s jitter RNG in its `generation`-th life (each restart reseeds it).
pub fn agent_rng(run: u64, index: u32, generation: u64) -> u64 {
    mix_seed(run, u64::from(index) + 1, generation)
}

/// Agent `index`'s start offset, as a fraction in [0, 1).
pub fn start_fraction(run: u64, index: u32) -> f64 {
    (mix_seed(run, u64::from(index), 2) % 10_000) as f64 / 10_000.0
}

/// Agent `index`'s initial access and refresh tokens.
pub fn initial_tokens(run: u64, index: u32) -> u64 {
    mix_seed(run, u64::from(index), 0x746f6b656e)
}

/// Agent `index`'s `[workload]` command stream.
pub fn workload(run: u64, index: u32) -> u64 {
    mix_seed(run, u64::from(index), 0x776f_726b)
}

/// Agent `index`'s start-up sleep under a baseline strategy that has one, in its
/// `generation`-th life.
pub fn strategy_start(run: u64, index: u32, generation: u64) -> u64 {
    mix_seed(run, u64::from(index) ^ 0x5354_5241_5445_4759, generation.wrapping_add(7))
}
