"""The assistant phase's datasets: oasst1's message trees become conversations by the best-ranked path (pinned on a
hand-made tree), `lang` keeps a language, and SFT on UltraChat- and oasst1-shaped conversations puts its loss on
every assistant turn and nothing else (checked on what the trainer trains)."""

from __future__ import annotations

import json

import pytest

from conversation_rows import oasst_rows, oasst_tree, ultrachat_rows
from thinktrain.conversations import is_message_tree, top_paths
from thinktrain.errors import RecipeError


def test_a_tree_becomes_its_best_ranked_path():
    assert is_message_tree(oasst_tree()[0])
    assert top_paths(oasst_tree()) == [[
        {"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3 + 3?"}, {"role": "assistant", "content": "6."}]]


def test_a_path_ends_with_an_answer_and_lang_keeps_a_language():
    conversations = top_paths(oasst_rows(2), lang="en")
    assert conversations == [[{"role": "user", "content": f"What is {i} + {i}?"},
                              {"role": "assistant", "content": f"{2 * i}."},
                              {"role": "user", "content": "Double it?"},
                              {"role": "assistant", "content": f"{4 * i}."}] for i in range(2)]  # "Thanks!" trimmed
    assert top_paths(oasst_rows(2), lang="es") == [[{"role": "user", "content": "¿Cuánto es 1 + 1?"},
                                                    {"role": "assistant", "content": "2."}]]
    assert len(top_paths(oasst_rows(2))) == 3  # no lang: every tree


def test_a_language_no_tree_has_is_named_with_the_ones_there_are():
    from datasets import Dataset

    from thinktrain.conversations import from_message_trees

    with pytest.raises(RecipeError, match=r"^lang: split 'train' of 'oasst1' has no conversation in language 'fr' .*"
                                          r"its languages: en, es$"):
        from_message_trees(Dataset.from_list(oasst_rows(2)), "fr", "oasst1", "train")


def write(folder, name, rows):
    (folder / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@pytest.fixture
def trained(monkeypatch, tmp_path, run_cli):
    """Run `thinktrain train RECIPE` on a folder, and return what the trainer trained on: per row, the text of the
    tokens with a loss and of those without."""
    from thinktrain import run

    seen = {}
    train = run.train

    def capture(trainer, recipe):
        seen["trainer"] = trainer
        return train(trainer, recipe)

    monkeypatch.setattr(run, "train", capture)

    def go(recipe, folder, *extra):
        code, out, err = run_cli("train", recipe, "--model_name_or_path", "scratch:micro", "--dataset_name",
                                 str(folder), "--max_steps", "2", "--bf16", "false", "--push_to_hub", "false",
                                 "--report_to", "none", "--output_dir", str(tmp_path / "out"), "--dtype", "float32",
                                 "--gradient_checkpointing", "false", "--eval_strategy", "no", *extra)
        assert code == 0, err
        trainer = seen["trainer"]
        tok = trainer.processing_class
        rows = []
        for row in trainer.train_dataset:  # TRL keeps the masked labels with the tokens (-100: no loss)
            ids, labels = row["input_ids"], row["labels"]
            rows.append((tok.decode([t for t, label in zip(ids, labels) if label != -100]),
                         tok.decode([t for t, label in zip(ids, labels) if label == -100])))
        return out, rows

    return go


@pytest.mark.slow
def test_sft_on_ultrachat_trains_every_assistant_turn_and_nothing_else(trained, tmp_path):
    from pathlib import Path

    folder = tmp_path / "ultrachat"
    (folder / "data").mkdir(parents=True)  # the Hub repo's layout: data/{split}-NNNNN-of-NNNNN names the splits
    write(folder / "data", "train_sft-00000-of-00001.jsonl", ultrachat_rows(12))
    write(folder / "data", "test_sft-00000-of-00001.jsonl", ultrachat_rows(4))
    out, rows = trained(Path(__file__).parents[1] / "recipes/sft_ultrachat.yaml", folder)
    assert "(12 train" in out
    loss, no_loss = rows[0]
    assert loss == "2 spiders have 16 legs.<|im_end|>Also 16: eight each.<|im_end|>"
    assert "How many legs do 2 spiders have?" in no_loss and "And how many eyes" in no_loss
    assert "16 legs" not in no_loss


@pytest.mark.slow
def test_sft_on_oasst1_trains_the_best_path_of_each_english_tree(trained, tmp_path):
    from pathlib import Path

    folder = tmp_path / "oasst1"
    folder.mkdir()
    write(folder, "train.jsonl", oasst_rows(12))
    write(folder, "validation.jsonl", oasst_rows(2))
    out, rows = trained(Path(__file__).parents[1] / "recipes/sft_oasst1.yaml", folder)
    assert "(12 train" in out  # 12 English trees; the Spanish one left out
    loss, no_loss = rows[0]
    assert loss == "0.<|im_end|>0.<|im_end|>"
    assert "What is 0 + 0?" in no_loss and "Double it?" in no_loss and "Thanks!" not in no_loss + loss
    assert "1." not in loss  # the rank-1 reply is not trained
