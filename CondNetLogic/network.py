"""CondNet: a multi-input, multi-output 2D encoder/decoder with deep supervision (paper Sec. III-B).

U encoder tracks (one per anatomical image, default T1 and T2) feed V decoder tracks (one per
conductivity table, default one: Table I A).  Each decoder level predicts a map (logits), the finest
at the full slice size; the coarser maps are deep-supervision outputs.

Reading of Table II and Fig. 3
------------------------------
Table II's sizes are not consistent with each other, so this implementation fixes one reading and
states it here (``N`` = slice size, 256 in the paper; level ``i`` works at ``N / 2**(i-1)``):

* **Encoder** ``EncMod_{u,i}``, ``i = 1 .. I``: ``R x R`` convolution to ``2**(i+1)`` channels
  (4, 8, ..., 128 for ``I = 6``), BN, ReLU.  Its output is the skip feature of level ``i``; a 2x2 max
  pool feeds level ``i + 1``.  Table II lists the convolution output at ``2**(8-i)`` pixels, i.e. the
  pooled size, which would make the first convolution run at 128 although the input is 256; we take
  the convolution at ``N / 2**(i-1)`` and the pool after it.  The deepest level is not pooled: its
  output is the hub input (Table II's hub is ``[2**(9-I)]**2`` = 8 x 8 for ``I = 6``, the unpooled
  size of level 6).
* **Hub**: concatenation of the deepest features of all U encoder tracks, ``U * 2**(I+1)`` channels
  (Table II writes ``U x 2**I``; we keep each track's own width).
* **Decoder** track ``v``, level ``i = I-1 .. 1``:
  ``DecMod``: 2x2 stride-2 transposed convolution to ``2**(i+1)`` channels at ``N / 2**(i-1)`` (this
  matches Table II exactly), BN, ReLU;
  ``Concat``: the upsampled features, the level-``i`` skip features of every encoder track, and the
  coarser level's map (sigmoid, bilinearly upsampled x2; absent at ``i = I-1`` where no coarser map
  exists).  Table II's ``(U+1) x 2**(i+2)`` counts one block per track plus one, which we read as
  U skips + the decoder features; the map channel is the "feedback" of Fig. 3;
  ``CnvMod``: ``S x S`` convolution to ``2**(i+2)`` channels (Table II), BN, ReLU;
  ``Map``: ``T x T`` convolution to one channel -> logits.  Table II lists ``2**i`` map channels,
  but its finest output is a single ``[2**8]**2`` image; one channel per level and track is the only
  reading that gives one conductivity map per table.
* All convolutions use "same" zero padding, so the slice size must be divisible by ``2**(I-1)``
  (checked in :meth:`CondNet.forward`; 256 and any multiple of 32 work for ``I = 6``).  Training needs at
  least ``2**I`` (the deepest level at 2 x 2: batch statistics of a single 1 x 1 value are undefined), and
  so does instance normalisation at any time.

``forward`` returns logits; the sigmoid is applied by the loss (``BCEWithLogitsLoss``) and by
inference.

References
----------
Rashed, Gomez-Tames, Hirata, IEEE TMI 39(7):2351-2362, 2020, doi:10.1109/TMI.2020.2969682, Table II, Fig. 3.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

__all__ = ["CondNet", "CondNetConfig"]

_NORMS = ("batch", "instance")


def _per_level(value, count: int, name: str) -> Tuple[int, ...]:
    """Expand an int (or a per-level sequence) to a tuple of ``count`` ints, checking each."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a sequence of ints, got bool")
    if isinstance(value, int):
        value = (value,) * count
    try:
        value = tuple(int(v) for v in value)
    except TypeError as err:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {type(value).__name__}") from err
    if len(value) != count:
        raise ValueError(f"{name} needs {count} values (one per level), got {len(value)}")
    return value


