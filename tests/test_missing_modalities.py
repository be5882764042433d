"""Any subset of modalities, per-row masks, weak supervision; PVAE/JMVAE for M > 2."""

import numpy as np
import pytest
import torch
from model_helpers import kl_diag, np64, rbf, vec, vec_batch

from dispart.batches.batch import Sequences, index_batch
from dispart.batches.labels import label_spec
from dispart.batches.modality import ModalitySpec
from dispart.batches.weak import WeaklyPaired, collate_partial
from dispart.models import JMVAE, MVAE, PVAE, VAE, PlainJMVAE, build_model, mask_key
from dispart.nn.experts import product_quotient_of_experts

SPEECH = ModalitySpec("audio", "sequence", (4,))
LAB = label_spec(3)




def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def run(model, batch, seed=5, **kw):
    model.zero_grad()
    torch.manual_seed(seed)
    out = model.loss(batch, **kw)
    out.loss.backward()
    return out, grads(model)


@pytest.mark.parametrize("make", [
    lambda: MVAE([vec("a"), vec("b"), vec("c")], latent_dim=2, hidden=8, k=1),
    lambda: PVAE([vec("a"), vec("b"), vec("c")], semantic_dim=2, style_dim=2, hidden=8,
                 allow_missing=True),
])
def test_masked_values_change_nothing(make):
    torch.manual_seed(0)
    model = make()
    b = vec_batch("abc")
    b[mask_key("b")] = torch.tensor([True, False, True, False, True, True])
    b[mask_key("c")] = torch.tensor([False, False, True, True, True, False])
    garbage = dict(b)
    garbage["b"] = b["b"].clone()
    garbage["b"][~b[mask_key("b")]] = 1e6
    garbage["c"] = b["c"].clone()
    garbage["c"][~b[mask_key("c")]] = float("nan")
    (o1, g1), (o2, g2) = run(model, b), run(model, garbage)
    assert o1.loss.item() == pytest.approx(o2.loss.item(), rel=1e-6)
    assert o1.terms.keys() == o2.terms.keys()
    assert g1.keys() == g2.keys() and all(torch.allclose(g1[n], g2[n]) for n in g1)


def test_masked_loss_is_size_weighted_loss_of_presence_groups():
    torch.manual_seed(0)
    model = MVAE([vec("a"), vec("b")], latent_dim=2, hidden=8)
    b = vec_batch("ab")
    mask = torch.tensor([True, False, True, False, True, True])
    b[mask_key("b")] = mask
    torch.manual_seed(2)
    out = model.loss(b)
    # Groups in order of presence code: rows with a only (code 1), then a and b (code 3).
    only_a = torch.nonzero(~mask).squeeze(1)
    both = torch.nonzero(mask).squeeze(1)
    torch.manual_seed(2)
    l1 = model.loss({"a": b["a"][only_a]})
    l2 = model.loss({"a": b["a"][both], "b": b["b"][both]})
    expected = (2 * l1.loss + 4 * l2.loss) / 6
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.terms["elbo_b"].item() == pytest.approx(l2.terms["elbo_b"].item(), rel=1e-6)
    # A row with none of the model's modalities is dropped; all rows empty is an error.
    b[mask_key("a")] = torch.tensor([True, False, True, True, True, True])  # row 1: neither
    torch.manual_seed(2)
    out = model.loss(b)
    assert torch.isfinite(out.loss)
    torch.manual_seed(2)
    l1 = model.loss({"a": b["a"][[3]]})  # a only
    rows = torch.tensor([0, 2, 4, 5])  # a and b
    l2 = model.loss({"a": b["a"][rows], "b": b["b"][rows]})
    assert out.loss.item() == pytest.approx(((1 * l1.loss + 4 * l2.loss) / 5).item(), rel=1e-6)
    with pytest.raises(ValueError, match="none of the modalities"):
        model.loss({"a": b["a"], mask_key("a"): torch.zeros(6, dtype=torch.bool)})


def test_mvae_masked_encode_equals_subset_encode_row_by_row():
    torch.manual_seed(0)
    model = MVAE([vec("a"), vec("b"), vec("c")], latent_dim=2, hidden=8)
    b = vec_batch("abc")
    b[mask_key("b")] = torch.tensor([True, False, True, False, True, True])
    q = model.encode(b)["z"]
    q_ac = model.encode({"a": b["a"], "c": b["c"]})["z"]
    q_abc = model.encode({k: b[k] for k in "abc"})["z"]
    for row in range(6):
        ref = q_abc if b[mask_key("b")][row] else q_ac
        assert torch.allclose(q.mean[row], ref.mean[row], atol=1e-6)
        assert torch.allclose(q.variance[row], ref.variance[row], atol=1e-6)


