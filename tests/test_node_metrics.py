"""gateway/observability/node_metrics.py: the expositions of a node's processes, labelled and
merged into one that Prometheus's own parser reads (one HELP and TYPE per family)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability import node_metrics
from gateway.observability.node_metrics import merge, process_text


def _registry(requests: float, queue: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("gateway_requests", "Requests.", ("status",), registry=registry).labels("200").inc(
        requests)
    Gauge("gateway_queue", "Queue depth.", registry=registry).set(queue)
    Histogram("gateway_seconds", "Latency.", buckets=(0.1, 1.0), registry=registry).observe(0.5)
    return registry


def test_every_series_of_a_process_carries_its_index_with_or_without_other_labels() -> None:
    text = process_text(_registry(3, 7), 1)
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert samples
    assert {s.labels["process"] for s in samples} == {"1"}
    assert ('gateway_requests_total{process="1",status="200"} 3.0' in text
            or 'gateway_requests_total{process="1",status="200"} 3' in text)
    assert 'gateway_queue{process="1"} 7.0' in text


def test_merged_processes_keep_each_family_once_with_every_process_series() -> None:
    merged = merge([process_text(_registry(3, 7), 0), process_text(_registry(5, 1), 1)])
    assert merged.count("# TYPE gateway_requests_total counter") + merged.count(
        "# TYPE gateway_requests counter") == 1
    families = {f.name: f for f in text_string_to_metric_families(merged)}
    requests = {s.labels["process"]: s.value for s in families["gateway_requests"].samples
                if s.name == "gateway_requests_total"}
    assert requests == {"0": 3.0, "1": 5.0}
    queue = {s.labels["process"]: s.value for s in families["gateway_queue"].samples}
    assert queue == {"0": 7.0, "1": 1.0}
    buckets = [s for s in families["gateway_seconds"].samples if s.name.endswith("_bucket")]
    assert {s.labels["process"] for s in buckets} == {"0", "1"}


def test_a_family_s_lines_stay_together_in_the_merged_text() -> None:
    # The parser starts a new family at each HELP/TYPE: a family split in two comes back twice.
    merged = merge([process_text(_registry(1, 1), 0), process_text(_registry(2, 2), 1)])
    names = [f.name for f in text_string_to_metric_families(merged)]
    assert len(names) == len(set(names)) >= 3, names


async def test_a_dead_or_hung_sibling_is_left_out_of_the_scrape_not_failing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node_metrics, "SIBLING_TIMEOUT_S", 0.2)
    with socket.socket(socket.AF_UNIX) as dead:  # its file stays, nobody listens on it
        dead.bind(str(node_metrics.socket_path(tmp_path, 1)))

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the request, never answers; ends when the client gives up
        writer.close()

    hung = await asyncio.start_unix_server(hang, str(node_metrics.socket_path(tmp_path, 2)))
    async with hung:
        text = await node_metrics.node_text(process_text(_registry(3, 7), 0), tmp_path, 0, None)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["gateway_node_processes_scraped"].samples[0].value == 1
    assert {s.labels["process"] for s in families["gateway_queue"].samples} == {"0"}


SHARED = frozenset({"gateway_budget_used_ratio"})


def _with_budget(queue: float, budget: float) -> CollectorRegistry:
    registry = _registry(1, queue)
    Gauge("gateway_budget_used_ratio", "Budget.", ("period",), registry=registry).labels(
        "day").set(budget)
    return registry


def test_a_shared_family_comes_once_from_the_answering_process_without_a_process_label() -> None:
    answering = process_text(_with_budget(7, 0.25), 0, SHARED)
    sibling = process_text(_with_budget(1, 0.5), 1, SHARED, with_shared=False)
    assert "gateway_budget_used_ratio" not in sibling
    families = {f.name: f for f in text_string_to_metric_families(merge([answering, sibling]))}
    budget = families["gateway_budget_used_ratio"].samples
    assert [(s.labels, s.value) for s in budget] == [({"period": "day"}, 0.25)]
    assert {s.labels["process"] for s in families["gateway_queue"].samples} == {"0", "1"}


def test_a_label_value_holding_a_unicode_line_separator_stays_one_sample() -> None:
    # The format ends lines at \n only; str.splitlines would cut at U+2028 and U+0085.
    odd = "tax\u2028refund\x85"
    registry = CollectorRegistry()
    Gauge("gateway_queue", "Queue depth.", ("route",), registry=registry).labels(odd).set(2)
    merged = merge([process_text(registry, 0), process_text(_registry(1, 1), 1)])
    samples = {f.name: f for f in text_string_to_metric_families(merged)}["gateway_queue"].samples
    assert {(s.labels.get("route"), s.labels["process"], s.value) for s in samples} == {
        (odd, "0", 2.0), (None, "1", 1.0)}
