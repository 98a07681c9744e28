"""Training core of the encoder's fine-tuning (udfs/finetune.py), without Spark."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from udfs.contrastive_loss import candidate_masks, symmetric_mnrl
from udfs.embed import Embedder, default_model_dir
from udfs.finetune import (
    TrainParams,
    recall_at_k,
    set_trainable,
    state_digest,
    train,
    uses_bf16,
    within_noise,
)
from udfs.hard_negatives import HardNegatives

COLOURS = ["red", "blue", "green", "white", "black"]
OBJECTS = ["mug", "candle", "lantern", "bag", "frame", "clock"]
TEXTS = [f"{c} {o}. {r}." for c in COLOURS for o in OBJECTS for r in ("kitchen", "garden")]
N = len(TEXTS)  # 60
PAIRS = np.array([(i, (i + 2) % N) for i in range(N)] + [(i, (i + 12) % N) for i in range(N)])
TRAIN, VALID = PAIRS[:40], PAIRS[40:60]  # neighbours two apart: training helps validation
FAST = TrainParams(batch_size=8, max_steps=4, eval_every_steps=2, seed=5, learning_rate=3e-4)


def log_softmax_ce(logits: np.ndarray) -> float:
    """Mean cross-entropy with the diagonal as labels, in float64 numpy."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(np.diag(logp)))


def unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    x = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1)


def test_loss_matches_sentence_transformers_symmetric_mnrl():
    from sentence_transformers.sentence_transformer.losses import (
        MultipleNegativesSymmetricRankingLoss,
    )

    a, b = unit(6, 16, 1), unit(6, 16, 2)
    ours = symmetric_mnrl(a, b, scale=20.0, ids_a=torch.arange(6), ids_b=torch.arange(6, 12))
    reference = MultipleNegativesSymmetricRankingLoss(torch.nn.Identity(), scale=20.0)
    theirs = reference.compute_loss_from_embeddings([a, b], labels=None)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)
    # and by hand: mean of the two directions' cross-entropies
    s = 20.0 * a.double().numpy() @ b.double().numpy().T
    assert float(ours) == pytest.approx((log_softmax_ce(s) + log_softmax_ce(s.T)) / 2, rel=1e-5)


def test_duplicates_in_a_batch_are_masked():
    # pairs (0,1), (0,2), (3,0): for anchor 0 of row 0, partner 2 (row 1) is a known partner and
    # item 0 (row 2's b) is the anchor itself: row 0's only negative is none -> both masked.
    a, b = torch.tensor([0, 0, 3]), torch.tensor([1, 2, 0])
    forward, backward = candidate_masks(a, b)
    assert forward.tolist() == [
        [False, True, True],    # b=2 partner of 0; b=0 is 0 itself
        [True, False, True],    # b=1 partner of 0; b=0 itself
        [False, False, False],  # anchor 3: partners in batch only 0 (its own label)
    ]
    assert backward.tolist() == [
        [False, True, False],   # b_0=1: a_1=0 is its partner; a_2=3 is not
        [True, False, False],   # b_1=2: a_0=0 is its partner
        [True, True, False],    # b_2=0: a_0=a_1=0 is the item itself
    ]
    emb_a, emb_b = unit(3, 8, 3), unit(3, 8, 4)
    s = 20.0 * emb_a.double().numpy() @ emb_b.double().numpy().T
    sf = np.where(forward.numpy(), -np.inf, s)
    sb = np.where(backward.numpy(), -np.inf, s.T)
    want = (log_softmax_ce(sf) + log_softmax_ce(sb)) / 2
    got = symmetric_mnrl(emb_a, emb_b, scale=20.0, ids_a=a, ids_b=b)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_hard_negative_loss_matches_sentence_transformers_mnrl_both_ways():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    a, b, na, nb = unit(5, 16, 11), unit(5, 16, 12), unit(5, 16, 13), unit(5, 16, 14)
    none = torch.zeros((5, 5), dtype=torch.bool)
    ours = symmetric_mnrl(a, b, scale=20.0, ids_a=torch.arange(5), ids_b=torch.arange(5, 10),
                          neg_a=na, neg_b=nb, neg_mask_a=none, neg_mask_b=none)
    # sentence-transformers' (anchor, positive, negative) loss: each anchor against every
    # positive and every negative of the batch; ours is that a->b and b->a, averaged
    reference = MultipleNegativesRankingLoss(torch.nn.Identity(), scale=20.0)
    forward = reference.compute_loss_from_embeddings([a, b, na], labels=None)
    backward = reference.compute_loss_from_embeddings([b, a, nb], labels=None)
    assert float(ours) == pytest.approx((float(forward) + float(backward)) / 2, rel=1e-6)