def test_pvae_three_modalities_any_subset():
    torch.manual_seed(0)
    m = PVAE([vec("a"), vec("b"), SPEECH], semantic_dim=2, style_dim=3, hidden=8, allow_missing=True)
    b = vec_batch("ab", b=4)
    b["audio"] = Sequences.from_list([torch.randn(n, 4) for n in (3, 5, 2, 4)])
    full = m.loss(b)
    assert {"rec_a", "rec_b", "rec_audio", "kl", "elbo", "ch_kl", "cm_hinge"} <= set(full.terms)
    assert set(m.encode(b)) == {"z_s", "z_a", "z_b", "z_audio"}
    # Two of three: z_s = r_a r_b / p (variances floored at the prior), styles from r_m only.
    q = m.encode({"a": b["a"], "audio": b["audio"]})
    assert set(q) == {"z_s", "z_a", "z_audio"}
    ra, rs = m.unimodal["a"](b["a"]), m.unimodal["audio"](b["audio"])
    means = torch.stack([ra["z_s"].mean, rs["z_s"].mean])
    logvars = torch.stack([ra["z_s"].variance.log(), rs["z_s"].variance.log()]).clamp(max=0)
    mean, logvar = product_quotient_of_experts(means, logvars, torch.zeros(4, 2), torch.zeros(4, 2))
    assert torch.allclose(q["z_s"].mean, mean, atol=1e-5)
    assert torch.allclose(q["z_s"].variance.log(), logvar, atol=1e-5)
    assert torch.allclose(q["z_audio"].mean, rs["z_audio"].mean)
    # Unimodal loss: the ELBO under r_m, no CH/CM.
    uni = m.loss({"a": b["a"]})
    assert uni.terms["ch_kl"].item() == 0 and uni.terms["cm_hinge"].item() == 0
    assert uni.loss.item() == pytest.approx(-uni.terms["elbo"].item(), rel=1e-5)
    neg = torch.tensor([2, 0, 3, 1])  # not a cyclic shift: random_negatives never draws it
    pair = m.loss({"a": b["a"], "b": b["b"]}, negative_index=neg)
    assert pair.terms["cm_hinge"].item() >= 0 and pair.terms["ch_kl"].item() > 0
    assert "rec_audio" not in pair.terms
    # By hand (numpy) from r_a, r_b: q(z_s | a, b) has precision T_a + T_b - 1 (T = 1 / min(V, 1))
    # and mean (T_a mu_a + T_b mu_b) / precision; its styles are r_m's, so CH (eq. 7 over the
    # present modalities) is sum_m KL(q(z_s) || r_m(z_s)); CM is eq. (8) over the pair (M = 2).
    rb = m.unimodal["b"](b["b"])
    mu = {k: np64(r["z_s"].mean) for k, r in (("a", ra), ("b", rb))}
    var = {k: np64(r["z_s"].variance) for k, r in (("a", ra), ("b", rb))}
    t = {k: 1 / np.minimum(var[k], 1.0) for k in "ab"}
    prec = t["a"] + t["b"] - 1
    q_mean = (t["a"] * mu["a"] + t["b"] * mu["b"]) / prec
    ch = sum(kl_diag(q_mean, -np.log(prec), mu[k], np.log(var[k])) for k in "ab")
    cm = sum(np.maximum(0.0, 0.5 - rbf(mu[anchor], mu[k]) + rbf(mu[anchor], mu[k][neg.numpy()]))
             for k, anchor in (("a", "b"), ("b", "a"))) / 2
    assert pair.terms["ch_kl"].item() == pytest.approx(ch.mean(), rel=1e-5)
    assert pair.terms["cm_hinge"].item() == pytest.approx(cm.mean(), rel=1e-5, abs=1e-7)
    assert pair.loss.item() == pytest.approx(
        -pair.terms["elbo"].item() + 0.1 * ch.mean() + 10.0 * cm.mean(), rel=1e-5)
    # Without allow_missing, the paper's behaviour: full pairs only.
    strict = PVAE([vec("a"), vec("b")], semantic_dim=2, style_dim=2, hidden=8)
    with pytest.raises(ValueError, match="allow_missing=True"):
        strict.loss({"a": b["a"]})
    with pytest.raises(ValueError, match="every row"):
        strict.loss({"a": b["a"], "b": b["b"], mask_key("b"): torch.tensor([1, 0, 1, 1]).bool()})
    assert build_model(m.hparams()).allow_missing


