from fleet.core.promotion import promotion_flags

START_FIRST = {"Parallelism": 1, "Delay": 2_000_000_000, "Order": "start-first", "FailureAction": "rollback",
               "Monitor": 30_000_000_000}


def test_start_first_updates_every_replica_at_once_with_a_short_monitor_and_rollback_as_the_net():
    assert promotion_flags(START_FIRST, 3) == ["--update-parallelism", "3", "--update-delay", "0s",
                                               "--update-monitor", "5s", "--update-failure-action", "rollback"]


def test_a_monitor_already_shorter_is_kept():
    assert "2s" in promotion_flags({**START_FIRST, "Monitor": 2_000_000_000}, 2)


def test_stop_first_keeps_the_stacks_own_pace():
    assert promotion_flags({**START_FIRST, "Order": "stop-first"}, 3) == []
    assert promotion_flags(None, 3) == []
