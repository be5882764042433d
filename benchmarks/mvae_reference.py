"""The MVAE authors' own MNIST network, trained by their recipe, seen with our measures.

Does the reference implementation (github.com/mhw32/multimodal-vae-public, ``mnist/model.py``)
keep its image and label experts on shared latent dimensions, which the paper's Table 2 joint
log p(x1, x2) needs, or does it split them as dispart's MVAE does (benchmarks/mvae_experts.py)?
The script imports the reference ``MVAE`` class from a checkout you name (nothing of it is copied
here; its ``train.py`` needs torchvision, so the recipe is re-written below from its description:
Adam lr 1e-3, batch 100, sum of the three ELBOs of the full, image-only and label-only inputs,
Bernoulli cross-entropy on the grey levels of the training images, label cross-entropy weighted
``--lambda-text``, KL weighted linearly from 0 to 1 over ``--annealing-epochs`` epochs, per batch)
and measures, on MNIST test images binarised with dispart's fixed draw:

- every epoch: image -> label accuracy (mean of q(z | image), label decoder's argmax);
- at the end: the experts' mean precision per dimension and their overlap
  (``mvae_experts.expert_dimensions``), and importance-sampled log p(x1), log p(x1, x2) with
  q(z | x1) as proposal (the paper's), K samples on the first ``--n-test`` test images, and their
  difference, the log-probability of the label given the image (paper: -86.255 - -86.026 = -0.23).

    git --git-dir /work/.mirror/mhw32+multimodal-vae-public/repo show HEAD:mnist/model.py > /tmp/ref/model.py
    OMP_NUM_THREADS=1 python benchmarks/mvae_reference.py --reference /tmp/ref/model.py \\
        --data-dir ../shared/data --epochs 30 --annealing-epochs 12 --results mvae_reference

``--model dispart`` trains dispart's MVAE instead (its options for the reference's networks, the
reference's initial weights of that seed copied in, the same batches, image draws and noise),
by dispart's own loss; ``--compare-objective`` checks that loss against the reference's on one
batch (same weights, same noise) and writes only that; ``--no-likelihood`` skips the likelihoods.

Writes benchmarks/results/RESULTS.json with the command; ``--evaluate-only --weights W`` scores saved
weights again (into the same file, keeping its training history, when that file trained W).
Exit 0 with a message when the MNIST file or the reference model file is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.distributions import Bernoulli, Categorical, Independent, Normal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's dispart, installed or not
sys.path.insert(0, str(ROOT / "benchmarks"))

from mvae_experts import expert_dimensions  # noqa: E402

from dispart.batches.loaders import BINARIZE_SEED, binarize_images  # noqa: E402
from dispart.batches.modality import ModalitySpec  # noqa: E402
from dispart.data.mnist import load_mnist  # noqa: E402
from dispart.files import atomic_write_json, atomic_write_with, read_json  # noqa: E402
from dispart.models.mvae import MVAE  # noqa: E402


def load_reference(path: Path) -> type:
    """The ``MVAE`` class of the reference's mnist/model.py at ``path``."""
    spec = importlib.util.spec_from_file_location("mvae_reference_model", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MVAE


def elbo_terms(model: torch.nn.Module, image: torch.Tensor | None, label: torch.Tensor | None,
               target: torch.Tensor, y: torch.Tensor, lambda_text: float, kl_weight: float) -> torch.Tensor:
    """Batch mean of -ELBO for the inputs given (None: absent), reconstructing only those given.
    image, target: (B, 784) in [0, 1]; label, y: (B,) int64."""
    image_logits, label_logits, mu, logvar = model(image, label)
    loss = torch.zeros(len(target))
    if image is not None:
        loss = loss + F.binary_cross_entropy_with_logits(image_logits, target, reduction="none").sum(1)
    if label is not None:
        loss = loss + lambda_text * F.cross_entropy(label_logits, y, reduction="none")
    # The closed form of KL(N(mu, e^logvar) || N(0, I)), written as the reference's train.py has it,
    # not torch.distributions.kl_divergence: the same value, but its rounding differs, and over an
    # epoch that changes the trajectory (image -> label 76.4 % instead of 72.7 % after epoch 1), so
    # the recorded runs in benchmarks/results/mvae_reference_*.json would no longer be reproduced.
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return (loss + kl_weight * kl).mean()


def dispart_twin(ref: torch.nn.Module, n_latents: int, lambda_text: float) -> torch.nn.Module:
    """dispart's MVAE with the reference networks' options and ``ref``'s weights copied in (the
    label expert's first layer, a Linear on one-hot labels, gets the embedding as its weight and a
    zero bias)."""
    specs = [ModalitySpec("image", "vector", (784,), "bernoulli"),
             ModalitySpec("label", "categorical", (10,), "categorical")]
    ours = MVAE(specs, latent_dim=n_latents, hidden=512, lambdas={"image": 1.0, "label": lambda_text},
                activation="swish", decoder_layers=3, categorical_init="embedding")
    pairs = [(ours.experts["image"].pre.net[0], ref.image_encoder.fc1),
             (ours.experts["image"].pre.net[2], ref.image_encoder.fc2),
             (ours.experts["label"].pre.net[2], ref.text_encoder.fc2)]
    for name, dec in (("image", ref.image_decoder), ("label", ref.text_decoder)):
        layers = [dec.fc1, dec.fc2, dec.fc3, dec.fc4]
        pairs += [(ours.decoders[name].net[2 * j], f) for j, f in enumerate(layers)]
    with torch.no_grad():
        for dst, src in pairs:
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        first = ours.experts["label"].pre.net[0]
        first.weight.copy_(ref.text_encoder.fc1.weight.T)
        first.bias.zero_()
        for m, enc in (("image", ref.image_encoder), ("label", ref.text_encoder)):
            mine = ours.experts[m]
            mine.head.linear.weight.copy_(torch.cat([enc.fc31.weight, enc.fc32.weight]))
            mine.head.linear.bias.copy_(torch.cat([enc.fc31.bias, enc.fc32.bias]))
    return ours


class DispartAsReference(torch.nn.Module):
    """dispart's MVAE seen through the reference model's interface (what this script measures):
    ``infer``, the experts' (mean, log-variance) and the decoders; trained by its own ``loss``."""

    def __init__(self, mvae: torch.nn.Module) -> None:
        super().__init__()
        self.mvae, self.n_latents = mvae, mvae.latent_dim

    def infer(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None):
        batch = {k: v for k, v in (("image", image), ("label", text)) if v is not None}
        q = self.mvae.encode(batch)["z"]
        return q.mean, q.variance.log()

    def image_encoder(self, x: torch.Tensor):
        return self.mvae.expert_params("image", x)

    def text_encoder(self, y: torch.Tensor):
        return self.mvae.expert_params("label", y)

    def image_decoder(self, z: torch.Tensor) -> torch.Tensor:
        return self.mvae.decoders["image"](z)

    def text_decoder(self, z: torch.Tensor) -> torch.Tensor:
        return self.mvae.decoders["label"](z)

    def training_loss(self, target: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mvae.loss({"image": target, "label": y}).loss


def compare_objectives(ref: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lambda_text: float,
                       kl_weight: float, seed: int) -> dict:
    """The reference's training loss (sum of the three -ELBOs) and dispart's MVAE loss on the same
    batch, same weights (:func:`dispart_twin`) and same noise (both draw z for the full, image-only
    and label-only inputs in that order from the global RNG, reseeded before each), and the
    relative differences of their gradients on every copied weight matrix."""
    ours = dispart_twin(ref, ref.n_latents, lambda_text)
    steps = 1000
    ours.anneal_steps = steps
    ours.anneal_step.fill_(round(kl_weight * steps))
    torch.manual_seed(seed)
    loss_ref = reference_loss(ref, x, y, lambda_text, kl_weight)
    torch.manual_seed(seed)
    loss_ours = ours.loss({"image": x, "label": y}).loss
    ref.zero_grad()
    loss_ref.backward()
    loss_ours.backward()
    enc_i, enc_l = ref.image_encoder, ref.text_encoder
    grads = {"image expert layer 1": (enc_i.fc1.weight.grad, ours.experts["image"].pre.net[0].weight.grad),
             "label expert layer 1": (enc_l.fc1.weight.grad.T, ours.experts["label"].pre.net[0].weight.grad),
             "image expert head": (torch.cat([enc_i.fc31.weight.grad, enc_i.fc32.weight.grad]),
                                   ours.experts["image"].head.linear.weight.grad),
             "image decoder output": (ref.image_decoder.fc4.weight.grad,
                                      ours.decoders["image"].net[6].weight.grad),
             "label decoder output": (ref.text_decoder.fc4.weight.grad,
                                      ours.decoders["label"].net[6].weight.grad)}
    rel = {k: float((a - b).norm() / a.norm()) for k, (a, b) in grads.items()}
    return {"batch": len(y), "kl_weight": kl_weight, "loss_reference": float(loss_ref.detach()),
            "loss_dispart": float(loss_ours.detach()), "gradient_relative_difference": rel,
            "label_bias_gradient_norm": float(ours.experts["label"].pre.net[0].bias.grad.norm())}


def reference_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lambda_text: float,
                   kl_weight: float) -> torch.Tensor:
    """The reference recipe's training loss: -ELBO of (image, label) + of the image alone + of the
    label alone, each a batch mean. x: (B, 784) binary or grey images (input and target), y: (B,)."""
    return (elbo_terms(model, x, y, x, y, lambda_text, kl_weight)
            + elbo_terms(model, x, None, x, y, lambda_text, kl_weight)
            + elbo_terms(model, None, y, x, y, lambda_text, kl_weight))


@torch.no_grad()
def image_to_label(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of argmax p(label | mean of q(z | image)) over (N, 784) images x, (N,) labels y."""
    mu, _ = model.infer(x, None)
    return float((model.text_decoder(mu).argmax(1) == y).float().mean())


@torch.no_grad()
def log_likelihoods(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, k: int,
                    gen: torch.Generator, chunk: int = 10) -> tuple[float, float]:
    """Mean over the N examples of log p(x1) and log p(x1, x2) (nats), K importance samples from
    q(z | x1) per example. x: (N, 784) binary, y: (N,)."""
    lp_x, lp_xy = [], []
    for i in range(0, len(x), chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        mu, logvar = model.infer(xb, None)  # (b, L)
        q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
        prior = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
        z = mu + (0.5 * logvar).exp() * torch.randn((k, *mu.shape), generator=gen)  # (K, b, L)
        log_w = prior.log_prob(z) - q.log_prob(z)  # (K, b)
        image = Independent(Bernoulli(logits=model.image_decoder(z)), 1)
        log_w = log_w + image.log_prob(xb.expand(k, -1, -1))
        log_wy = log_w + Categorical(logits=model.text_decoder(z)).log_prob(yb.expand(k, -1))
        lp_x.append(torch.logsumexp(log_w, 0) - math.log(k))
        lp_xy.append(torch.logsumexp(log_wy, 0) - math.log(k))
    return float(torch.cat(lp_x).mean()), float(torch.cat(lp_xy).mean())


@torch.no_grad()
def log_p_labels(model: torch.nn.Module, latent_dim: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """(10,) log p(x2 = c) = log E_p(z)[p(c | z)] with K prior samples (the paper's 5,000)."""
    z = torch.randn(k, latent_dim, generator=gen)
    return torch.logsumexp(torch.log_softmax(model.text_decoder(z), dim=1), dim=0) - math.log(k)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, help="path of the reference's mnist/model.py")
    ap.add_argument("--data-dir", required=True, help="folder with mnist/mnist.npz")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--annealing-epochs", type=float, default=12.0,
                    help="epochs over which the KL weight rises from 0 to 1 (reference: 200 of 500)")
    ap.add_argument("--lambda-text", type=float, default=10.0, help="label weight (reference code: 10)")
    ap.add_argument("--n-latents", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--targets", choices=("grey", "dynamic"), default="grey",
                    help="training targets: grey levels (reference) or a new Bernoulli draw each epoch")
    ap.add_argument("--text-init", choices=("embedding", "linear"), default="embedding",
                    help="the label expert's first layer: the reference's nn.Embedding init (N(0, 1)) or "
                         "that of a Linear on one-hot labels (U(+-1/sqrt(10)) weights plus such a bias), "
                         "as dispart's expert has")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-test", type=int, default=10000,
                    help="first test images for the likelihoods (default: all 10,000, as Table 2)")
    ap.add_argument("--weights", default="",
                    help="safetensors file: written after training; with --evaluate-only, read instead")
    ap.add_argument("--evaluate-only", action="store_true", help="no training: measure --weights")
    ap.add_argument("--k", type=int, default=1000, help="importance samples per test image")
    ap.add_argument("--no-likelihood", action="store_true",
                    help="skip the log-likelihoods (about 15 min at one thread): accuracy and experts only")
    ap.add_argument("--k-given", type=int, default=5000, help="prior samples for log p(x2)")
    ap.add_argument("--results", default="mvae_reference", help="benchmarks/results/NAME.json")
    ap.add_argument("--model", choices=("reference", "dispart"), default="reference",
                    help="train the reference's network, or dispart's MVAE with its options for the "
                         "reference's networks, the reference's initial weights copied in and the same "
                         "noise and data stream, trained by its own loss (benchmarks/mvae_reference.py "
                         "--compare-objective checks that loss against the reference's)")
    ap.add_argument("--compare-objective", action="store_true",
                    help="no training: the reference's loss and gradients against dispart's MVAE with the "
                         "same weights and noise on 100 training images (writes only that)")
    args = ap.parse_args(argv)

    npz = Path(args.data_dir) / "mnist" / "mnist.npz"
    if not npz.is_file() or not Path(args.reference).is_file():
        print(f"skipped: needs {npz} and the reference model file {args.reference}")
        return
    torch.manual_seed(args.seed)
    mnist = load_mnist(npz)
    train_x = torch.from_numpy(mnist["train"][0].reshape(-1, 784).astype(np.float32))
    train_y = torch.from_numpy(mnist["train"][1].astype(np.int64))
    test_grey = mnist["test"][0].astype(np.float32)  # intensities in [0, 1]
    test_x = torch.from_numpy(binarize_images(test_grey, "stochastic", BINARIZE_SEED + 1).reshape(-1, 784))
    test_y = torch.from_numpy(mnist["test"][1].astype(np.int64))

    model = load_reference(Path(args.reference))(args.n_latents)
    if args.text_init == "linear":
        emb = model.text_encoder.fc1.weight  # (10, hidden)
        bound = 1.0 / math.sqrt(emb.shape[0])
        with torch.no_grad():
            bias = torch.empty(emb.shape[1]).uniform_(-bound, bound)
            emb.uniform_(-bound, bound).add_(bias)
    if args.compare_objective:
        gen = torch.Generator().manual_seed(args.seed)
        x = torch.bernoulli(train_x[:args.batch_size], generator=gen)
        check = compare_objectives(model, x, train_y[:args.batch_size], args.lambda_text, 0.5, args.seed)
        print(check)
        atomic_write_json(ROOT / "benchmarks" / "results" / f"{args.results}.json", {
            "what": "the reference MVAE's training loss and gradients against dispart's MVAE "
                    "(model.activation=swish, decoder_layers=3, categorical_init=embedding) with the "
                    "reference's initial weights copied in, on one batch with the same noise",
            "command": "python benchmarks/mvae_reference.py " + shlex.join(sys.argv[1:]), **check})
        return
    if args.model == "dispart":
        state = torch.get_rng_state()
        model = DispartAsReference(dispart_twin(model, args.n_latents, args.lambda_text))
        torch.set_rng_state(state)  # building it drew weights: the reference run's noise from here on
    if args.evaluate_only:
        if not args.weights:
            raise SystemExit("--evaluate-only needs --weights")
        model.load_state_dict(load_file(args.weights))
        args.epochs = 0
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    n_batches = math.ceil(len(train_x) / args.batch_size)
    anneal_steps = args.annealing_epochs * n_batches
    if args.model == "dispart":  # its KL weight at the k-th step, k / anneal_steps, as below
        model.mvae.anneal_steps = round(anneal_steps)
        model.mvae.anneal_step.fill_(1)
    history, step, t0, w = [], 0, time.perf_counter(), 1.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=gen)
        total = 0.0
        for b in range(n_batches):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            grey, y = train_x[idx], train_y[idx]
            target = grey if args.targets == "grey" else torch.bernoulli(grey, generator=gen)
            step += 1
            w = min(1.0, step / anneal_steps) if anneal_steps > 0 else 1.0
            if args.model == "dispart":
                loss = model.training_loss(target, y)
            else:
                loss = reference_loss(model, target, y, args.lambda_text, w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        model.eval()
        acc = image_to_label(model, test_x, test_y)
        history.append({"epoch": epoch, "kl_weight": round(w, 4), "train_loss": round(total / n_batches, 3),
                        "image_to_label": round(acc, 4),
                        "minutes": round((time.perf_counter() - t0) / 60, 2)})
        print(history[-1], flush=True)
    if args.weights and not args.evaluate_only:
        atomic_write_with(args.weights, lambda tmp: save_file(model.state_dict(), tmp))

    model.eval()
    with torch.no_grad():
        _, img_logvar = model.image_encoder(test_x[:2000])
        _, lab_logvar = model.text_encoder(test_y[:2000])
    dims = expert_dimensions((-img_logvar).exp().mean(0).numpy(), (-lab_logvar).exp().mean(0).numpy())
    out = {
        "what": ("the MVAE reference code's MNIST network (imported from --reference)"
                 if args.model == "reference" else
                 "dispart's MVAE with the reference networks' options and the reference's initial "
                 "weights, on the reference run's stream of batches and noise (--model dispart)")
                + ", trained by the reference's recipe; image -> label accuracy per epoch, the experts' "
                  "dimensions, and log p(x1), log p(x1, x2) under q(z | x1) on binarised test images "
                  "(dispart's fixed draw)",
        "command": "OMP_NUM_THREADS=1 python benchmarks/mvae_reference.py " + shlex.join(sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("results",)},
        "history": history,
        "experts": dims,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if not args.no_likelihood:
        t1 = time.perf_counter()
        lp_x, lp_xy = log_likelihoods(model, test_x[:args.n_test], test_y[:args.n_test], args.k,
                                      torch.Generator().manual_seed(args.seed + 1))
        log_py = log_p_labels(model, args.n_latents, args.k_given,
                              torch.Generator().manual_seed(args.seed + 2))
        out.update({
            "n_test": args.n_test, "k": args.k,
            "log_p_x1": round(lp_x, 3), "log_p_x1_x2": round(lp_xy, 3),
            "log_p_label_given_image": round(lp_xy - lp_x, 3),
            # log p(x1 | x2) = log p(x1, x2) - log p(x2), as mvae_tables.py / dispart likelihood
            "log_p_x1_given_x2": round(lp_xy - float(log_py[test_y[:args.n_test]].mean()), 3),
            "paper_mvae": {"log_p_x1": -86.026, "log_p_x1_x2": -86.255, "log_p_x1_given_x2": -83.970,
                           "log_p_label_given_image": -0.229},
            "likelihood_seconds": round(time.perf_counter() - t1, 1)})
    print({k: out.get(k) for k in ("experts", "log_p_x1", "log_p_x1_x2", "log_p_x1_given_x2",
                                   "log_p_label_given_image")})
    path = ROOT / "benchmarks" / "results" / f"{args.results}.json"
    old = read_json(path) if path.is_file() else {}
    if args.evaluate_only and old.get("settings", {}).get("weights") == args.weights:
        # the file of the training run of these weights: keep how they were trained
        out.update(command=old["command"], settings=old["settings"], history=old["history"],
                   scored_by=out["command"])
    atomic_write_json(path, out)


if __name__ == "__main__":
    main()
