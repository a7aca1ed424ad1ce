"""Model cards: metadata a hub reads, the recipe, and the bundled-base caveat."""

from huggingface_hub import ModelCard

from orpo_deploy.core.model_card import OFFICIAL_SMOLLM2, export_card, train_card


def test_train_and_export_cards():
    train = {"base_model": {"spec": "smollm2-135m-instruct"}, "config": {"beta": 1.0, "learning_rate": 5e-4},
             "train": {"global_step": 105, "best": {"metric": "eval_if_mean", "value": 0.7, "step": 70}},
             "dataset": {"pairs": 2128}, "precision": "fp32"}  # fmt: skip
    card = ModelCard(train_card(train))
    assert card.data.base_model == OFFICIAL_SMOLLM2 and "orpo" in card.data.tags
    assert "step 70 by eval_if_mean" in card.text and "Q4_1 GGUF" in card.text
    export = {"method": "gptq", "bits": 4, "group_size": 32, "quality": {"min_retention": 0.8},
              "parent": {"path": "/runs/x/train/merged", "manifest": train}}  # fmt: skip
    card = ModelCard(export_card(export))
    assert "gptq" in card.data.tags and "group size 32" in card.text and card.data.base_model == OFFICIAL_SMOLLM2
    local = ModelCard(train_card({"base_model": {"path": "/models/my-llama"}}))
    assert local.data.base_model is None  # a local folder is not hub metadata
