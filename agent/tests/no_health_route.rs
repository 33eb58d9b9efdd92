//! A server without `/health` (older RedFlag servers, or a proxy that does not route it) must
//! not keep a recovering agent from checking in: the health probe's 404 is not an outage.
//! The check-ins answer 502 for a while, so the agent is recovering and probes `/health`
//! before each attempt; `/health` answers 404 throughout; once check-ins work again, the agent
//! must check in.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_404_from_health_does_not_block_recovery() {
    let h = Harness::new("nohealth");
    h.server.set_health(Reply::Status(404));
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no first check-in\n{}", agent.tail());

    h.server.set_commands(Reply::Status(502));
    assert!(
        wait_until(SOON, || agent.events_named("attempt_failed").len() >= 3),
        "the agent should fail a few attempts on 502\n{}",
        agent.tail()
    );
    let before = h.server.successful_checkins();
    h.server.set_commands(Reply::Normal);
    assert!(
        wait_until(SOON, || h.server.successful_checkins() > before),
        "the agent never checked in again: a 404 from /health blocked recovery\n{}",
        agent.tail()
    );
    assert!(h.server.count(Route::Health) >= 1, "the agent never probed /health while recovering");
    assert!(wait_until(Duration::from_secs(5), || !agent.events_named("recovered").is_empty()), "{}", agent.tail());
}
