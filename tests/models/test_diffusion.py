"""The masked-diffusion denoiser: the forward process, the objective, the model interface."""

from __future__ import annotations

import pytest
import torch

from models import Batch, build_model
from models.diffusion import corrupt, corruption_region, full_sequences, mask_ratios
from tests.models.test_models import batch, small_config


def test_corruption_region_is_every_item_or_the_newest_ones():
    tokens = torch.tensor([[0, 0, 0, 4, 5, 6], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9]])
    anywhere = corruption_region(tokens, torch.tensor([False, False, False]), 2)
    assert torch.equal(anywhere, tokens > 0)
    newest = corruption_region(tokens, torch.tensor([True, True, True]), 2)
    assert newest.tolist() == [[False] * 4 + [True] * 2, [False] * 4 + [True] * 2, [False] * 6]  # one item stays visible


def test_the_forward_process_masks_region_tokens_at_the_drawn_ratio():
    torch.manual_seed(0)
    tokens = torch.randint(1, 50, (4000, 20))
    tokens[:, :5] = 0  # padding is never masked
    ratio = torch.tensor([0.1, 0.5, 0.9, 0.0]).repeat(1000)
    region = corruption_region(tokens, torch.zeros(4000, dtype=torch.bool), 3)
    noisy, masked = corrupt(tokens, ratio, region, mask_id=99)
    assert torch.equal(noisy == 99, masked)
    assert not masked[:, :5].any()
    assert torch.equal(noisy[~masked], tokens[~masked])
    for k, want in enumerate((0.1, 0.5, 0.9, 0.0)):
        share = masked[k::4, 5:].float().mean().item()
        assert abs(share - want) < 0.01
    r = mask_ratios(10_000, 0.05)
    assert r.min() >= 0.05 and r.max() <= 1 and abs(r.mean().item() - 0.525) < 0.01


def test_the_loss_counts_masked_tokens_only_weighted_by_one_over_t():
    torch.manual_seed(1)
    model = build_model("diffusion", small_config(dropout=0.0), 12).eval()
    tokens = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    region = tokens > 0
    masked = torch.tensor([[False, False, True, False, False, True], [False] * 6])
    noisy = tokens.masked_fill(masked, model.mask_id)
    ratio = torch.tensor([0.5, 0.25])
    loss = model.masked_loss(noisy, tokens, masked, ratio, region)
    states, _ = model.backbone.encode(noisy, causal=False)
    logits = states @ model.backbone.items.table()[1:13].T
    by_hand = (torch.nn.functional.cross_entropy(logits[0, [2, 5]], tokens[0, [2, 5]] - 1, reduction="sum") / 0.5 / 4
               + 0.0) / 2  # row 2 masks nothing: it adds 0 to the mean over the two rows
    torch.testing.assert_close(loss, by_hand)


def test_the_training_loss_is_finite_and_positive_with_a_gradient():
    torch.manual_seed(2)
    model = build_model("diffusion", small_config(diffusion_response_items=2), 12).train()
    total, terms = model.loss(batch())
    assert set(terms) == {"diffusion"} and terms["diffusion"] > 0
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_full_sequences_rebuild_what_a_batch_was_cut_from():
    assert full_sequences(batch()).tolist() == [[0, 0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 9, 2, 11]]


def test_scores_cover_items_only_and_ignore_padding():
    model = build_model("diffusion", small_config(), 12).eval()
    items = batch().items
    scores = model.score(Batch(items))
    assert scores.shape == (3, 13)  # the mask token is never ranked
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    padded = torch.cat([torch.zeros(3, 2, dtype=torch.long), items], dim=1)
    torch.testing.assert_close(scores[:, 1:], model.score(Batch(padded))[:, 1:], atol=1e-5, rtol=1e-4)


def test_every_position_reads_the_whole_sequence():
    model = build_model("diffusion", small_config(), 12).eval()
    items = batch().items
    before = model.denoise(items)
    changed = items.clone()
    changed[:, -1] = torch.tensor([11, 10, 1])
    assert not torch.allclose(model.denoise(changed)[:, 2], before[:, 2])
    assert torch.isinf(before[..., 0]).all() and torch.isinf(before[..., model.mask_id]).all()


def test_knowledge_gets_a_row_for_the_mask_token_and_survives_the_bundle(tmp_path):
    from models.serving import load_bundle, save_bundle

    model = build_model("diffusion", small_config(), 12, knowledge=torch.randn(13, 6)).eval()
    save_bundle(model, None, tmp_path / "bundle.pt")
    loaded, _ = load_bundle(tmp_path / "bundle.pt")
    torch.testing.assert_close(loaded.score(Batch(batch().items)), model.score(Batch(batch().items)))
    with pytest.raises(ValueError, match="slots"):
        model.with_slots(batch().items, 8)
