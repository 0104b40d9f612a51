"""The first-party losses: gradients, learning a separable problem, the margin formulas against hand-computed
values, margin scheduling, resizing a classification head, and the per-speaker requirements."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vvframe import BadValue
from vvframe.core import registry

CLASSIFICATION = ["softmax", "amsoftmax", "aamsoftmax", "subcenter_aamsoftmax"]
METRIC = ["angleproto", "proto", "ge2e", "triplet"]
COMBINED = ["softmaxproto", "aamsoftmaxproto"]
ALL = CLASSIFICATION + METRIC + COMBINED
VARIANTS = [(name, {}) for name in ALL] + [
    ("aamsoftmax", {"easy_margin": True}),
    ("subcenter_aamsoftmax", {"inter_topk": 2}),
    ("triplet", {"hard_negatives": False}),
]


def ids(variant) -> str:
    name, extra = variant
    return name + "".join(f"-{k}={v}" for k, v in extra.items())


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is faster and leaves the other core to the rest of the suite."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, embed_dim: int = 16, num_classes: int = 5, **extra):
    return registry.build("losses", {"name": name, **extra}, embed_dim=embed_dim, num_classes=num_classes)


# --- every loss ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_finite_scalar_and_gradients_reach_every_parameter(variant):
    name, extra = variant
    torch.manual_seed(0)
    loss_fn = build(name, **extra)
    for P in sorted({loss_fn.min_per_speaker, 3}):
        loss_fn.zero_grad()
        embeddings = torch.randn(5, P, 16, requires_grad=True)
        loss, accuracy = loss_fn(embeddings, torch.arange(5))
        assert loss.dim() == 0 and torch.isfinite(loss), (name, P, loss)
        loss.backward()
        assert embeddings.grad is not None and torch.isfinite(embeddings.grad).all()
        assert embeddings.grad.abs().sum() > 0, name
        for pname, param in loss_fn.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), f"{name}: no gradient for {pname}"
            if pname.split(".")[-1] != "b":  # an offset added to every logit cancels in the cross-entropy
                assert param.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"
        if accuracy is not None:
            assert not accuracy.requires_grad and 0.0 <= float(accuracy) <= 1.0


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_learns_a_separable_problem(variant):
    """8 speakers with random means in 32-D plus unit noise, a small MLP embedder trained with the loss, batches of
    the 8 speakers x 2 utterances: the loss falls below half its start and the accuracy passes 90%."""
    name, extra = variant
    torch.manual_seed(0)
    means = torch.randn(8, 32)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    loss_fn = build(name, num_classes=8, **extra)
    optimizer = torch.optim.Adam([*net.parameters(), *loss_fn.parameters()], lr=3e-3)
    losses, accuracies = [], []
    for _ in range(200):
        labels = torch.randperm(8)
        x = means[labels][:, None, :] + torch.randn(8, 2, 32)
        loss, accuracy = loss_fn(net(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        accuracies.append(float(accuracy))
    start, end = sum(losses[:5]) / 5, sum(losses[-20:]) / 20
    assert end < 0.5 * start, (name, start, end)
    assert sum(accuracies[-20:]) / 20 > 0.9, (name, accuracies[-20:])


def test_min_per_speaker():
    expected = {**{n: 1 for n in CLASSIFICATION}, **{n: 2 for n in METRIC + COMBINED}}
    for name, needed in expected.items():
        loss_fn = build(name)
        assert loss_fn.min_per_speaker == needed == type(loss_fn).min_per_speaker, name
        if needed > 1:
            with pytest.raises(BadValue, match=rf"loss '{name}' needs at least 2 utterances per speaker.*P = 1"):
                loss_fn(torch.randn(5, 1, 16), torch.arange(5))


def test_malformed_batches_are_refused_clearly():
    with pytest.raises(BadValue, match=r"\(B, P, D\)"):
        build("aamsoftmax")(torch.randn(5, 16), torch.arange(5))
    with pytest.raises(BadValue, match="one label per row"):
        build("softmax")(torch.randn(5, 1, 16), torch.arange(4))
    with pytest.raises(BadValue, match="embed_dim = 16"):
        build("amsoftmax")(torch.randn(5, 1, 8), torch.arange(5))
    with pytest.raises(BadValue, match="5 classes"):
        build("softmax")(torch.randn(2, 1, 16), torch.tensor([0, 5]))
    with pytest.raises(BadValue, match="at least 2 speakers"):
        build("angleproto")(torch.randn(1, 2, 16), torch.tensor([0]))


# --- margins ---------------------------------------------------------------------------------------------------


def test_aamsoftmax_without_margin_is_softmax_on_normalised_weights_and_features():
    torch.manual_seed(0)
    aam = build("aamsoftmax", margin=0.0, scale=20.0)
    x, labels = torch.randn(5, 2, 16), torch.arange(5)
    expected = F.cross_entropy(
        20.0 * F.normalize(x.reshape(10, 16), dim=1) @ F.normalize(aam.weight, dim=1).T, labels.repeat_interleave(2)
    )
    softmax = build("softmax")
    with torch.no_grad():
        softmax.weight.copy_(20.0 * F.normalize(aam.weight, dim=1))
        softmax.bias.zero_()
    loss, _ = aam(x, labels)
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(loss, softmax(F.normalize(x, dim=2), labels)[0], atol=1e-5)


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def two_class_head(name: str = "aamsoftmax", **extra):
    """A 2-class head in 2-D with class weights along the axes: an embedding at angle a has θ_0 = a, θ_1 = 90 - a."""
    head = build(name, embed_dim=2, num_classes=2, **extra)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    return head.requires_grad_(False)


def test_aamsoftmax_logits_match_arcface_by_hand():
    s, m = 10.0, 0.2
    head = two_class_head(margin=m, scale=s)
    x = torch.tensor([unit(60.0)])
    logits = head.logits(x, torch.tensor([0]))
    theta0, theta1 = math.radians(60.0), math.radians(30.0)
    assert torch.allclose(logits, torch.tensor([[s * math.cos(theta0 + m), s * math.cos(theta1)]]), atol=1e-5)
    assert abs(s * math.cos(theta0 + m) - 3.17981) < 1e-4  # 10 * cos(1.24720 rad) = 10 * 0.317981, by hand
    loss, accuracy = head(x[:, None, :], torch.tensor([0]))
    by_hand = -math.log(
        math.exp(s * math.cos(theta0 + m)) / (math.exp(s * math.cos(theta0 + m)) + math.exp(s * math.cos(theta1)))
    )
    assert abs(loss.item() - by_hand) < 1e-4
    assert float(accuracy) == 0.0  # the margin-free cosine prefers class 1 (30 degrees away)
    # past pi: theta + m > pi, cos(theta) <= cos(pi - m): the target logit falls back to s * (cos(theta) - m sin(m))
    x = torch.tensor([unit(170.0)])
    logits = head.logits(x, torch.tensor([0]))
    assert math.radians(170.0) + m > math.pi
    assert abs(float(logits[0, 0]) - s * (math.cos(math.radians(170.0)) - m * math.sin(m))) < 1e-5
    assert abs(float(logits[0, 1]) - s * math.cos(math.radians(-80.0))) < 1e-5


def test_easy_margin_applies_only_where_cosine_is_positive():
    s, m = 10.0, 0.2
    strict, easy = two_class_head(margin=m, scale=s), two_class_head(margin=m, scale=s, easy_margin=True)
    target = torch.tensor([0])
    wide = torch.tensor([unit(100.0)])  # cos < 0
    assert abs(float(easy.logits(wide, target)[0, 0]) - s * math.cos(math.radians(100.0))) < 1e-5
    assert abs(float(strict.logits(wide, target)[0, 0]) - s * math.cos(math.radians(100.0) + m)) < 1e-5
    narrow = torch.tensor([unit(40.0)])  # cos > 0: the margin applies in both
    for head in (strict, easy):
        assert abs(float(head.logits(narrow, target)[0, 0]) - s * math.cos(math.radians(40.0) + m)) < 1e-5


def test_amsoftmax_logits_by_hand():
    s, m = 30.0, 0.35
    head = two_class_head("amsoftmax", margin=m, scale=s)
    logits = head.logits(torch.tensor([unit(60.0)]), torch.tensor([1]))
    assert torch.allclose(logits, torch.tensor([[s * 0.5, s * (math.cos(math.radians(30.0)) - m)]]), atol=1e-4)


@pytest.mark.parametrize("name", ["amsoftmax", "aamsoftmax", "subcenter_aamsoftmax", "aamsoftmaxproto"])
def test_setting_margin_takes_effect_at_once(name):
    torch.manual_seed(0)
    loss_fn = build(name, margin=0.1)
    x, labels = torch.randn(5, 2, 16), torch.arange(5)
    before = loss_fn(x, labels)[0].item()
    loss_fn.margin = 0.4
    assert loss_fn.margin == 0.4
    after = loss_fn(x, labels)[0].item()
    assert after > before + 0.1, (before, after)
    fresh = build(name, margin=0.4)
    fresh.load_state_dict(loss_fn.state_dict())
    assert abs(fresh(x, labels)[0].item() - after) < 1e-5
    if name == "aamsoftmax":
        assert loss_fn.cos_m == pytest.approx(math.cos(0.4)) and loss_fn.sin_m == pytest.approx(math.sin(0.4))
    with pytest.raises(BadValue, match="margin"):
        loss_fn.margin = -0.1


def test_subcenter_takes_the_best_subcenter_and_the_inter_topk_penalty():
    s, m, mp = 10.0, 0.2, 0.1
    head = build(
        "subcenter_aamsoftmax", embed_dim=2, num_classes=3, K=2, margin=m, scale=s, inter_topk=1, inter_margin=mp
    )
    assert head.weight.shape == (6, 2)
    with torch.no_grad():  # class 0: 0 and 90 degrees; class 1: 45 and 180; class 2: 270 and 300
        head.weight.copy_(torch.tensor([unit(0), unit(90), unit(45), unit(180), unit(270), unit(300)]))
    head.requires_grad_(False)
    x = torch.tensor([unit(80.0)])
    assert torch.allclose(
        head.scores(x),
        torch.tensor([[math.cos(math.radians(10)), math.cos(math.radians(35)), math.cos(math.radians(140))]]),
        atol=1e-5,
    )
    logits = head.logits(x, torch.tensor([0]))
    expected = [
        s * math.cos(math.radians(10) + m),  # target, best sub-center 10 degrees away
        s * math.cos(math.radians(35) - mp),  # hardest non-target: angle shrunk by the inter margin
        s * math.cos(math.radians(140)),
    ]  # the rest untouched
    assert torch.allclose(logits, torch.tensor([expected]), atol=1e-5)
    head.margin = 0.1  # the inter margin follows the margin in proportion
    assert head.inter_margin_now == pytest.approx(mp / 2)


# --- resizing the head -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSIFICATION + COMBINED)
def test_resize_classes_keeps_the_kept_rows(name):
    torch.manual_seed(0)
    loss_fn = build(name, num_classes=6)
    K = getattr(loss_fn, "K", 1)
    rows = loss_fn.weight.detach().clone().view(6, K, 16)
    bias = getattr(loss_fn, "bias", None)
    bias = bias.detach().clone() if bias is not None else None
    assert loss_fn.resize_classes(3, keep=[4, 1]) is loss_fn
    assert loss_fn.num_classes == 3 and loss_fn.weight.shape == (3 * K, 16)
    new = loss_fn.weight.detach().view(3, K, 16)
    assert torch.equal(new[0], rows[4]) and torch.equal(new[1], rows[1])
    assert not torch.equal(new[2], rows[2])  # a fresh class
    if bias is not None:
        assert torch.equal(loss_fn.bias.detach()[:2], bias[[4, 1]])
    loss_fn.resize_classes(7)  # grow: old classes stay in place
    assert loss_fn.weight.shape == (7 * K, 16)
    assert torch.equal(loss_fn.weight.detach().view(7, K, 16)[:2], new[:2])
    loss, _ = loss_fn(torch.randn(7, loss_fn.min_per_speaker, 16), torch.arange(7))
    loss.backward()
    assert loss_fn.weight.grad is not None


def test_resize_classes_refuses_impossible_requests():
    loss_fn = build("aamsoftmax", num_classes=4)
    with pytest.raises(BadValue, match="cannot keep 3 classes in a head of 2"):
        loss_fn.resize_classes(2, keep=[0, 1, 2])
    with pytest.raises(BadValue, match=r"classes 0 \.\. 3; cannot keep \[4\]"):
        loss_fn.resize_classes(5, keep=[0, 4])
    with pytest.raises(BadValue, match="more than once"):
        loss_fn.resize_classes(5, keep=[1, 1])
    with pytest.raises(BadValue, match="positive integer"):
        loss_fn.resize_classes(0)
    assert loss_fn.weight.shape == (4, 16)  # untouched by the refused requests


@pytest.mark.parametrize("name", CLASSIFICATION + COMBINED)
def test_a_checkpoint_with_another_number_of_classes_fails_loudly(name):
    trained = build(name, num_classes=10)
    target = build(name, num_classes=5)
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=r"10 classes.*resize_classes"):
            target.load_state_dict(trained.state_dict(), strict=strict)
    # the way to fine-tune: load into a head of the checkpoint's size, then resize
    same = build(name, num_classes=10)
    same.load_state_dict(trained.state_dict())
    same.resize_classes(5, keep=[9, 8, 7])
    assert torch.equal(
        same.weight.detach()[: 3 * getattr(same, "K", 1)],
        trained.weight.detach().view(10, -1, 16)[[9, 8, 7]].reshape(-1, 16),
    )


# --- the metric losses against direct computations -------------------------------------------------------------


def test_angleproto_and_proto_match_a_direct_computation():
    torch.manual_seed(0)
    x, labels = torch.randn(4, 3, 8), torch.arange(4)
    angle = build("angleproto", init_w=7.0, init_b=-2.0)
    query, proto = x[:, -1], x[:, :-1].mean(1)
    cos = torch.tensor([[float(F.cosine_similarity(query[i], proto[j], dim=0)) for j in range(4)] for i in range(4)])
    assert torch.allclose(angle(x, labels)[0], F.cross_entropy(7.0 * cos - 2.0, labels), atol=1e-5)
    dist = torch.tensor([[float(((query[i] - proto[j]) ** 2).sum()) for j in range(4)] for i in range(4)])
    assert torch.allclose(build("proto")(x, labels)[0], F.cross_entropy(-dist, labels), atol=1e-4)


def test_ge2e_uses_the_exclusive_centroid_for_the_own_speaker():
    torch.manual_seed(0)
    B, P = 3, 4
    x, labels = torch.randn(B, P, 8), torch.arange(B)
    loss, accuracy = build("ge2e", init_w=5.0, init_b=-1.0)(x, labels)
    rows, targets = [], []
    for j in range(B):
        for i in range(P):
            row = []
            for k in range(B):
                centroid = (x[k].sum(0) - x[j, i]) / (P - 1) if k == j else x[k].mean(0)
                row.append(5.0 * float(F.cosine_similarity(x[j, i], centroid, dim=0)) - 1.0)
            rows.append(row)
            targets.append(j)
    logits = torch.tensor(rows)
    assert torch.allclose(loss, F.cross_entropy(logits, torch.tensor(targets)), atol=1e-5)
    assert float(accuracy) == pytest.approx(float((logits.argmax(1) == torch.tensor(targets)).float().mean()))


def test_triplet_mining_by_hand():
    """Two speakers on the unit circle: A at 0 and 20 degrees, B at 30 and 180 degrees."""
    x = torch.tensor([[unit(0), unit(20)], [unit(30), unit(180)]])
    labels = torch.tensor([0, 1])

    def d(a: float, b: float) -> float:
        return 2 * math.sin(math.radians(abs(a - b)) / 2)  # chord length between unit vectors

    pairs = [(0, 20, [30, 180]), (20, 0, [30, 180]), (30, 180, [0, 20]), (180, 30, [0, 20])]
    margin = 0.1
    hard = [max(0.0, d(a, p) - min(d(a, n) for n in negs) + margin) for a, p, negs in pairs]
    loss, accuracy = build("triplet", margin=margin)(x, labels)
    assert loss.item() == pytest.approx(sum(hard) / 4, abs=1e-5)
    assert float(accuracy) == pytest.approx(sum(d(a, p) < min(d(a, n) for n in negs) for a, p, negs in pairs) / 4)

    def semi(a: float, p: float, negs: list[float]) -> float:
        farther = [d(a, n) for n in negs if d(a, n) > d(a, p)]
        return min(farther) if farther else max(d(a, n) for n in negs)

    expected = sum(max(0.0, d(a, p) - semi(a, p, negs) + margin) for a, p, negs in pairs) / 4
    assert build("triplet", margin=margin, hard_negatives=False)(x, labels)[0].item() == pytest.approx(
        expected, abs=1e-5
    )


def test_a_speaker_twice_in_a_batch_is_not_its_own_negative():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 8)
    x[1] = x[0] + 0.01 * torch.randn(2, 8)
    angle = build("angleproto")
    loss_dup, _ = angle(x, torch.tensor([0, 0, 1]))
    query, proto = F.normalize(x[:, -1], dim=1), F.normalize(x[:, :-1].mean(1), dim=1)
    logits = angle.w.detach() * query @ proto.T + angle.b.detach()
    logits[0, 1] = logits[1, 0] = float("-inf")
    assert torch.allclose(loss_dup, F.cross_entropy(logits, torch.arange(3)), atol=1e-5)


def test_losses_compute_in_float32_under_autocast():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 16)
    for name in ("aamsoftmax", "ge2e"):
        loss_fn = build(name, num_classes=4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = loss_fn(x.bfloat16(), torch.arange(4))
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert abs(loss.item() - loss_fn(x.bfloat16().float(), torch.arange(4))[0].item()) < 1e-4
