"""The bookkeeping of an alert subscription (engine.net.subscriptions._Gaps):
gaps, a new log after a restart, MISSED notices with and without a topic
filter.  The queries themselves are exercised in tests/integration."""

from __future__ import annotations

from engine.net.subscriptions import _Gaps

HEADS = {"OK": 0, "WARN": 0, "STALE": 0, "CRIT": 0, "ENGINE": 0}


def alert(seq, topic="CRIT", tseq=None, log="a" * 16):
    return {"topic": topic, "new": topic, "seq": seq, "topic_seq": seq if tseq is None else tseq,
            "log": log}


def test_a_gap_in_the_numbers_asks_for_what_lies_between():
    g = _Gaps([b""])
    g.baseline({"head": 10, "topic_heads": HEADS, "log": "a" * 16})
    assert g.seen(alert(11)) == "ok"
    g.take(alert(11))
    assert g.seen(alert(11)) == "dup"
    assert g.seen(alert(15)) == "gap"
    assert g.request(alert(15)) == {"op": "alerts", "since": 11, "limit": 3}


def test_a_new_log_starts_the_numbers_over_and_fills_from_its_first_alert():
    # The engine restarted without a data dir: its alerts number from 1
    # again.  Alert 3 of the new log must not read as a duplicate of the
    # old log's alert 3; alerts 1 and 2 of the new log are fetched.
    g = _Gaps([b""])
    g.baseline({"head": 500, "topic_heads": HEADS, "log": "a" * 16})
    assert g.seen(alert(3, log="b" * 16)) == "gap"
    assert g.restarts == 1 and g.log == "b" * 16
    assert g.request(alert(3, log="b" * 16)) == {"op": "alerts", "since": 0, "limit": 2}
    out, more = g.page({"alerts": [{**alert(1, log=None), "log": None},
                                   {**alert(2, log=None), "log": None}],
                        "next": 2, "missed": 0, "head": 3, "log": "b" * 16},
                       alert(3, log="b" * 16))
    assert [m["seq"] for m in out] == [1, 2] and not more
    assert all(m["log"] == "b" * 16 for m in out)


def test_a_reply_from_a_new_log_restarts_the_fill():
    g = _Gaps([b""])
    g.baseline({"head": 500, "topic_heads": HEADS, "log": "a" * 16})
    out, more = g.page({"alerts": [alert(1, log="b" * 16)], "next": 1, "missed": 0,
                        "head": 1, "log": "b" * 16}, None)
    assert out == [] and more and g.last == 0
    assert g.request(None)["since"] == 0


def test_a_missed_notice_counts_for_a_subscriber_of_every_topic():
    g = _Gaps([b""])
    g.baseline({"head": 10, "topic_heads": HEADS, "log": "a" * 16})
    assert g.missed_notice({"missed": 5, "from": 11, "to": 15, "log": "a" * 16})
    assert g.missed == 5 and g.last == 15


def test_a_filtered_subscriber_counts_only_its_topics_loss():
    # The gateway's notice counts every topic; a CRIT subscriber learns its
    # own loss exactly from the gap in CRIT's topic numbers.
    g = _Gaps([b"CRIT", b"MISSED", b"ENGINE"])
    g.baseline({"head": 10, "topic_heads": {**HEADS, "CRIT": 4}, "log": "a" * 16})
    assert not g.missed_notice({"missed": 50, "from": 11, "to": 60, "log": "a" * 16})
    assert g.missed == 0
    trigger = alert(70, tseq=7)
    assert g.seen(trigger) == "gap"
    out, more = g.page({"alerts": [], "next": 69, "missed": 0, "head": 70, "log": "a" * 16},
                       trigger)
    assert out == [] and not more
    assert g.finish(trigger) == [{"topic": "MISSED", "missed": 2, "topics": ["CRIT"]}]
    assert g.missed == 2


def test_an_old_logs_messages_still_queued_after_a_restart_are_skipped():
    # A slow subscriber still holds old-log messages when the engine
    # restarts without a data dir: the fill switches to the new log, and
    # nothing of the old one is taken for the new log's numbers after that.
    A, B = "a" * 16, "b" * 16
    g = _Gaps([b""])
    g.baseline({"head": 500, "topic_heads": HEADS, "log": A})
    g.take(alert(501, log=A))
    trigger = alert(505, log=A)
    assert g.seen(trigger) == "gap"
    # The new engine answers the fill: the log changed, ask again from 0.
    out, more = g.page({"alerts": [], "next": 0, "missed": 0, "head": 3, "log": B}, trigger)
    assert out == [] and more and g.log == B and A in g.retired
    assert not g.current(trigger)
    assert g.request(None) == {"op": "alerts", "since": 0, "limit": 100_000}
    out, more = g.page({"alerts": [alert(k, log=B) for k in (1, 2, 3)], "next": 3,
                        "missed": 0, "head": 3, "log": B}, None)
    assert [m["seq"] for m in out] == [1, 2, 3] and not more
    assert g.seen(alert(506, log=A)) == "dup"          # a straggler of the old log
    assert not g.missed_notice({"missed": 9, "from": 1, "to": 9, "log": A})
    assert g.seen(alert(4, log=B)) == "ok" and g.restarts == 1 and g.log == B
