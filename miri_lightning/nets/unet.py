"""A conditional U-Net velocity field on diffusers' UNet2DModel."""

from collections.abc import Sequence

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn

from miri_lightning.interp import curvature_fill, harmonic_fill

#: Interpolations of a view's observed entries the U-Net can see besides the views.
INTERP_INPUTS = {
    "none": None,
    "harmonic": harmonic_fill,
    "biharmonic": lambda x, observed: curvature_fill(x, observed, iterations=10),
}

#: UNet2DModel's positional time embedding expects diffusion timesteps in [0, 1000].
TIME_SCALE = 1000.0


def keep_spread(t: Tensor) -> Tensor:
    """(B,): the exact rectified-flow velocity per unit deviation, (2t − 1) / ((1 − t)² + t²),
    between two independent draws of one Gaussian: the field that carries a noisy fill
    x = F + σε to another such draw, y − F = (velocity) × (y − F) at every time. Its flow maps
    every fill onto itself (the identity at t = 1), so it keeps the fill's centre and spread."""
    return (2 * t - 1) / ((1 - t) ** 2 + t**2)


class ConditionalUNet(nn.Module):
    """v(a, b, o, t) for images: (B, C, H, W) views and mask, t (B,) -> (B, C, H, W).

    The U-Net sees the source view, the partner view and the mask (3C channels, mapped to
    [-1, 1]) and the time as a float tensor scaled to its 0..1000 range; its output is
    multiplied by (1 - o), so the velocity is exactly zero on observed entries.
    ``attention[i]`` puts self-attention in level i; ``block_out_channels[i]`` is its width.
    ``interp_inputs``: ``harmonic`` or ``biharmonic``: the U-Net also sees that interpolation
    of each view's observed entries (:func:`~miri_lightning.interp.harmonic_fill`,
    :func:`~miri_lightning.interp.curvature_fill`; 2C more channels); ``none``: not. They are
    functions of its other inputs, so the velocity field it should learn is the same; it starts
    from a good guess of both images instead of having to interpolate scattered pixels itself.
    ``interp_skip`` (with ``interp_inputs``): the velocity is the U-Net's output plus
    interp(b) − b, the velocity towards the partner view's interpolation, and the U-Net's
    last layer starts at zero: an untrained field already carries a fill to that
    interpolation, and training learns the correction. Any field is still reachable: the
    same velocity field to learn. ``fill_skip`` (with ``interp_inputs``, instead of
    ``interp_skip``): the velocity is the U-Net's output plus :func:`keep_spread` (t) × (b −
    interp(b)), the field that keeps a noisy fill's centre and spread exactly; training learns
    the correction, and the high-frequency noise a draw carries is not left to the U-Net to
    reproduce. Without them the last layer starts at zero too: an untrained
    field is still, and keeps whatever fill a draw starts from (``miri.coupling=fill``).
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        block_out_channels: Sequence[int] = (32, 64, 64),
        attention: Sequence[bool] = (False, False, True),
        layers_per_block: int = 1,
        mid_attention: bool = True,
        norm_num_groups: int = 8,
        attention_head_dim: int = 8,
        interp_inputs: str = "none",
        interp_skip: bool = False,
        fill_skip: bool = False,
    ):
        super().__init__()
        widths, attention = list(block_out_channels), list(attention)
        if len(attention) != len(widths):
            raise ValueError(
                f"model.attention needs one flag per level of model.block_out_channels "
                f"({len(widths)}), got {len(attention)}"
            )
        bad = [w for w in widths if w % norm_num_groups]
        if bad:
            raise ValueError(
                f"model.block_out_channels {bad} must be multiples of model.norm_num_groups={norm_num_groups}"
            )
        factor = 2 ** (len(widths) - 1)
        if image_size % factor:
            raise ValueError(
                f"data.image_size={image_size} cannot pass a U-Net with {len(widths)} levels: it must be a "
                f"multiple of {factor}; change data.image_size or model.block_out_channels"
            )
        self.channels, self.image_size = int(channels), int(image_size)
        if interp_inputs not in INTERP_INPUTS:
            raise ValueError(f"model.interp_inputs must be one of {tuple(INTERP_INPUTS)}, got {interp_inputs!r}")
        self.interp = INTERP_INPUTS[interp_inputs]
        if interp_skip and self.interp is None:
            raise ValueError("model.interp_skip needs model.interp_inputs=harmonic or biharmonic")
        self.interp_skip = bool(interp_skip)
        if fill_skip and (self.interp is None or interp_skip):
            raise ValueError("model.fill_skip needs model.interp_inputs=harmonic or biharmonic and interp_skip=false")
        self.fill_skip = bool(fill_skip)
        self._interp_cache: tuple[Tensor, Tensor, Tensor] | None = None  # see interpolations()
        self.unet = UNet2DModel(
            sample_size=image_size,
            in_channels=(3 if self.interp is None else 5) * channels,
            out_channels=channels,
            block_out_channels=tuple(widths),
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
            layers_per_block=layers_per_block,
            add_attention=mid_attention,
            norm_num_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
        )
        self.after_reset()

    def after_reset(self) -> None:
        """What fresh weights need beyond each layer's own initialisation (also after a
        ``miri.reinit`` reset): the last layer starts at zero (a still field)."""
        nn.init.zeros_(self.unet.conv_out.weight)
        nn.init.zeros_(self.unet.conv_out.bias)

    def interpolate_items(self, x: Tensor, observed: Tensor) -> Tensor | None:
        """The interpolation of items' observed entries (N, C, H, W) that the U-Net sees as
        the source view's (``interp_inputs``), or None without interpolation inputs. It
        depends on the item alone: the store keeps it per item and passes it to
        :meth:`forward` as ``source_interp``, so that only the partner view's is solved per
        training step, and none along the imputation ODE."""
        return None if self.interp is None else self.interp(x, observed)

    @torch.compiler.disable
    def interpolations(self, a: Tensor, b: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
        """interp(a), interp(b), when no ``source_interp`` is given (e.g. imputing new items).
        They depend on the views' observed entries only, which stay put along the imputation
        ODE (there a is b): the last batch's are kept and reused while its mask and observed
        values are the same (checked), instead of solved at every step. (Left out of
        ``torch.compile``: the check is data-dependent; the training step and the store's
        re-imputation pass ``source_interp`` and run the solvers compiled.)"""
        if b is not a:
            return self.interp(a, observed), self.interp(b, observed)
        mask = observed.bool()
        known = torch.where(mask, a, 0).detach()
        cached = self._interp_cache
        same = cached is not None and (cached[0].shape, cached[1].dtype, cached[0].device) == (
            mask.shape,
            known.dtype,
            mask.device,
        )
        if same and torch.equal(cached[0], mask) and torch.equal(cached[1], known):
            return cached[2], cached[2]
        smooth = self.interp(a, observed)
        object.__setattr__(self, "_interp_cache", None if torch.is_grad_enabled() else (mask.clone(), known, smooth))
        return smooth, smooth

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    def forward(self, a: Tensor, b: Tensor, observed: Tensor, t: Tensor, source_interp: Tensor | None = None) -> Tensor:
        """v(a, b, o, t); ``source_interp``: :meth:`interpolate_items` of the source's items
        (B, C, H, W), which equals the interpolation of ``a`` (its observed entries are the
        items'); given, it is not solved again (ignored without ``interp_inputs``)."""
        expected = (self.channels, self.image_size, self.image_size)
        if a.shape[1:] != expected:
            raise ValueError(f"the velocity field was built for images of shape {expected}, got {tuple(a.shape[1:])}")
        o = observed.to(a.dtype)
        inputs = [a, b, o]
        if self.interp is not None:
            if source_interp is None:
                smooth_a, smooth_b = self.interpolations(a, b, observed)
            else:
                smooth_a = source_interp.to(a.dtype)
                smooth_b = smooth_a if b is a else self.interp(b, observed)
            inputs += [smooth_a, smooth_b]
        h = torch.cat(inputs, dim=1) * 2 - 1
        v = self.unet(h, t.to(a.dtype) * TIME_SCALE).sample
        if self.interp_skip:
            v = v + (smooth_b - b)
        if self.fill_skip:
            v = v + keep_spread(t.to(a.dtype)).view(-1, *([1] * (b.dim() - 1))) * (b - smooth_b)
        return v * (1 - o)