def test_masked_hard_negatives_by_hand():
    a, b, na, nb = unit(3, 8, 21), unit(3, 8, 22), unit(3, 8, 23), unit(3, 8, 24)
    mask_a = torch.tensor([[True, False, False], [False, False, False], [False, True, True]])
    mask_b = torch.tensor([[False, False, True], [False, False, False], [False, False, False]])
    got = symmetric_mnrl(a, b, scale=10.0, neg_a=na, neg_b=nb, neg_mask_a=mask_a, neg_mask_b=mask_b)
    d = lambda x, y: 10.0 * x.double().numpy() @ y.double().numpy().T  # noqa: E731
    sf = np.hstack([d(a, b), np.where(mask_a.numpy(), -np.inf, d(a, na))])
    sb = np.hstack([d(b, a), np.where(mask_b.numpy(), -np.inf, d(b, nb))])
    ce = lambda s: float(np.mean([np.log(np.exp(r).sum()) - r[i] for i, r in enumerate(s)]))  # noqa: E731
    assert float(got) == pytest.approx((ce(sf) + ce(sb)) / 2, rel=1e-5)


def test_hard_negatives_are_near_non_partners():
    # items on a line: item i's vector is at angle i * 5 degrees, so nearest = closest number
    angles = np.radians(np.arange(10) * 5.0)
    vectors = torch.tensor(np.c_[np.cos(angles), np.sin(angles)], dtype=torch.float32)
    mined = HardNegatives(np.array([[4, 5], [4, 3], [0, 9]]), pool=2, seed=1)
    mined.refresh(vectors)
    drawn = [int(mined.draw(np.array([4]))[0]) for _ in range(40)]
    assert set(drawn) == {2, 6}  # 4's two nearest items that are neither 4 nor its partners 3, 5
    assert mined.mask(np.array([4, 0]), np.array([5, 6, 9])).tolist() == [
        [True, False, False], [False, False, True]]
    # the same seed draws the same negatives
    again = HardNegatives(np.array([[4, 5], [4, 3], [0, 9]]), pool=2, seed=1)
    again.refresh(vectors)
    assert [int(again.draw(np.array([4]))[0]) for _ in range(40)] == drawn
    # every other item a partner: the item itself, which the mask removes
    whole = HardNegatives(np.array([[0, 1], [0, 2]]), pool=3, seed=0)
    whole.refresh(vectors[:3])
    assert whole.draw(np.array([0])).tolist() == [0] and whole.mask(np.array([0]), np.array([0])).all()


def test_training_with_mined_negatives_is_deterministic_and_differs(trained, tmp_path):
    hard = TrainParams(**{**FAST.__dict__, "hard_negatives": True, "hard_negative_pool": 5})
    one = train(None, tmp_path / "one", TEXTS, TRAIN, VALID, hard)
    two = train(None, tmp_path / "two", TEXTS, TRAIN, VALID, hard)
    assert state_digest(one["out_dir"]) == state_digest(two["out_dir"]) and one["curve"] == two["curve"]
    # ``trained`` (FAST, the default loss): in-batch negatives alone give another loss
    assert not FAST.hard_negatives and one["curve"][0] != trained["curve"][0]
    assert state_digest(one["out_dir"]) != state_digest(trained["out_dir"])


def test_recall_at_k_by_hand():
    # four items on a circle: nearest of 0 is 1 (cos .8), then 3 (0), then 2
    v = torch.tensor([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0], [0.0, 1.0]])
    # pair (0, 2): 0 -> 2 ranks third; 2 -> 0 ranks third (2's neighbours: 1 (-.8)?, 3 (0))
    assert recall_at_k(v, np.array([[0, 2]]), k=2) == 0.0
    assert recall_at_k(v, np.array([[0, 2]]), k=3) == 1.0
    # pair (0, 1): each is the other's nearest
    assert recall_at_k(v, np.array([[0, 1]]), k=1) == 1.0


def test_train_layers_freeze_the_rest():
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(default_model_dir()), local_files_only=True)
    set_trainable(model, "2")
    trainable = {n.split(".")[2] if n.startswith("encoder.layer.") else n.split(".")[0]
                 for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"4", "5", "pooler"}
    assert set_trainable(model, "all") == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="train_layers"):
        set_trainable(model, "7")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "tuned"
    return train(None, out, TEXTS, TRAIN, VALID, FAST)


