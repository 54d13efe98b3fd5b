"""Which convolution kernel runs: one pure function of the problem, its rules in one table.

:func:`choose` looks at the op, the geometry and nothing else (no data: results must not
depend on the kernel beyond round-off, and the choice must be printable before any data
exists) and walks :data:`RULES` in order; the first rule whose test holds names the
kernel. ``fastcnn info --plan SHAPE`` and ``fastcnn bench`` print the answer, and the
tests assert it for named shapes.

The kernels (:mod:`fastcnn._kernels.conv` runs them):

- ``few_taps`` (:mod:`fastcnn._kernels.conv_few_taps`): SIMD along the output pixels of an
  image's column matrix; for a first layer's handful of taps per pixel, where a direct
  block's reduction would be too short to pay for its setup. Forward and weight gradient
  at stride 1; input gradient at any stride.
- ``direct`` (:mod:`fastcnn._kernels.conv_direct`): register blocks of 6 pixels x 2 vectors
  of channels; any geometry and channel count (channels padded to whole blocks; the input
  gradient of channels that fit one vector takes blocks of 6 pixels x 2 taps instead).
"""

from __future__ import annotations

from typing import NamedTuple

OPS = ("forward", "grad_input", "grad_weight")
KERNELS = ("few_taps", "direct")

# Up to this many taps (C*KH*KW) per output pixel, a convolution counts as having few taps.
FEW_TAPS = 16


def few_taps(g) -> bool:
    """C*KH*KW <= 16"""
    return g.c * g.kh * g.kw <= FEW_TAPS


def few_taps_stride_one(g) -> bool:
    """C*KH*KW <= 16, stride 1"""
    return few_taps(g) and g.sh == g.sw == 1


def always(g) -> bool:
    """any geometry"""
    return True


class Rule(NamedTuple):
    """Run ``kernel`` for ``op`` where ``test(geometry)`` holds."""

    op: str
    kernel: str
    test: object

    @property
    def when(self) -> str:
        """The rule's test in words (its docstring)."""
        return self.test.__doc__


RULES = (
    #     op             kernel      test: the first rule whose test holds wins
    Rule("forward",     "few_taps", few_taps_stride_one),
    Rule("forward",     "direct",   always),
    Rule("grad_input",  "few_taps", few_taps),
    Rule("grad_input",  "direct",   always),
    Rule("grad_weight", "few_taps", few_taps_stride_one),
    Rule("grad_weight", "direct",   always),
)  # fmt: skip


def choose(op: str, g) -> Rule:
    """The first rule of :data:`RULES` for ``op`` (one of :data:`OPS`) whose test holds for
    the geometry ``g`` (a :class:`fastcnn._checks.ConvGeometry`)."""
    for rule in RULES:
        if rule.op == op and rule.test(g):
            return rule
    raise ValueError(f"plan: no rule for op {op!r}")


def supports(op: str, kernel: str, g) -> bool:
    """Whether ``kernel`` can run ``op`` on geometry ``g`` (for tests that run every kernel
    that can, whichever the plan picks): ``direct`` runs everything, ``few_taps`` what its
    rule asks of the stride."""
    if kernel == "direct":
        return True
    if kernel == "few_taps":
        return op == "grad_input" or g.sh == g.sw == 1
    raise ValueError(f"plan: unknown kernel {kernel!r}; expected one of {KERNELS}")
