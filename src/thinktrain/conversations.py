"""Conversation datasets for the assistant phase: OpenAssistant oasst1's message trees become conversations.

oasst1 holds one message per row (message_id, parent_id, message_tree_id, role prompter/assistant, text, lang, rank,
deleted, review_result, ...); a conversation is a path through a tree. As the dataset's authors train on it (their
"top-1" SFT sets, and Guanaco after them): start at the tree's root prompt and at every turn follow the reply that
ranked best (`rank` 0 is the best of its siblings; unranked replies come after ranked ones, then by order), until a
message has no reply; a path that ends with the user's turn drops it. Deleted messages and those that failed review
are left out. One conversation per tree, as `messages` ({role: user|assistant, content}), which SFT trains on every
assistant turn of. `lang` (recipe key) keeps the trees whose root is in that language.
"""

from __future__ import annotations

from .errors import RecipeError

TREE_COLUMNS = ("message_id", "parent_id", "message_tree_id", "role", "text")
ROLES = {"prompter": "user", "assistant": "assistant"}


def is_message_tree(columns) -> bool:
    """Rows of oasst1's shape: one message each, linked by parent_id."""
    return set(TREE_COLUMNS) <= set(columns or [])


def _usable(row: dict) -> bool:
    return not row.get("deleted") and row.get("review_result") is not False and row.get("role") in ROLES


def _order(row: dict, position: int) -> tuple:
    rank = row.get("rank")
    return (rank is None, rank if rank is not None else 0, position)


def top_paths(rows: list[dict], lang: str | None = None) -> list[list[dict]]:
    """Each tree's best-ranked path as a conversation (see the module doc), trees in order of first appearance."""
    children, roots, position = {}, [], {}
    for i, row in enumerate(rows):
        if not _usable(row):
            continue
        position[row["message_id"]] = i
        if row.get("parent_id") is None:
            if lang is None or row.get("lang") == lang:
                roots.append(row)
        else:
            children.setdefault(row["parent_id"], []).append(row)
    conversations = []
    for root in roots:
        path, node = [root], root
        while children.get(node["message_id"]):
            node = min(children[node["message_id"]], key=lambda r: _order(r, position[r["message_id"]]))
            path.append(node)
        if path[-1]["role"] != "assistant":
            path = path[:-1]
        if len(path) >= 2:
            conversations.append([{"role": ROLES[m["role"]], "content": m["text"]} for m in path])
    return conversations


def from_message_trees(ds, lang: str | None, name: str, split: str):
    """A split of oasst1-shaped rows -> a Dataset of `messages`, one per tree (its best-ranked path)."""
    from datasets import Dataset

    conversations = top_paths(ds.to_list(), lang)
    if not conversations:
        where = f" in language '{lang}'" if lang else ""
        langs = sorted({r for r in ds["lang"] if r}) if "lang" in ds.column_names else []
        raise RecipeError(f"lang: split '{split}' of '{name}' has no conversation{where} (a root prompt with an "
                          f"assistant reply){'; its languages: ' + ', '.join(langs[:20]) if langs else ''}")
    return Dataset.from_list([{"messages": c} for c in conversations])


def by_lang(ds, lang: str | None, name: str, split: str):
    """Rows whose `lang` column is `lang` (data other than message trees)."""
    if lang is None:
        return ds
    if "lang" not in (ds.column_names or []):
        raise RecipeError(f"lang: split '{split}' of '{name}' has no `lang` column to filter by; it has: "
                          f"{', '.join(ds.column_names or [])}")
    kept = ds.filter(lambda value: value == lang, input_columns="lang", desc="Filtering by language")
    if hasattr(kept, "__len__") and len(kept) == 0:
        raise RecipeError(f"lang: no row of split '{split}' of '{name}' is in language '{lang}'")
    return kept
