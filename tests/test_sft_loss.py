"""Which tokens carry the SFT loss: the rows prefloop exports go through the trainer prefloop builds
(TRL's SFTTrainer, its tokenization and collator), and the tokens whose label is not -100 are
counted. With ``sft.loss: completion`` (the default) only the reply and its end-of-turn carry loss
— with SmolLM2's chat template and with Qwen2.5's, neither of which has ``{% generation %}``
markers; with ``loss: all`` every token does. The tiny model with SmolLM2's real tokenizer: no
135M weights are loaded."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

SYSTEM = "You are a support agent for Acme. Greet the customer by name."
REPLIES = {"Hi, I'm Ann. My order is late.": "Hi Ann! Sorry about the delay: it ships today. Anything else?",
           "Please cancel my plan.": "Hello! Your plan is cancelled. Can I help with anything else?"}


def _tokenizer(template: str):  # noqa: ANN202
    from prefloop.training.loading import load_tokenizer

    tok = load_tokenizer("tiny:llama-tiny")  # SmolLM2's tokenizer and chat template
    if template == "qwen2.5":  # Qwen2.5-Instruct's template as TRL ships it (same ChatML special tokens)
        tok.chat_template = (importlib.resources.files("trl") / "chat_templates" / "qwen2_5.jinja").read_text()
    return tok


def _labelled_rows(queue) -> dict[str, object]:  # noqa: ANN001
    """The store's SFT rows as prefloop exports them (a support lead corrected each reply), both types;
    one prompt has a system turn, one has none (the template may add its default)."""
    from prefloop.feedback.export import build_sft_dataset

    lead = queue.ensure_annotator("lead")
    for i, (question, reply) in enumerate(REPLIES.items()):
        system = [{"role": "system", "content": SYSTEM}] if i == 0 else []
        queue.add_edit([*system, {"role": "user", "content": question}], "a careless first draft")
    while (task := queue.claim(lead)) is not None:
        queue.submit(lead, task.task_id, {"text": REPLIES[task.prompt_text]})
    return {t: build_sft_dataset(queue.store, dataset_type=t) for t in ("prompt-completion", "messages")}


def _loss_tokens(tok, dataset, loss: str, out: Path) -> list[tuple[str, int, int]]:  # noqa: ANN001
    """(text of the loss-bearing tokens, their count, the sequence's length) per row, from a batch of
    the trainer's own collator."""
    from prefloop.training.config import TrainingConfig
    from prefloop.training.trainers import build_trainer

    cfg = TrainingConfig.model_validate({"model": {"source": "tiny:llama-tiny", "device": "cpu"}, "lora": {"r": 2, "alpha": 4},
                                         "sft": {"max_steps": 1, "batch_size": 2, "max_length": 256, "loss": loss}})
    trainer = build_trainer("sft", cfg, dataset, out, tokenizer=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    rows = []
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        keep = labels != -100
        rows.append((tok.decode(ids[keep]), int(keep.sum()), int(mask.sum())))
    return rows


@pytest.mark.parametrize("template", ["smollm2", "qwen2.5"])
def test_only_the_reply_carries_loss_by_default(queue, tmp_path: Path, template: str) -> None:  # noqa: ANN001
    from prefloop.training.trainers import sft_rows

    tok = _tokenizer(template)
    data = _labelled_rows(queue)
    pc, messages = data["prompt-completion"], data["messages"]
    assert len(pc) == len(messages) == 2

    expected = []
    for row in pc:
        full = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        assert full.startswith(prompt)
        reply = full[len(prompt):]
        assert reply == row["completion"][0]["content"] + tok.eos_token + "\n"  # the reply, its end of turn
        expected.append((reply, len(tok(full)["input_ids"]), len(tok(prompt)["input_ids"])))

    # the default, on the default export: the reply and its end of turn, nothing else
    completion_only = _loss_tokens(tok, pc, "completion", tmp_path / "a")
    for (text, n, length), (reply, full_len, prompt_len) in zip(completion_only, expected, strict=True):
        assert text == reply and n == full_len - prompt_len and length == full_len
        assert SYSTEM not in text and "Ann. My order" not in text
    # an older messages export, trained with the default, is split into the same prompt and reply first
    assert sft_rows(messages, "completion").to_list() == pc.select_columns(["prompt", "completion"]).to_list()
    # loss: all — every token, system and user turns too (what the messages export used to train on)
    cases = [("messages", messages)] + ([("prompt-completion", pc)] if template == "smollm2" else [])
    for data_type, ds in cases:
        loss_all = _loss_tokens(tok, ds, "all", tmp_path / data_type)
        for (text, n, length), (_, full_len, _) in zip(loss_all, expected, strict=True):
            assert n == length == full_len, data_type
        assert SYSTEM in loss_all[0][0]

    total = sum(full for _, full, _ in expected)
    share = sum(n for _, n, _ in completion_only) / total
    assert 0 < share < 0.5  # here, about a third of the tokens are the replies


def test_a_messages_row_without_a_reply_is_refused() -> None:
    from datasets import Dataset

    from prefloop.errors import DataError
    from prefloop.feedback.export import messages_as_prompt_completion
    from prefloop.training.trainers import TrainingError, sft_rows

    ds = Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
                            {"messages": [{"role": "user", "content": "no reply"}]}])
    with pytest.raises(DataError, match="SFT row 1: the conversation does not end with an assistant turn"):
        messages_as_prompt_completion(ds)
    assert sft_rows(ds, "all").column_names == ["messages"]  # loss on every token: no split needed
    with pytest.raises(TrainingError, match="neither prompt/completion nor messages"):
        sft_rows(Dataset.from_list([{"text": "plain"}]), "completion")