def test_jmvae_m3_limits_and_plain_jmvae_zero_filling():
    torch.manual_seed(0)
    j = JMVAE([vec("a"), vec("b"), vec("c")], latent_dim=2, hidden=8, alpha=0.5)
    b = vec_batch("abc")
    out = j.loss(b)
    assert out.loss.item() == pytest.approx((-out.terms["elbo"] + 0.5 * out.terms["kl_unimodal"]).item(),
                                            rel=1e-5)
    assert j.encode({"b": b["b"]})["z"].mean.shape == (6, 2)
    with pytest.raises(ValueError, match="no encoder for other subsets"):
        j.encode({"a": b["a"], "b": b["b"]})
    with pytest.raises(ValueError, match="complete examples"):
        j.loss({"a": b["a"], "b": b["b"]})
    p = PlainJMVAE([vec("a"), vec("b"), vec("c")], latent_dim=2, hidden=8)
    assert not hasattr(p, "unimodal_pre") and p.name == "jmvae"
    zero = {"a": b["a"], "b": torch.zeros(6, 3), "c": b["c"]}
    assert torch.allclose(p.encode({"a": b["a"], "c": b["c"]})["z"].mean, p.encode(zero)["z"].mean)
    masked = dict(b)
    masked[mask_key("b")] = torch.tensor([True, False] * 3)
    rows = p.encode(masked)["z"].mean
    assert torch.allclose(rows[1], p.encode(zero)["z"].mean[1], atol=1e-6)
    assert torch.allclose(rows[0], p.encode(b)["z"].mean[0], atol=1e-6)
    assert set(p.loss(b).terms) == {"rec_a", "rec_b", "rec_c", "kl", "elbo"}
    rebuilt = build_model(p.hparams())
    rebuilt.load_state_dict(p.state_dict())
    assert type(rebuilt) is PlainJMVAE


def test_vae_drops_rows_without_its_modality():
    torch.manual_seed(0)
    m = VAE(vec("a"), latent_dim=2, hidden=8)
    b = vec_batch("ab")
    keep = torch.tensor([True, False, True, True, False, True])
    torch.manual_seed(1)
    masked = m.loss({**b, mask_key("a"): keep})
    torch.manual_seed(1)
    ref = m.loss({"a": b["a"][keep]})
    assert masked.loss.item() == pytest.approx(ref.loss.item(), rel=1e-6)


class Toy:
    """Paired items: a (T, 4) sequence, a vector and a label, all carrying the index."""

    def __len__(self):
        return 20

    def __getitem__(self, i):
        return {"audio": np.full((1 + i % 3, 4), i, np.float32), "v": np.full(3, i, np.float32),
                "label": i % 3, "index": i}


def test_weakly_paired_wrapper_and_collate():
    w = WeaklyPaired(Toy(), ["audio", "v", "label"], paired_fraction=0.25, seed=0)
    assert w.summary() == {"paired": 5, "only_audio": 15, "only_v": 15, "only_label": 15}
    assert len(w) == 5 + 45
    items = [w[i] for i in range(len(w))]
    paired = [it for it in items if len({"audio", "v", "label"} & set(it)) == 3]
    assert len(paired) == 5 and all(int(it["v"][0]) == it["index"] for it in paired)
    unimodal = [it for it in items if len({"audio", "v", "label"} & set(it)) == 1]
    assert len(unimodal) == 45 and all("index" in it for it in unimodal)
    # Pairing destroyed: each modality's unpaired examples come in an independent order.
    orders = [list(w.unpaired_indices[m]) for m in ("audio", "v", "label")]
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]
    assert not set(orders[0]) & set(w.paired_indices.tolist())
    # Deterministic in the seed; "split" gives disjoint shares; paired_only keeps pairs only.
    assert WeaklyPaired(Toy(), ["audio", "v", "label"], 0.25, seed=0).items == w.items
    s = WeaklyPaired(Toy(), ["audio", "v", "label"], 0.25, seed=0, unpaired="split")
    assert s.summary() == {"paired": 5, "only_audio": 5, "only_v": 5, "only_label": 5}
    assert sorted(i for m in ("audio", "v", "label") for i in s.unpaired_indices[m]) == sorted(
        set(range(20)) - set(s.paired_indices.tolist()))  # disjoint shares of the other 15
    assert len(WeaklyPaired(Toy(), ["audio", "v"], 0.25, paired_only=True)) == 5
    with pytest.raises(ValueError):
        WeaklyPaired(Toy(), ["audio", "v"], 1.5)
    # Collated mixed batches train an MVAE; masks mark the real rows.
    specs = [SPEECH, vec("v"), LAB]
    batch = collate_partial([w[i] for i in (0, 1, 7, 20, 40)], specs)
    assert batch[mask_key("audio")].tolist() == [True, True, True, False, False]
    assert batch["label"].dtype == torch.int64 and batch["index"].shape == (5,)
    model = MVAE(specs, latent_dim=2, hidden=8, k=1)
    out = model.loss(batch)
    assert torch.isfinite(out.loss)
    only_label_rows = index_batch(batch, torch.tensor([4]))
    assert not only_label_rows[mask_key("audio")].any()
