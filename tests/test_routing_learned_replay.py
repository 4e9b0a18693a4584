"""Tests for gateway/routing/learned/replay.py and cli.py: replay, offline evaluation, measures."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gateway.core.routing_settings import LearningSettings
from gateway.core.toml_table import ConfigError
from gateway.routing.learned import cli as learn_cli
from gateway.routing.learned.learner import Learner
from gateway.routing.learned.policy import LearnedPolicy
from gateway.routing.learned.replay import (
    Labelled,
    _serve,
    apgr,
    evaluate,
    quality_curve,
    read_labelled,
    replay,
    share_reaching,
)
from gateway.routing.policy import Decision, Reason, fallback
from tests.learning_helpers import CHAT, PLAN, TAX, FloatArray, learning, still

pytest_plugins = ["tests.routing_fixtures", "tests.learning_fixtures"]
COSTS = {"cheap": 1.0, "reasoning": 10.0}
CHEAP = fallback("cheap", Reason.OUT_OF_SCOPE, "always cheap")


class AlwaysCheap:
    def decide(self, evidence: object) -> Decision:
        return CHEAP


def stream(
    tax: FloatArray, chat: FloatArray, n: int, seed: int, among: range = range(len(TAX))
) -> tuple[list[Labelled], FloatArray]:
    """``n`` prompts drawn from both classes (``among`` of each): the cheap tier fails every
    tax question."""
    rng = random.Random(seed)
    items, vectors = [], []
    for _ in range(n):
        taxing = rng.random() < 0.5
        i = rng.choice(among)
        text, vector = (TAX[i], tax[i]) if taxing else (CHAT[i], chat[i])
        items.append(Labelled(text, {"cheap": not taxing, "reasoning": True}))
        vectors.append(vector)
    return items, np.stack(vectors)


def run(items: list[Labelled], vectors: FloatArray, seed: int, rate: float = 0.3,
        **changes: object) -> object:
    settings = learning(k=8, explore_share=0.05, **changes)
    policy = LearnedPolicy(AlwaysCheap(), Learner(settings, clock=still()), PLAN, settings,
                           COSTS, seed=seed)
    return replay(items, vectors, policy, lambda _: CHEAP, feedback_rate=rate, seed=seed,
                  costs=COSTS)


def test_a_replay_with_the_same_seed_gives_the_same_report(
    tax_vectors: FloatArray, chat_vectors: FloatArray
) -> None:
    items, vectors = stream(tax_vectors, chat_vectors, 200, seed=1)
    assert run(items, vectors, seed=3) == run(items, vectors, seed=3)


def test_replay_learns_to_send_the_failing_class_to_reasoning(
    tax_vectors: FloatArray, chat_vectors: FloatArray
) -> None:
    items, vectors = stream(tax_vectors, chat_vectors, 400, seed=2)
    report = run(items, vectors, seed=4)
    unlearned = run(items, vectors, seed=4, rate=0.0).second_half  # type: ignore[attr-defined]
    second = report.second_half  # type: ignore[attr-defined]
    # Without signals every prompt goes cheap and the tax half fails; with them, tax questions
    # go to reasoning while chat stays cheap: about half of the calls, at nearly full quality.
    assert second.quality > unlearned.quality + 0.3
    assert second.quality > report.always_cheap_quality + 0.3  # type: ignore[attr-defined]
    assert 0.3 < second.strong_share < 0.7
    assert second.cost < 1.0
    assert report.prompts == 400  # type: ignore[attr-defined]


def test_an_anchor_no_nearest_neighbour_falls_below_replays_exactly_as_without_one(
    tax_vectors: FloatArray, chat_vectors: FloatArray
) -> None:
    items, vectors = stream(tax_vectors, chat_vectors, 200, seed=1)
    # Every neighbour that counts reaches the floor, so an anchor at the floor changes nothing.
    assert run(items, vectors, seed=3, anchor=learning().floor) == run(items, vectors, seed=3)


def test_with_an_anchor_replay_is_repeatable_and_still_learns_the_failing_class(
    tax_vectors: FloatArray, chat_vectors: FloatArray
) -> None:
    items, vectors = stream(tax_vectors, chat_vectors, 400, seed=2)
    anchored = run(items, vectors, seed=4, anchor=0.95)
    assert anchored == run(items, vectors, seed=4, anchor=0.95)
    assert anchored != run(items, vectors, seed=4)  # the anchor above the neighbours tells
    unlearned = run(items, vectors, seed=4, rate=0.0).second_half  # type: ignore[attr-defined]
    second = anchored.second_half  # type: ignore[attr-defined]
    assert second.quality > unlearned.quality + 0.3
    assert 0.3 < second.strong_share < 0.7


def test_replay_marks_the_outcome_of_an_escalation_as_observed_after_it(
    tax_vectors: FloatArray,
) -> None:
    # One tax question both tiers get wrong, every outcome coming back: the cheap failure
    # escalates, and the reasoning failure seen then is the escalation's.
    items = [Labelled(TAX[0], {"cheap": False, "reasoning": False})]

    def learned(escalated_weight: float) -> Learner:
        settings = learning(k=8, escalated_weight=escalated_weight)
        policy = LearnedPolicy(AlwaysCheap(), Learner(settings, clock=still()), PLAN, settings,
                               COSTS, seed=0)
        report = replay(items, tax_vectors[:1], policy, lambda _: CHEAP, feedback_rate=1.0,
                        seed=0, costs=COSTS)
        assert report.whole.escalations == 1
        return policy.learner

    left_out, counted = learned(0.0), learned(1.0)
    assert left_out.stats().remembered == 1  # the cheap failure only
    assert left_out.estimate(tax_vectors[0], ("reasoning",))["reasoning"].count == 0
    assert counted.stats().remembered == 2
    assert counted.estimate(tax_vectors[0], ("reasoning",))["reasoning"].count == 1


def test_replay_scores_each_outcome_against_the_estimate_its_tier_was_chosen_with(
    chat_vectors: FloatArray,
) -> None:
    # A chat prompt the cheap tier always gets right, every outcome coming back: the first is
    # decided by the intent routes (nothing to score), each later one by an estimate below 1
    # that the outcome (1) then exceeds.
    items = [Labelled(CHAT[0], {"cheap": True, "reasoning": True})] * 20
    settings = learning(k=8)
    policy = LearnedPolicy(AlwaysCheap(), Learner(settings, clock=still()), PLAN, settings,
                           COSTS, seed=0)
    replay(items, np.stack([chat_vectors[0]] * 20), policy, lambda _: CHEAP,
           feedback_rate=1.0, seed=0, costs=COSTS)
    estimate = policy.learner.estimate(chat_vectors[0], ("cheap",), prior={"cheap": 0.9})
    assert 0.0 < policy.learner.bias("cheap") < 1.0 - 0.9 + 1e-9
    assert estimate["cheap"].p > 0.9 and policy.learner.bias("reasoning") == 0.0


def test_a_tier_answering_for_an_unlabelled_chosen_tier_is_not_scored_as_chosen(
    chat_vectors: FloatArray,
) -> None:
    # The decision chose a tier the data does not label; the cheapest labelled tier answers in
    # its place, which no estimate chose: its outcome is learned but not scored.
    learner = Learner(learning(), clock=still())
    chosen = ("nano", {"nano": 0.7, "cheap": 0.5})
    _serve(Labelled(CHAT[0], {"cheap": True, "reasoning": True}), chat_vectors[0], chosen,
           ("cheap", "reasoning"), PLAN, learner, random.Random(0), 1.0, 0.0, COSTS, None)
    assert learner.stats().remembered == 1 and learner.bias("cheap") == 0.0


def test_without_feedback_nothing_is_learned_and_every_prompt_stays_cheap(
    tax_vectors: FloatArray, chat_vectors: FloatArray
) -> None:
    items, vectors = stream(tax_vectors, chat_vectors, 100, seed=5)
    report = run(items, vectors, seed=6, rate=0.0)
    assert report.whole.strong_share == 0.0  # type: ignore[attr-defined]
    assert report.whole.quality == pytest.approx(  # type: ignore[attr-defined]
        report.always_cheap_quality)  # type: ignore[attr-defined]


def test_the_quality_curve_sends_the_lowest_scores_to_the_strong_tier_first() -> None:
    weak = np.array([1.0, 0.0, 0.0, 1.0])
    strong = np.array([1.0, 1.0, 1.0, 0.0])
    score = np.array([0.9, 0.1, 0.2, 0.8], dtype=np.float32)  # prompts 1 and 2 gain
    curve = quality_curve(score, weak, strong)
    assert curve[:, 0].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve[:, 1].tolist() == [0.5, 0.75, 1.0, 0.75, 0.75]  # prompt 3 loses by it
    assert share_reaching(curve, 0.75) == 0.25
    assert share_reaching(curve, 0.875) == pytest.approx(0.375)
    assert share_reaching(curve, 1.5) == 1.0


def test_apgr_of_a_random_order_is_one_half_and_of_a_perfect_one_above() -> None:
    rng = np.random.default_rng(0)
    weak = (rng.random(4000) < 0.6).astype(float)
    strong = np.maximum(weak, rng.random(4000) < 0.5).astype(float)
    random_curve = quality_curve(rng.random(4000).astype(np.float32), weak, strong)
    assert apgr(random_curve, weak.mean(), strong.mean()) == pytest.approx(0.5, abs=0.03)
    perfect = quality_curve((weak - strong).astype(np.float32), weak, strong)
    assert apgr(perfect, weak.mean(), strong.mean()) > 0.9


def test_eval_learns_the_training_set_and_beats_random_on_the_test_set(
    tax_vectors: FloatArray, chat_vectors: FloatArray
) -> None:
    train, train_vectors = stream(tax_vectors, chat_vectors, 100, seed=7, among=range(8))
    test, test_vectors = stream(tax_vectors, chat_vectors, 100, seed=8, among=range(8, 12))
    report = evaluate(train, train_vectors, test, test_vectors,
                      Learner(learning(k=8), clock=still()), PLAN)
    assert report.share_for_95 < report.random_share_for_95
    assert report.apgr > 0.5
    assert report.cpt50 <= report.cpt80 <= 1.0


def test_a_bad_labelled_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "hi", "outcomes": {"cheap": true, "reasoning": true}}\n'
                    '{"text": "hi", "outcomes": {"cheap": "yes"}}\n', "utf-8")
    with pytest.raises(ConfigError, match=r"data\.jsonl:2"):
        read_labelled(path)


def test_a_text_holding_a_unicode_line_separator_is_one_line(tmp_path: Path) -> None:
    # MMLU's prompts hold U+0085 unescaped ("help to create...\x85"); JSON allows it raw, and
    # str.splitlines would cut the line there.
    texts = ["Functional structures help to create\x85\nA. teamwork", "a\u2028b\x1cc"]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"text": t, "outcomes": {"cheap": True}},
                                       ensure_ascii=False) + "\r\n" for t in texts), "utf-8")
    assert [i.text for i in read_labelled(path)] == texts


def write_jsonl(path: Path, items: list[Labelled]) -> None:
    path.write_text("".join(json.dumps({"text": i.text, "outcomes": dict(i.outcomes)}) + "\n"
                            for i in items), "utf-8")


def test_learn_replay_and_eval_commands_write_their_reports(
    tmp_path: Path, tax_vectors: FloatArray, chat_vectors: FloatArray,
    routing_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    items, _ = stream(tax_vectors, chat_vectors, 60, seed=9)
    data = tmp_path / "stream.jsonl"
    write_jsonl(data, items)
    common = ["--cache", str(tmp_path / "cache"), "--model-dir", str(routing_model_dir)]
    assert learn_cli.main(["learn", "replay", "--data", str(data), "--prior", "default",
                           "--seed", "3", "--json", str(tmp_path / "replay.json"), *common]) == 0
    out = capsys.readouterr().out
    assert "second half" in out and "reasoning share" in out
    report = json.loads((tmp_path / "replay.json").read_text("utf-8"))
    assert report["prompts"] == 60 and report["seed"] == 3 and len(report["curve"]) == 10
    assert learn_cli.main(["learn", "eval", "--train", str(data), "--test", str(data),
                           "--json", str(tmp_path / "eval.json"), *common]) == 0
    evaluation = json.loads((tmp_path / "eval.json").read_text("utf-8"))
    assert evaluation["train"] == evaluation["test"] == 60
    assert 0.0 <= evaluation["share_for_95"] <= 1.0
    assert "CPT(50%)" in capsys.readouterr().out


def test_learn_replay_refuses_data_without_two_served_tiers(
    tmp_path: Path, routing_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "stream.jsonl"
    data.write_text('{"text": "hi", "outcomes": {"cheap": true}}\n', "utf-8")
    status = learn_cli.main(["learn", "replay", "--data", str(data), "--prior", "default",
                             "--cache", str(tmp_path / "cache"),
                             "--model-dir", str(routing_model_dir)])
    assert status == 2
    assert "two or more served tiers" in capsys.readouterr().err


def test_the_command_line_overrides_reference_margin_and_bias_correction(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ws = SimpleNamespace(routing=SimpleNamespace(learning=LearningSettings()))
    names = ("quality_target", "explore_share", "k", "sharpness", "calibration_window",
             "relative_to", "margin", "bias_correction", "escalated_weight")
    unset = dict.fromkeys(names)
    kept = learn_cli.learning_settings(argparse.Namespace(**unset), ws)  # type: ignore[arg-type]
    assert kept == LearningSettings()
    args = argparse.Namespace(**{**unset, "relative_to": "gain", "margin": 0.5,
                                 "bias_correction": "off", "escalated_weight": 0.25})
    changed = learn_cli.learning_settings(args, ws)  # type: ignore[arg-type]
    assert (changed.relative_to, changed.margin, changed.bias_correction,
            changed.escalated_weight) == ("gain", 0.5, False, 0.25)
    # As [routing.learning] takes them: nan, inf and negatives are refused by name.
    for flag, value in (("--margin", "-1"), ("--margin", "nan"), ("--sharpness", "inf")):
        with pytest.raises(SystemExit) as exited:
            learn_cli.main(["learn", "replay", "--data", "stream.jsonl", flag, value])
        assert exited.value.code == 2
        assert f"argument {flag}: expected a finite number of 0 or more" in capsys.readouterr().err
