"""The alert message's parts and its delivery against a real HTTP server on 127.0.0.1 (unit tier; the message built
from a real lake and the command are tested in test_events_job.py, the DAG's notifier in test_airflow.py)."""

from __future__ import annotations

import socket
import time
from datetime import date

import numpy as np
import pandas as pd
from webhook import Webhook

from anomalake.pipelines.reporting import alerts


def test_a_webhook_that_fails_twice_gets_the_message_on_the_third_try():
    with Webhook(statuses=(500, 502)) as hook:
        started = time.monotonic()
        assert alerts.post(hook.url, {"day": "2026-02-07"}) is None
        assert hook.messages == [{"day": "2026-02-07"}] and time.monotonic() - started >= 3, "waits 1 s, then 2 s"


def test_a_webhook_that_stays_down_or_refuses_is_reported_not_raised():
    with Webhook(statuses=(500, 500, 500)) as hook:
        assert alerts.post(hook.url, {"day": "x"}, tries=3) == "HTTP 500" and hook.messages == []
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert "refused" in alerts.post(f"http://127.0.0.1:{port}/hook", {"day": "x"}, tries=1).lower()


def test_a_webhook_that_never_answers_times_out():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        problem = alerts.post(f"http://127.0.0.1:{silent.getsockname()[1]}/", {"day": "x"}, timeout=0.5, tries=1)
        assert "timed out" in problem and time.monotonic() - started < 5


def test_explanations_become_plain_json_values():
    steps = np.array(["2026-02-07T12:20:00", "2026-02-07T12:25:00"], dtype="datetime64[us]")
    assert alerts._plain(steps) == ["2026-02-07T12:20:00Z", "2026-02-07T12:25:00Z"]
    assert alerts._plain([("memory", np.float64(0.9)), ("cpu", 0.1)]) == {"memory": 0.9, "cpu": 0.1}
    assert alerts._plain(np.array([1, 2], dtype=np.int32)) == [1, 2] and alerts._plain(float("nan")) is None
    assert alerts._iso(pd.Timestamp("2026-02-07 13:00", tz="Europe/Berlin")) == "2026-02-07T12:00:00Z"
    assert (
        alerts.report_location("https://r.example.com/lake/", "telemetry", "dense_autoencoder", date(2026, 2, 7))
        == "https://r.example.com/lake/scores/telemetry/detector=dense_autoencoder/dt=2026-02-07/_report.html"
    )
