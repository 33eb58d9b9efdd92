//! `max_request_rate`: no one-second window at the server (or proxy) holds more than `limit`
//! requests.

use super::at;

pub(super) fn max_request_rate(times: &[u64], limit: f64) -> Result<String, String> {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let (mut best, mut best_start) = (0usize, 0u64);
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi] >= sorted[lo] + 1000 {
            lo += 1;
        }
        if hi + 1 - lo > best {
            best = hi + 1 - lo;
            best_start = sorted[lo];
        }
    }
    if best as f64 > limit {
        Err(format!("{best} requests in the second starting at {} (limit {limit})", at(best_start)))
    } else {
        Ok(format!("busiest second: {best} requests at {} (limit {limit}); {} requests in all", at(best_start), sorted.len()))
    }
}