def test_same_seed_same_weights_and_frozen_layers_unchanged(trained, tmp_path):
    again = train(None, tmp_path / "again", TEXTS, TRAIN, VALID, FAST)
    assert state_digest(trained["out_dir"]) == state_digest(again["out_dir"])
    assert trained["curve"] == again["curve"] and trained["steps"] == 4
    from safetensors.numpy import load_file

    base = load_file(str(default_model_dir() / "model.safetensors"))
    tuned = load_file(str(tmp_path / "again" / "model.safetensors"))
    name = "encoder.layer.0.attention.self.query.weight"
    key = next(k for k in base if k.endswith(name))
    np.testing.assert_array_equal(base[key], tuned[next(k for k in tuned if k.endswith(name))])
    assert trained["kept_step"] > 0  # the saved weights are tuned ones, not the base
    assert state_digest(trained["out_dir"]) != state_digest(default_model_dir())


def test_precision_auto_is_bf16_on_a_gpu_and_on_a_cpu_with_bf16_instructions(monkeypatch):
    import torch

    assert uses_bf16("cpu", "bf16") and uses_bf16("cuda:0", "auto")
    assert not uses_bf16("cuda:0", "fp32") and not uses_bf16("cpu", "fp32")
    for amx, avx512_bf16 in ((True, False), (False, True), (False, False)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert uses_bf16("cpu", "auto") == (amx or avx512_bf16), (amx, avx512_bf16)
        assert not uses_bf16("cpu", "fp32") and uses_bf16("cuda:0", "auto")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # an older torch: AMX alone
    assert uses_bf16("cpu", "auto") is False


def test_bf16_training_is_deterministic_and_not_the_fp32_one(tmp_path):
    bf16 = TrainParams(**{**FAST.__dict__, "precision": "bf16"})
    fp32 = TrainParams(**{**FAST.__dict__, "precision": "fp32"})
    one = train(None, tmp_path / "one", TEXTS, TRAIN, VALID, bf16)
    two = train(None, tmp_path / "two", TEXTS, TRAIN, VALID, bf16)
    full = train(None, tmp_path / "fp32", TEXTS, TRAIN, VALID, fp32)
    assert (one["precision"], full["precision"]) == ("bf16", "fp32")
    assert state_digest(one["out_dir"]) == state_digest(two["out_dir"]) and one["curve"] == two["curve"]
    # autocast took effect, and changed the steps' arithmetic only to bf16's precision
    assert state_digest(one["out_dir"]) != state_digest(full["out_dir"])
    np.testing.assert_allclose([v for _, v in one["curve"]], [v for _, v in full["curve"]], rtol=0.02)
    assert one["before"] == full["before"]  # validation runs in float32 either way


def test_tuned_folder_loads_in_sentence_transformers(trained):
    from sentence_transformers import SentenceTransformer

    texts = ["WHITE METAL LANTERN", "red mug. kitchen.", "a"]
    ours = Embedder(trained["out_dir"], device="cpu").encode(texts)
    theirs = SentenceTransformer(trained["out_dir"], device="cpu").encode(
        texts, normalize_embeddings=True
    )
    cos = (ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.9999
    # the tuned encoder is not the base one
    base = Embedder(device="cpu").encode(texts)
    assert (ours * base).sum(1).min() < 0.99999


def test_progress_and_kept_weights(trained):
    assert [s for s, _ in trained["evals"]] == [0, 2, 4]
    assert trained["before"] == trained["evals"][0][1]
    assert trained["best"] == max(v for _, v in trained["evals"])
    # the latest evaluation within one binomial standard error of the best (over the recall's
    # 2 x validation pairs directions) and above the base is the one kept
    best, n = trained["best"], 2 * trained["validation_pairs"]
    ok = [(s, v) for s, v in trained["evals"][1:]
          if v > trained["before"] and v >= best - (best * (1 - best) / n) ** 0.5]
    assert (trained["kept_step"], trained["after"]) == ok[-1]
    assert len(trained["curve"]) == 4 and trained["pairs_per_s"] > 0


def test_the_latest_weights_within_noise_of_the_best_are_kept():
    # 6,000 directions: the standard error of a recall of 0.0187 is 0.00175 (by hand)
    assert within_noise(0.0170, 0.0187, 0.0128, 6000)
    assert not within_noise(0.0165, 0.0187, 0.0128, 6000)
    assert not within_noise(0.0120, 0.0125, 0.0128, 6000)  # never below the base encoder
    assert within_noise(0.0187, 0.0187, 0.0128, 6000)  # the best itself