@dataclass(frozen=True)
class CondNetConfig:
    """Architecture of :class:`CondNet` (paper Table II).

    Parameters
    ----------
    in_channels : int
        U, number of input images (encoder tracks); 2 = (T1, T2), 1 = T1 only.
    out_channels : int
        V, number of conductivity maps (decoder tracks); 2 gives Table I A and B at once.
    depth : int
        I, number of encoder levels (>= 2); the decoder has ``I - 1`` levels.
    encoder_kernel, decoder_kernel, map_kernel : int or tuple of int
        R, S and T of Table II: odd kernel sizes, one value or one per level (encoder: ``I`` values,
        decoder and map: ``I - 1`` values for levels ``1 .. I-1``).
    encoder_features, decoder_features : tuple of int, optional
        Channels per level; default ``2**(i+1)`` (encoder, ``i = 1..I``) and ``2**(i+2)``
        (decoder convolution, ``i = 1..I-1``) as in Table II.
    norm : {"batch", "instance"}
        Normalisation after each convolution; the paper uses batch normalisation.

    Raises
    ------
    ValueError
        For counts below 1, a depth below 2, even or non-positive kernels, or wrong tuple lengths.
    """

    in_channels: int = 2
    out_channels: int = 1
    depth: int = 6
    encoder_kernel: Union[int, Tuple[int, ...]] = 3
    decoder_kernel: Union[int, Tuple[int, ...]] = 5
    map_kernel: Union[int, Tuple[int, ...]] = 5
    encoder_features: Optional[Tuple[int, ...]] = None
    decoder_features: Optional[Tuple[int, ...]] = None
    norm: str = "batch"

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.depth < 2:
            raise ValueError(f"depth must be >= 2 (one encoder and one decoder level), got {self.depth}")
        depth = self.depth
        for name, count in (("encoder_kernel", depth), ("decoder_kernel", depth - 1), ("map_kernel", depth - 1)):
            kernels = _per_level(getattr(self, name), count, name)
            bad = [k for k in kernels if k < 1 or k % 2 == 0]
            if bad:
                raise ValueError(f"{name} must hold odd positive sizes ('same' padding); got {kernels}")
            object.__setattr__(self, name, kernels)
        enc = self.encoder_features or tuple(2 ** (i + 1) for i in range(1, depth + 1))
        dec = self.decoder_features or tuple(2 ** (i + 2) for i in range(1, depth))
        enc = _per_level(enc, depth, "encoder_features")
        dec = _per_level(dec, depth - 1, "decoder_features")
        if min(enc + dec) < 1:
            raise ValueError(f"feature counts must be >= 1; got encoder {enc}, decoder {dec}")
        object.__setattr__(self, "encoder_features", enc)
        object.__setattr__(self, "decoder_features", dec)
        if self.norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {self.norm!r}")

    @property
    def size_multiple(self) -> int:
        """Slice sizes must be divisible by this (``2**(I-1)``)."""
        return 2 ** (self.depth - 1)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> CondNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CondNetConfig keys {unknown}; expected a subset of {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.InstanceNorm2d(channels, affine=True)


class _ConvBlock(nn.Sequential):
    """Convolution (``same`` padding, no bias: the norm has one) -> norm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)
        self.norm = _norm(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)


class _Encoder(nn.Module):
    """One encoder track: ``level_1 .. level_I`` conv blocks with 2x2 max pooling between them."""

    def __init__(self, config: CondNetConfig) -> None:
        super().__init__()
        in_ch = 1
        for level, (kernel, out_ch) in enumerate(zip(config.encoder_kernel, config.encoder_features), start=1):
            self.add_module(f"level_{level}", _ConvBlock(in_ch, out_ch, kernel, config.norm))
            in_ch = out_ch
        self.depth = config.depth

    def forward(self, x: torch.Tensor) -> list:
        """(B, 1, H, W) -> skip features of levels 1..I, level i of size (B, C_i, H/2**(i-1), W/2**(i-1))."""
        features = []
        for level in range(1, self.depth + 1):
            if level > 1:
                x = F.max_pool2d(x, 2)
            x = getattr(self, f"level_{level}")(x)
            features.append(x)
        return features


class _DecoderLevel(nn.Module):
    """DecMod (deconv -> norm -> ReLU), Concat, CnvMod (conv -> norm -> ReLU) and Map (conv -> logits)."""

    def __init__(self, in_ch: int, skip_ch: int, up_ch: int, conv_ch: int, conv_kernel: int, map_kernel: int,
                 has_coarser_map: bool, norm: str) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_ch, up_ch, 2, stride=2, bias=False)
        self.deconv_norm = _norm(norm, up_ch)
        concat_ch = up_ch + skip_ch + (1 if has_coarser_map else 0)
        self.conv = _ConvBlock(concat_ch, conv_ch, conv_kernel, norm)
        self.map = nn.Conv2d(conv_ch, 1, map_kernel, padding=map_kernel // 2)
        self.has_coarser_map = has_coarser_map

    def forward(self, x: torch.Tensor, skips: list, coarser_logits: Optional[torch.Tensor]):
        up = F.relu(self.deconv_norm(self.deconv(x)), inplace=True)
        parts = [up, *skips]
        if self.has_coarser_map:
            parts.append(F.interpolate(torch.sigmoid(coarser_logits), scale_factor=2, mode="bilinear",
                                       align_corners=False))
        features = self.conv(torch.cat(parts, dim=1))
        return features, self.map(features)


class _Decoder(nn.Module):
    """One decoder track: levels ``I-1 .. 1`` (named ``level_<i>``)."""

    def __init__(self, config: CondNetConfig) -> None:
        super().__init__()
        depth, enc, dec = config.depth, config.encoder_features, config.decoder_features
        in_ch = config.in_channels * enc[-1]
        for level in range(depth - 1, 0, -1):
            self.add_module(
                f"level_{level}",
                _DecoderLevel(
                    in_ch=in_ch,
                    skip_ch=config.in_channels * enc[level - 1],
                    up_ch=enc[level - 1],
                    conv_ch=dec[level - 1],
                    conv_kernel=config.decoder_kernel[level - 1],
                    map_kernel=config.map_kernel[level - 1],
                    has_coarser_map=level < depth - 1,
                    norm=config.norm,
                ),
            )
            in_ch = dec[level - 1]
        self.depth = depth

    def forward(self, hub: torch.Tensor, skips_per_level: list) -> list:
        """Return the logits of levels ``1 .. I-1`` (finest first)."""
        x, logits, maps = hub, None, []
        for level in range(self.depth - 1, 0, -1):
            x, logits = getattr(self, f"level_{level}")(x, skips_per_level[level - 1], logits)
            maps.append(logits)
        return maps[::-1]


class CondNet(nn.Module):
    """CondNet of Rashed et al. 2020: U encoder tracks, a hub, V decoder tracks with deep supervision.

    Submodules are ``encoder_<u>.level_<i>`` (u = 1..U, i = 1..I) and ``decoder_<v>.level_<i>``
    (v = 1..V, i = I-1..1), so ``state_dict`` keys read like ``decoder_1.level_1.map.weight``.

    Parameters
    ----------
    config : CondNetConfig, optional
        Architecture; the paper's (U=2, V=1, I=6, R=3, S=T=5) by default.
    """

    def __init__(self, config: Optional[CondNetConfig] = None) -> None:
        super().__init__()
        if config is None:
            config = CondNetConfig()
        if not isinstance(config, CondNetConfig):
            raise TypeError(f"config must be a CondNetConfig, got {type(config).__name__}")
        self.config = config
        for u in range(1, config.in_channels + 1):
            self.add_module(f"encoder_{u}", _Encoder(config))
        for v in range(1, config.out_channels + 1):
            self.add_module(f"decoder_{v}", _Decoder(config))

    def forward(self, x: torch.Tensor, *, deep_supervision: bool = False):
        """Map input slices to conductivity logits.

        Parameters
        ----------
        x : Tensor (B, U, H, W)
            Normalised anatomical slices in [0, 1]; H and W divisible by ``2**(I-1)``.
        deep_supervision : bool
            Also return the coarser maps.

        Returns
        -------
        Tensor (B, V, H, W)
            Logits of the normalised conductivity (``sigmoid`` gives the level in [0, 1]) when
            ``deep_supervision`` is false; otherwise a list of ``I - 1`` tensors, element ``i-1``
            of shape ``(B, V, H / 2**(i-1), W / 2**(i-1))`` (finest first).

        Raises
        ------
        ValueError
            If ``x`` is not 4D, has the wrong channel count, or a size not divisible by ``2**(I-1)``.
        """
        config = self.config
        if x.ndim != 4 or x.shape[1] != config.in_channels:
            raise ValueError(f"expected input (B, {config.in_channels}, H, W); got {tuple(x.shape)}")
        multiple = config.size_multiple
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(
                f"slice size {tuple(x.shape[2:])} must be divisible by 2**(depth-1) = {multiple}"
            )
        if config.norm == "instance" and min(x.shape[2:]) < 2 * multiple:
            raise ValueError(f"slice size {tuple(x.shape[2:])}: instance normalisation needs at least 2**depth = "
                             f"{2 * multiple} pixels per side (the deepest level at 2 x 2)")
        tracks = [getattr(self, f"encoder_{u}")(x[:, u - 1:u]) for u in range(1, config.in_channels + 1)]
        hub = torch.cat([track[-1] for track in tracks], dim=1)
        skips_per_level = [[track[level] for track in tracks] for level in range(config.depth - 1)]
        per_track = [getattr(self, f"decoder_{v}")(hub, skips_per_level) for v in range(1, config.out_channels + 1)]
        maps = [torch.cat([track[level] for track in per_track], dim=1) for level in range(config.depth - 1)]
        return maps if deep_supervision else maps[0]
