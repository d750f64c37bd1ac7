"""Rows in the published shapes of the conversation datasets (their cards' columns), for tests and quick looks."""

from __future__ import annotations


def ultrachat_rows(n: int = 12) -> list[dict]:
    """HuggingFaceH4/ultrachat_200k: prompt, prompt_id, messages (user/assistant turns, several per row)."""
    rows = []
    for i in range(n):
        prompt = f"How many legs do {i + 2} spiders have?"
        rows.append({"prompt": prompt, "prompt_id": f"{i:064x}", "messages": [
            {"content": prompt, "role": "user"},
            {"content": f"{i + 2} spiders have {8 * (i + 2)} legs.", "role": "assistant"},
            {"content": "And how many eyes, if each has 8?", "role": "user"},
            {"content": f"Also {8 * (i + 2)}: eight each.", "role": "assistant"}]})
    return rows


def _message(mid, parent, tree, role, text, rank=None, lang="en", deleted=False, review=True) -> dict:
    """One oasst1 row, with every column of the card (the ones thinktrain does not read set plausibly)."""
    return {"message_id": mid, "parent_id": parent, "user_id": f"user-{mid}", "created_date": "2023-02-05T14:23:50",
            "text": text, "role": role, "lang": lang, "review_count": 3, "review_result": review,
            "deleted": deleted, "rank": rank, "synthetic": False, "model_name": None,
            "detoxify": {"toxicity": 0.0003}, "message_tree_id": tree, "tree_state": "ready_for_export",
            "emojis": {"name": ["+1"], "count": [2]}, "labels": {"name": ["spam"], "value": [0.0], "count": [3]}}


def oasst_tree() -> list[dict]:
    """A hand-made tree whose best-ranked path is pinned in tests/test_conversations.py:

    r  (prompter) "What is 2 + 2?"
    ├─ a1 (assistant, rank 1) "5"
    ├─ a0 (assistant, rank 0) "4."                       <- best reply
    │   ├─ p1 (prompter, no rank) "And 3 + 3?"           <- first of the unranked
    │   │   ├─ ax (assistant, rank 0, deleted) "7"       <- deleted: skipped
    │   │   └─ ay (assistant, rank 1) "6."               <- best that remains
    │   └─ p2 (prompter, no rank) "Why?"
    └─ a2 (assistant, rank 2, failed review) "four"
    """
    t = "tree-1"
    return [_message("r", None, t, "prompter", "What is 2 + 2?"),
            _message("a1", "r", t, "assistant", "5", rank=1),
            _message("a0", "r", t, "assistant", "4.", rank=0),
            _message("p1", "a0", t, "prompter", "And 3 + 3?"),
            _message("ax", "p1", t, "assistant", "7", rank=0, deleted=True),
            _message("ay", "p1", t, "assistant", "6.", rank=1),
            _message("p2", "a0", t, "prompter", "Why?"),
            _message("a2", "r", t, "assistant", "four", rank=2, review=False)]


def oasst_rows(n: int = 12) -> list[dict]:
    """`n` English trees of two exchanges (the last prompt unanswered: trimmed), and one Spanish tree."""
    rows = []
    for i in range(n):
        t = f"tree-{i}"
        rows += [_message(f"{t}-q", None, t, "prompter", f"What is {i} + {i}?"),
                 _message(f"{t}-a", f"{t}-q", t, "assistant", f"{2 * i}.", rank=0),
                 _message(f"{t}-b", f"{t}-q", t, "assistant", f"{2 * i + 1}.", rank=1),
                 _message(f"{t}-q2", f"{t}-a", t, "prompter", "Double it?"),
                 _message(f"{t}-a2", f"{t}-q2", t, "assistant", f"{4 * i}.", rank=0),
                 _message(f"{t}-q3", f"{t}-a2", t, "prompter", "Thanks!")]
    rows += [_message("es-q", None, "tree-es", "prompter", "¿Cuánto es 1 + 1?", lang="es"),
             _message("es-a", "es-q", "tree-es", "assistant", "2.", rank=0, lang="es")]
    return rows
