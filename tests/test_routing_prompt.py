"""Tests for gateway/routing/prompt.py: which text of a conversation routing embeds."""

from __future__ import annotations

from gateway.core.chat import Message
from gateway.routing.prompt import head_and_tail, routing_text


def user(text: str) -> Message:
    return Message("user", text)


def test_the_last_user_turn_is_embedded_without_system_or_assistant_text() -> None:
    messages = (
        Message("system", "You are a helpful assistant for ACME corp."),
        user("Write a Python function that merges two sorted lists into one sorted list."),
        Message("assistant", "Here it is: def merge(a, b): ..."),
        user("Separately, what is the capital of Australia and when did it become the capital?"),
    )
    assert routing_text(messages) == (
        "Separately, what is the capital of Australia and when did it become the capital?"
    )


def test_a_short_follow_up_brings_the_turn_before_it() -> None:
    messages = (
        user("Translate 'good morning' into Spanish."),
        Message("assistant", "Buenos días."),
        user("and in French?"),
    )
    assert routing_text(messages) == "Translate 'good morning' into Spanish.\nand in French?"


def test_context_is_bounded_by_context_turns() -> None:
    messages = (user("first"), user("second"), user("third"), user("why?"))
    assert routing_text(messages, context_turns=1) == "third\nwhy?"
    assert routing_text(messages, context_turns=0) == "why?"


def test_multi_part_content_uses_its_text_parts() -> None:
    message = Message("user", [{"type": "text", "text": "describe"},
                               {"type": "image_url", "image_url": {"url": "x"}},
                               {"type": "text", "text": "this picture"}])
    assert routing_text((message,)) == "describe\nthis picture"


def test_without_user_text_the_last_text_is_used() -> None:
    assert routing_text((Message("system", "be brief"),)) == "be brief"
    assert routing_text((Message("assistant", None),)) == ""


def test_a_long_prompt_keeps_its_head_and_its_tail() -> None:
    logs = " ".join(f"line{i}" for i in range(1000))
    text = "Here are my logs: " + logs + " Why does the service crash at startup?"
    cut = head_and_tail(text, max_tokens=60)
    assert cut.startswith("Here are my logs: line0")
    assert cut.endswith("Why does the service crash at startup?")
    assert " … " in cut and len(cut) < 600


def test_a_short_prompt_is_left_alone() -> None:
    assert head_and_tail("  keep   my spacing  ", 10) == "  keep   my spacing  "
