"""The speech decoder's LSTM with its constant input projected once (issue 13, throughput): the same
states, gradients and state-dict keys as the fused kernel on the repeated input (the old code)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from dispart.batches.batch import Sequences
from dispart.batches.modality import DIGIT_IMAGE, SPEECH
from dispart.models import PVAE
from dispart.nn.decoders import SequenceDecoder

pytestmark = pytest.mark.usefixtures("single_thread")


class OldSequenceDecoder(nn.Module):
    """SequenceDecoder as it was before the hoist (commit 4aa81c3), verbatim."""

    def __init__(self, latent_dim: int, output_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.lstm = nn.LSTM(latent_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, output_dim)
        self.output_dim = output_dim

    def forward(self, z: Tensor, lengths: Tensor) -> Tensor:
        t_max = int(lengths.max())
        h, _ = self.lstm(z.unsqueeze(1).expand(-1, t_max, -1).contiguous())
        mean = self.out(h)
        valid = torch.arange(t_max, device=z.device)[None, :] < lengths.to(z.device)[:, None]
        return mean * valid.unsqueeze(-1)


def _pair(latent: int = 6, out: int = 5, hidden: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    old = OldSequenceDecoder(latent, out, hidden)
    new = SequenceDecoder(latent, out, hidden)
    new.load_state_dict(old.state_dict(), strict=True)  # the old keys load as they are
    return old, new


def test_state_dict_keys_are_unchanged() -> None:
    old, new = _pair()
    assert list(new.state_dict()) == list(old.state_dict()) == [
        "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
        "out.weight", "out.bias"]
    # and a whole PVAE: its decoder keys are the nn.LSTM's, as in run folders saved before
    keys = [k for k in PVAE([SPEECH, DIGIT_IMAGE]).state_dict() if k.startswith("generative.decoders.audio.")]
    assert sorted(keys) == sorted(f"generative.decoders.audio.{k}" for k in old.state_dict())


@pytest.mark.parametrize("lengths", [[7, 3, 1, 7], [1], [12, 12]])
def test_hoisted_training_path_equals_the_fused_kernel(lengths: list[int]) -> None:
    """Outputs and every gradient (z, W_ih, W_hh, biases, output layer) to float tolerance."""
    old, new = _pair()
    lens = torch.tensor(lengths)
    z = torch.randn(len(lengths), 6)
    z_old, z_new = z.clone().requires_grad_(), z.clone().requires_grad_()
    assert new._hoisted(z_new)  # the path under test
    y_old, y_new = old(z_old, lens), new(z_new, lens)
    torch.testing.assert_close(y_new, y_old, rtol=1e-5, atol=1e-6)
    assert (y_new[torch.arange(max(lengths))[None, :] >= lens[:, None]] == 0).all()  # past each length
    w = torch.randn_like(y_old)
    (y_old * w).sum().backward()
    (y_new * w).sum().backward()
    torch.testing.assert_close(z_new.grad, z_old.grad, rtol=1e-4, atol=1e-6)
    for (name, p_old), p_new in zip(old.named_parameters(), new.parameters(), strict=True):
        torch.testing.assert_close(p_new.grad, p_old.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_paths_without_gradients_use_the_fused_kernel() -> None:
    old, new = _pair()
    z, lens = torch.randn(3, 6), torch.tensor([4, 2, 5])
    with torch.no_grad():
        assert not new._hoisted(z)
        torch.testing.assert_close(new(z, lens), old(z, lens))
    new.requires_grad_(False)
    assert not new._hoisted(z)  # frozen decoder, constant input: nothing to record
    new.requires_grad_(True)
    new.hoist = False  # the benchmark's "fused" variant
    assert not new._hoisted(z.requires_grad_())
    torch.testing.assert_close(new(z, lens), old(z, lens))


def test_pvae_loss_and_gradients_match_the_old_decoder() -> None:
    """One PVAE training loss with the decoder hoisted or fused: same value and gradients."""
    torch.manual_seed(0)
    model = PVAE([SPEECH, DIGIT_IMAGE], hidden=32)
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([9, 4, 6, 2])
    batch = {"audio": Sequences(torch.randn(4, 9, 80, generator=g), lens),
             "image": torch.rand(4, 1, 28, 28, generator=g)}
    neg = torch.tensor([1, 2, 3, 0])
    grads = {}
    for hoist in (True, False):
        model.decoders["audio"].hoist = hoist
        model.zero_grad()
        torch.manual_seed(2)  # the same reparameterisation noise
        loss = model.loss(batch, negative_index=neg).loss
        loss.backward()
        grads[hoist] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                        if p.grad is not None})
    torch.testing.assert_close(grads[True][0], grads[False][0], rtol=1e-5, atol=1e-4)
    assert grads[True][1].keys() == grads[False][1].keys()
    for name, g_true in grads[True][1].items():
        torch.testing.assert_close(g_true, grads[False][1][name], rtol=1e-3, atol=1e-4, msg=name)
