"""Evaluation numbers on hand-made sets equal hand computation; the CLI writes them."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from scorer import Scorer
from trainer.evaluate import main as evaluate_main
from trainer.evaluate import mismatched_images, read_karpathy, retrieval_metrics, triplet_metrics
from trainer.records import TripletRecord


def test_triplet_protocol_by_hand():
    # two images; a caption's score against image A is its first coordinate, against B its second
    image = {"A": torch.tensor([1.0, 0.0]), "B": torch.tensor([0.0, 1.0])}
    text = {t: torch.tensor(v) for t, v in {
        "pa": [0.9, 0.8], "ha": [0.95, 0.0], "sa": [0.5, 0.0], "oa1": [0.1, 0.0], "oa2": [0.9, 0.0],
        "pb": [0.2, 0.6], "hb": [0.0, 0.3], "sb": [0.0, 0.5]}.items()}
    records = [TripletRecord("A", "pa", "ha", "sa", ("oa1", "oa2"), 0), TripletRecord("B", "pb", "hb", "sb", (), 1)]
    got = triplet_metrics(records, image, text, seed=0)
    # global: A: pa .9 > pb .2 ✓; B: pb .6 > pa .8 ✗                         → 1/2
    # hard:   A: pa .9 > ha .95 ✗; B: pb .6 > hb .3 ✓                       → 1/2
    # local over negs[1:] (the short caption too, as the original):
    #         A: .9 > sa .5 ✓, > oa1 .1 ✓, > oa2 .9 ✗ (tie); B: .6 > sb .5 ✓ → 3/4 (negs[2:] would give 1/2)
    # rank:   A: ha, oa2 ≥ .9 → rank 3; B: first → accuracy 1/2, MRR (1/3 + 1) / 2
    assert got["global_accuracy"] == 0.5 and got["hard_accuracy"] == 0.5 and got["local_accuracy"] == 0.75
    assert got["rank_accuracy"] == 0.5
    assert got["mrr"] == pytest.approx((1 / 3 + 1) / 2)
    assert got["mean_accuracy"] == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    assert mismatched_images(records) == ["B", "A"]
    control = triplet_metrics(records, image, text, seed=0, anchors=["B", "A"])
    # anchor B for record A: pa .8 > pb .6 ✓ global; pa .8 > ha 0 ✓ hard. anchor A for B: pb .2 > pa .9 ✗
    assert control["global_accuracy"] == 0.5 and control["hard_accuracy"] == 1.0


def test_a_negative_that_ties_the_positive_is_never_counted_correct():
    """Every triplet metric: identical embeddings for the positive and each negative → all misses."""
    image = {"A": torch.tensor([1.0, 0.0]), "B": torch.tensor([0.0, 1.0])}
    same = torch.tensor([0.6, 0.8])
    text = {t: same for t in ("pa", "ha", "sa", "oa", "pb", "hb", "sb")}
    records = [TripletRecord("A", "pa", "ha", "sa", ("oa",), 0), TripletRecord("B", "pb", "hb", "sb", (), 1)]
    got = triplet_metrics(records, image, text, seed=0)
    assert got["global_accuracy"] == got["hard_accuracy"] == got["local_accuracy"] == got["rank_accuracy"] == 0.0
    assert got["mrr"] == pytest.approx((1 / 4 + 1 / 3) / 2)  # A: 3 negatives tie → rank 4; B: 2 → rank 3


def clip_benchmark_recall(scores: torch.Tensor, positive_pairs: torch.Tensor, k: int) -> float:
    """CLIP_benchmark ``clip_benchmark/metrics/zeroshot_retrieval.py``: recall_at_k, then "any hit" per query."""
    topk = torch.topk(scores, k, dim=1)[1]  # (queries, k)
    hits = torch.nn.functional.one_hot(topk, num_classes=scores.shape[1]) * positive_pairs[:, None, :]
    return float((hits.sum(dim=(1, 2)) > 0).float().mean())


def test_retrieval_equals_clip_benchmark_without_ties():
    generator = torch.Generator().manual_seed(0)
    image_emb = torch.nn.functional.normalize(torch.randn(12, 8, generator=generator), dim=1)
    text_emb = torch.nn.functional.normalize(torch.randn(36, 8, generator=generator), dim=1)
    owner = torch.arange(12).repeat_interleave(3)
    got = retrieval_metrics(image_emb, text_emb, owner)
    scores = text_emb @ image_emb.T  # (texts, images), CLIP_benchmark's layout
    pairs = torch.nn.functional.one_hot(owner, 12).bool()
    for k in (1, 5, 10):
        assert got[f"t2i_r{k}"] == pytest.approx(clip_benchmark_recall(scores, pairs, k))
        assert got[f"i2t_r{k}"] == pytest.approx(clip_benchmark_recall(scores.T, pairs.T, k))


def test_retrieval_counts_ties_against_the_truth_both_ways():
    # image 1 owns a caption identical to image 0's (t1 = t0), as UCM-Captions has for 547 of 600 images;
    # images 2 and 3 are identical pictures, each with its own caption
    image_emb = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    text_emb = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    owner = torch.tensor([0, 1, 1, 2, 3])
    got = retrieval_metrics(image_emb, text_emb, owner)
    # i2t R@1: image 0 ties with t1 (another image's) ✗; image 1 finds t2 ✓; images 2, 3 tie with each other's ✗
    assert got["i2t_r1"] == 0.25
    # t2i R@1: t0 ✓; t1 scores image 0 higher ✗; t2 ✓; t3, t4 tie between images 2 and 3 ✗
    assert got["t2i_r1"] == pytest.approx(2 / 5)
    assert got["i2t_r5"] == got["t2i_r5"] == 1.0


def test_retrieval_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])  # images × texts; texts 0, 1 → image 0, text 2 → 1
    got = retrieval_metrics(torch.eye(2), scores.T.contiguous(), torch.tensor([0, 0, 1]))
    # i2t: image 0 finds t0 first ✓; image 1's t2 (.3) is behind t1 (.8) → rank 2
    # t2i: t0 → image 0 ✓; t1 → image 1 first ✗; t2 → image 0 first ✗
    assert (got["i2t_r1"], got["i2t_r5"], got["t2i_r1"], got["t2i_r5"]) == (0.5, 1.0, pytest.approx(1 / 3), 1.0)
    assert got["mean_recall"] == pytest.approx((0.5 + 1 + 1 + 1 / 3 + 1 + 1) / 6)


@pytest.fixture
def hand_set(tmp_path):
    root = tmp_path / "root"
    (root / "imgs").mkdir(parents=True)
    for n, colour in enumerate(["red", "green", "navy"]):
        Image.new("RGB", (56, 56), colour).save(root / "imgs" / f"{n + 1}.png")
    triplets = [{"image": f"imgs/{n}.png", "pos": f"a {c} square", "negs": [f"a {c} circle", "a square",
                                                                             f"many {c} squares"]}
                for n, c in [(1, "red"), (2, "green"), (3, "blue")]]
    (tmp_path / "t.json").write_text(json.dumps(triplets))
    karpathy = {"images": [{"filename": f"{n}.tif", "split": "test", "sentences": [{"raw": f"scene {n}"},
                                                                                     {"raw": f"view {n}"}]}
                           for n in (1, 2, 3)]}
    (tmp_path / "k.json").write_text(json.dumps(karpathy))
    return tmp_path, root


def test_cli_writes_the_metrics_of_the_checkpoint(hand_set, tiny_checkpoint_session, capsys):
    tmp, root = hand_set
    evaluate_main(["--checkpoint", str(tiny_checkpoint_session), "--data", str(tmp / "t.json"),
                   "--image_root", str(root), "--output", str(tmp / "m.json")])
    written = json.loads((tmp / "m.json").read_text())
    assert written["primary_metric"] == "mean_accuracy"
    from trainer.records import load_records

    records = load_records(tmp / "t.json", root)
    scorer = Scorer.from_checkpoint(tiny_checkpoint_session, device="cpu")
    images = [r.image for r in records]
    texts = list(dict.fromkeys(t for r in records for t in (r.positive, *r.negatives)))
    expected = triplet_metrics(records, dict(zip(images, scorer.embed_images([root / i for i in images]))),
                               dict(zip(texts, scorer.embed_texts(texts))), seed=0)
    for key, value in expected.items():
        assert written[key] == pytest.approx(value, abs=1e-6), key
    shown = capsys.readouterr()
    assert "global_accuracy" in shown.out
    assert "evaluate: images: 100%" in shown.err and "evaluate: captions: 100%" in shown.err  # tqdm bars

    evaluate_main(["--checkpoint", str(tiny_checkpoint_session), "--data", str(tmp / "k.json"),
                   "--image_root", str(root), "--image_template", "imgs/{stem}.png", "--output", str(tmp / "r.json")])
    retrieval = json.loads((tmp / "r.json").read_text())
    assert retrieval["primary_metric"] == "mean_recall" and retrieval["n_texts"] == 6
    assert {f"{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} <= set(retrieval)
    assert retrieval["i2t_r5"] == 1.0  # 6 texts: every image's sentences are within the top 5


def test_a_karpathy_file_that_is_not_json_is_named_in_the_error(tmp_path):
    path = tmp_path / "dataset_cut.json"
    path.write_text('{"images": [{"filename": "1.tif", ')
    with pytest.raises(ValueError, match=r"dataset_cut\.json: not valid JSON: "):
        read_karpathy(path)
