"""WarpedImageDecoder (model.image_decoder="warp"): the style part of the latent only warps and
thickens what the content part draws."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dispart.batches.modality import DIGIT_IMAGE, SPEECH, ModalitySpec
from dispart.models import PVAE
from dispart.nn.decoders import WARP_LINEAR, WARP_SHIFT, ImageDecoder, WarpedImageDecoder
from dispart.nn.modality import build_decoder


def _bar() -> torch.Tensor:
    """(1, 1, 28, 28): a vertical bar 4 pixels wide, rows 4-23."""
    image = torch.zeros(1, 1, 28, 28)
    image[..., 4:24, 12:16] = 1.0
    return image


class _Fixed(torch.nn.Module):
    """A content network that always draws ``image`` (1, C, H, W)."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.image = image

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.image.expand(z.shape[0], *self.image.shape[1:])


def _decoder_drawing(image: torch.Tensor) -> WarpedImageDecoder:
    """A WarpedImageDecoder whose content network always draws ``image``."""
    d = WarpedImageDecoder(3, 2, (1, 28, 28), hidden=8)
    d.template = _Fixed(image)
    return d


def _set_style_output(d: WarpedImageDecoder, raw: list[float]) -> None:
    """Make the style MLP output ``raw`` (7 pre-tanh values) whatever the style latent."""
    last = d.style[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(raw))


def test_starts_as_the_paper_decoder_of_the_content_part():
    """At initialisation the transform is the identity and the stroke weight 0: the output is the
    content network's drawing, whatever the style part; the content network is Appendix B's."""
    torch.manual_seed(0)
    d = WarpedImageDecoder(5, 3, (1, 28, 28), hidden=16)
    assert isinstance(d.template, ImageDecoder)
    z = torch.randn(4, 8)
    other_style = torch.cat([z[:, :5], 10 * torch.randn(4, 3)], dim=1)
    drawn = d.template(z[:, :5])
    assert torch.allclose(d(z), drawn, atol=1e-5)
    assert torch.allclose(d(other_style), drawn, atol=1e-5)


def test_the_style_shears_and_thickens_the_drawing():
    """A shear in the transform moves the bar's top and bottom rows apart horizontally as
    affine_grid + grid_sample say; a positive stroke weight adds ink (towards the 3x3 dilation),
    a negative one removes it (towards the erosion); nothing changes the drawing's identity."""
    bar = _bar()
    d = _decoder_drawing(bar)
    z = torch.zeros(1, 5)
    shear = 0.3  # x_in = x_out + k * y_out (y down): the bar leans right, its top to the right
    _set_style_output(d, [0.0, torch.atanh(torch.tensor(shear / WARP_LINEAR)).item(), 0, 0, 0, 0, 0])
    theta = torch.tensor([[[1.0, shear, 0.0], [0.0, 1.0, 0.0]]])
    expected = F.grid_sample(bar, F.affine_grid(theta, [1, 1, 28, 28], align_corners=False),
                             padding_mode="border", align_corners=False)
    with torch.no_grad():
        leaned = d(z)
    assert torch.allclose(leaned, expected, atol=1e-5)
    cols = torch.arange(28.0)
    top, bottom = leaned[0, 0, 5], leaned[0, 0, 22]
    centre = lambda row: float((row * cols).sum() / row.sum())  # noqa: E731
    assert centre(top) > 13.5 + 2 and centre(bottom) < 13.5 - 2  # the bar leans by several pixels

    for stroke, more in ((2.0, True), (-2.0, False)):
        _set_style_output(d, [0, 0, 0, 0, 0, 0, stroke])
        a = torch.tanh(torch.tensor(stroke))
        with torch.no_grad():
            ink = d(z).sum().item()
        dilated = F.max_pool2d(bar, 3, 1, 1)
        eroded = -F.max_pool2d(-bar, 3, 1, 1)
        target = bar + a.clamp(min=0) * (dilated - bar) + (-a).clamp(min=0) * (eroded - bar)
        assert ink == pytest.approx(target.sum().item(), rel=1e-5)
        assert (ink > bar.sum().item()) is more


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4), min_size=7, max_size=7))
def test_the_transform_stays_bounded_and_never_mirrors(raw):
    """Whatever the style MLP outputs, each linear entry is within WARP_LINEAR of the identity's,
    the shift within WARP_SHIFT, the determinant >= 0.2 (no mirror image, no half turn) and the
    stroke weight in [-1, 1]."""
    d = WarpedImageDecoder(3, 2, (1, 28, 28), hidden=8)
    _set_style_output(d, raw)
    theta, stroke = d.transform(torch.zeros(1, 2))
    linear, shift = theta[0, :, :2], theta[0, :, 2]
    assert (linear - torch.eye(2)).abs().max() <= WARP_LINEAR + 1e-6
    assert shift.abs().max() <= WARP_SHIFT + 1e-6
    assert torch.det(linear) >= (1 - WARP_LINEAR) ** 2 - WARP_LINEAR ** 2 - 1e-6
    assert stroke.abs().max() <= 1.0


def test_build_decoder_and_pvae_choose_it_and_bad_choices_are_named():
    """image_decoder="warp": PVAE's image decoder is a WarpedImageDecoder splitting [z^s, z^i] at
    semantic_dim (speech keeps its LSTM decoder); gradients of the loss reach its style MLP; an
    unknown decoder or a latent with no style part is a clear error."""
    torch.manual_seed(0)
    speech = ModalitySpec("audio", "sequence", (6,))
    m = PVAE([speech, DIGIT_IMAGE], semantic_dim=3, style_dim=2, hidden=16, image_decoder="warp")
    dec = m.decoders["image"]
    assert isinstance(dec, WarpedImageDecoder) and (dec.content_dim, dec.style_dim) == (3, 2)
    assert not isinstance(m.decoders["audio"], WarpedImageDecoder)
    assert m.config.image_decoder == "warp"
    from dispart.batches.batch import Sequences

    b = {"audio": Sequences.from_list([torch.randn(5, 6) for _ in range(4)]),
         "image": torch.rand(4, 1, 28, 28)}
    m.loss(b).loss.backward()
    assert dec.style[-1].weight.grad is not None and dec.style[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="image_decoder must be one of"):
        PVAE([speech, DIGIT_IMAGE], semantic_dim=3, style_dim=2, hidden=16, image_decoder="spline")
    with pytest.raises(ValueError, match="'image'.*style_dim"):
        build_decoder(DIGIT_IMAGE, 8, 16, image_decoder="warp", style_dim=0)
    with pytest.raises(ValueError, match="expected 3 \\(content\\) \\+ 2 \\(style\\)"):
        dec(torch.zeros(1, 4))
    assert isinstance(build_decoder(SPEECH, 8, 16, image_decoder="warp", style_dim=2),
                      type(PVAE([SPEECH, DIGIT_IMAGE]).decoders["audio"]))


def test_config_rejects_an_unknown_image_decoder(tmp_path):
    from dispart.config import ConfigError, load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: pvae\n  image_decoder: spline\n")
    with pytest.raises(ConfigError, match="model.image_decoder"):
        load_config(cfg)
