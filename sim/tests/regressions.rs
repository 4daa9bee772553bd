//! Seeds that once failed stay here for ever, each named after the core bug
//! it found (all fixed; the core's own regression tests are in
//! core/tests/regressions.rs).

use rmmap_sim::{SimConfig, replay_command, run_seed};

fn must_pass(seed: u64, cfg: SimConfig) {
    let r = run_seed(seed, &cfg);
    let list: Vec<String> = r.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        list.is_empty(),
        "seed {seed} failed ({}):\n{}",
        replay_command(seed, &cfg),
        list.join("\n")
    );
}

fn steps(n: usize) -> SimConfig {
    SimConfig {
        steps: n,
        ..SimConfig::default()
    }
}

/// sim-3b: a shared fetch by a concurrent read replaced a page just written
/// under an overwrite grant (no faults needed).
#[test]
fn sim3b_a_concurrent_read_does_not_undo_an_overwrite() {
    must_pass(
        50,
        SimConfig {
            faults: false,
            ..SimConfig::default()
        },
    );
    must_pass(
        57,
        SimConfig {
            faults: false,
            ..SimConfig::default()
        },
    );
}

/// sim-1: the data of an unconfirmed RecallAck is lost at session expiry
/// without telling the client, and its stale copy revalidates as valid.
#[test]
fn sim1_recall_ack_data_lost_at_lease_expiry_is_reported() {
    must_pass(529, steps(20));
    must_pass(198, SimConfig::default());
}

/// sim-2: completed atomics lost in a crash are not reported, and a sync
/// straddling the restart returns OK.
#[test]
fn sim2_atomics_lost_in_a_crash_are_reported() {
    must_pass(694, steps(20));
    must_pass(948, SimConfig::default());
}

/// sim-3: a fetch reply with data overwrote bytes written while it was in
/// flight (no faults needed).
#[test]
fn sim3_fetch_reply_keeps_dirty_bytes() {
    must_pass(
        290,
        SimConfig {
            faults: false,
            steps: 40,
            ..SimConfig::default()
        },
    );
}

/// sim-4: a restarted server let a write through while a client of the old
/// run still served reads from its cache.
#[test]
fn sim4_no_stale_reads_from_the_old_run_after_a_restart() {
    must_pass(310, SimConfig::default());
}

/// sim-5: a Fetch resent after a resume ran twice; the client kept a Shared
/// copy while another client got the page exclusively.
#[test]
fn sim5_a_resent_fetch_does_not_leave_two_holders() {
    must_pass(3998, steps(30));
    // The grant's reply lost in a cut; the resent Recall skipped for a Shared page.
    must_pass(8192, SimConfig::default());
    // A re-run shared Fetch demoted the owner; its write-back was refused.
    must_pass(10001, SimConfig::default());
    must_pass(276, SimConfig::default());
}

/// disk-1: with the full disk refusing bytes, a write client 2 completed
/// was lost in a graceful restart and client 2 was never told: the failed
/// bytes concerned a session that had ended, and while another session they
/// depended on was still live, nobody's sync heard of them (core test:
/// `a_sync_after_the_session_expired_reports_failed_bytes_written_over_its_own`).
#[test]
fn disk1_failed_bytes_an_ended_session_depends_on_reach_the_next_sync() {
    must_pass(13445, SimConfig::default());
}

/// disk-2: with the disk broken, a client's Hello arrived twice on a
/// reconnection; the protocol violation doomed its session, the client went
/// on in a new one, and its sync there succeeded while its refused bytes were
/// on no disk (a doomed session counted as one that could still be told);
/// a crash lost them silently (core test:
/// `a_sync_after_a_protocol_violation_reports_the_doomed_sessions_failed_bytes`).
#[test]
fn disk2_failed_bytes_of_a_doomed_session_reach_the_next_sync() {
    must_pass(62891, SimConfig::default());
}

/// sim-9: copies of an unmapped mapping's pages stayed cached until the
/// `Unmapped` answer arrived, beside another client's ownership.
#[test]
fn sim9_copies_leave_the_cache_when_the_unmap_goes_out() {
    must_pass(8981, SimConfig::default());
    must_pass(31710, SimConfig::default());
}

/// sim-10: a `Refresh` was out for a carried page when an `Invalidate`
/// dropped the copy; the refresh then failed (the disk refused the read),
/// and its error cleared only pages still stale, so the page kept pointing
/// at the dead request and the operations waiting on it never woke (a
/// liveness failure 90 s after the faults stopped).
#[test]
fn sim10_a_failed_refresh_wakes_the_waiters_of_every_page_it_covered() {
    must_pass(99861, SimConfig::default());
}
