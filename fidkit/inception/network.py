"""The FID Inception-v3 as a torch module, used only to export the ONNX graph and to check it.

This is the network of the TensorFlow graph ``inception-2015-12-05`` (``pool_3:0``), which differs
from torchvision's Inception-v3 in ways that change the features:

* BatchNorm uses ``eps = 1e-3`` (torch's default is 1e-5);
* the average pools in the pool branches of Mixed_5b..5d, 6b..6e and 7b do not count the zero
  padding in their denominator (``count_include_pad=False``);
* the pool branch of Mixed_7c is a 3x3 stride-1 *max* pool;
* the output is ``pool_3``, the global 8x8 average of Mixed_7c, 2048 values per image.

Besides ``pool_3``, one forward pass gives what the other metrics need (:meth:`FIDInceptionV3.outputs`, only what
is asked for is computed): the classifier's 1008 logits *without its bias* (``pool_3 @ fc.weight.T``, the TF
graph's ``softmax/logits/MatMul``, the Inception Score's input), the spatial features of sFID (the first 7 channels
of TF's ``mixed_6/conv``, the ReLU output of ``Mixed_6d.branch1x1``: 17 x 17 x 7 = 2023 values in TF's NHWC order),
and the spatial means of the earlier blocks pytorch-fid offers as ``--dims`` 64, 192 and 768 (after the first and
second max pools and after ``Mixed_6e``).

Parameter names follow ``inception-2015-12-05-state-dict-layout.json`` exactly, so the ported state
dict loads with ``strict=True``. The classifier ``fc`` (1008 classes) gives the logits; it takes no part in the
features.

The module takes images already resized to 299x299 and normalized to ``(x - 128) / 128``, in NCHW.
Resizing and normalization live in the ONNX graph (:mod:`fidkit.inception.export`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from fidkit.inception.spec import FEATURE_DIM, INPUT_SIZE, N_CLASSES, OUTPUT_DIMS, SPATIAL_CHANNELS

__all__ = ["FIDInceptionV3", "BN_EPS", "INPUT_SIZE", "FEATURE_DIM", "OUTPUT_DIMS", "SPATIAL_CHANNELS"]

#: BatchNorm epsilon of the TensorFlow graph.
BN_EPS = 1e-3


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3), ReLU: the unit every layer is made of."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # TF's AvgPool with SAME padding divides by the number of real pixels under the window.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b, 5c, 5d: 1x1, 5x5, double 3x3 and average-pool branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b5, b3, bp], dim=1)


class InceptionB(nn.Module):
    """Mixed_6a: the 35x35 -> 17x17 reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], dim=1)


class InceptionC(nn.Module):
    """Mixed_6b..6e: factorized 7x7 branches (1x7 and 7x1) and an average-pool branch."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b7, bd, bp], dim=1)


class InceptionD(nn.Module):
    """Mixed_7a: the 17x17 -> 8x8 reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], dim=1)


class InceptionE(nn.Module):
    """Mixed_7b (average-pool branch) and Mixed_7c (max-pool branch): expanded 3x3 branches."""

    def __init__(self, in_channels: int, *, max_pool_branch: bool) -> None:
        super().__init__()
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], dim=1)
        if self.max_pool_branch:
            # The 2015 graph's last block pools with MAX, not average (a quirk of the release).
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_3x3(x)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], dim=1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 of the 2015 TensorFlow graph, up to ``pool_3``.

    Input: float32 ``(B, 3, 299, 299)`` already normalized (by the convention's preprocessing).
    Output: float32 ``(B, 2048)``, the pool_3 features; :meth:`outputs` gives the others of :data:`OUTPUT_DIMS`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool_branch=False)
        self.Mixed_7c = InceptionE(2048, max_pool_branch=True)
        # The classifier: its weight gives the logits (the Inception Score's input); its bias is never used.
        self.fc = nn.Linear(FEATURE_DIM, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The pool_3 features, ``(B, 2048)``."""
        return self.outputs(x, ("pool_3",))["pool_3"]

    def outputs(self, x: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The outputs `names` (keys of :data:`OUTPUT_DIMS`) of one forward pass, each ``(B, width)``.

        Only what is asked for is computed: the pass stops after the last block a wanted output needs.
        """
        wanted = set(names)
        unknown = wanted - OUTPUT_DIMS.keys()
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)}; the network gives {', '.join(OUTPUT_DIMS)}")
        out: dict[str, torch.Tensor] = {}

        def keep(name: str, value: torch.Tensor) -> bool:
            """Store `value` under `name` if wanted; True when nothing further is wanted (stop the pass)."""
            if name in wanted:
                out[name] = value
            return out.keys() == wanted

        x = self.Conv2d_1a_3x3(x)  # 149x149
        x = self.Conv2d_2a_3x3(x)  # 147x147
        x = self.Conv2d_2b_3x3(x)  # 147x147
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 73x73, TF's pool:0
        if keep("dims_64", _axis_by_axis_mean(x)):
            return out
        x = self.Conv2d_3b_1x1(x)
        x = self.Conv2d_4a_3x3(x)  # 71x71
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 35x35, TF's pool_1:0
        if keep("dims_192", _axis_by_axis_mean(x)):
            return out
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6a(x)  # 17x17
        x = self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x)))
        # The block's first channels are its branch1x1's (the concatenation starts with it): TF's mixed_6/conv,
        # flattened in TF's NHWC order as the ADM evaluator does.
        if keep("spatial", torch.flatten(x[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1), 1)):
            return out
        x = self.Mixed_6e(x)  # TF's mixed_7
        if keep("dims_768", _axis_by_axis_mean(x)):
            return out
        x = self.Mixed_7a(x)  # 8x8
        x = self.Mixed_7c(self.Mixed_7b(x))
        # pool_3: the mean over the whole 8x8 map, i.e. TF's 8x8 VALID average pool.
        pool_3 = _spatial_mean(x)
        if keep("pool_3", pool_3):
            return out
        keep("logits", F.linear(pool_3, self.fc.weight))  # no bias, as TF's softmax/logits/MatMul
        return out


def _spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C)``: the mean over the map (exported as ONNX GlobalAveragePool)."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _axis_by_axis_mean(x: torch.Tensor) -> torch.Tensor:
    """The same mean, over the width and then the height: onnxruntime's GlobalAveragePool sums a whole 73 x 73
    map in one float32 running sum (5.6e-6 of the feature scale off a float64 evaluation for --dims 64), while two
    short sums stay within 2.1e-7, as torch's own pool does. pool_3 keeps GlobalAveragePool: its 8 x 8 sum is
    accurate, and its graph stays the one whose features were checked bit for bit."""
    return x.mean(dim=3).mean(dim=2)


def build_network(state_dict: dict[str, torch.Tensor] | None = None) -> FIDInceptionV3:
    """Return the network in eval mode, with `state_dict` loaded strictly if given.

    A state dict without ``num_batches_tracked`` entries (the released file predates them) is
    completed with zeros; they play no part in eval mode.

    The parameters are float32 whatever ``torch.get_default_dtype()`` is: the network's input is float32 (the
    resize's output), and a caller's ``torch.set_default_dtype(torch.float64)`` would otherwise make them float64
    and every forward pass a dtype error.
    """
    model = FIDInceptionV3().to(torch.float32)
    if state_dict is not None:
        full = dict(state_dict)
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked") and name not in full:
                full[name] = torch.zeros_like(tensor)
        model.load_state_dict(full, strict=True)
    return model.eval()
