"""Explicit SIMD vectors for Numba kernels: a register-sized vector type and its intrinsics.

LLVM's auto-vectoriser works on one innermost loop and keeps its accumulators in memory,
so a convolution written as plain loops runs at a fraction of the FMA rate. A
register-blocked micro-kernel needs a dozen vector accumulators that live in registers
across a reduction loop: these intrinsics give Numba code such values (an LLVM
``<lanes x float>``), which LLVM then keeps in registers.

The vector width is a *type*: a kernel takes ``vec = token(nbytes)``, a tuple whose
length is the width in 16-byte units, so it compiles once per width and later calls
dispatch straight to the compiled code. Loads and stores are unaligned and *unchecked*
(the caller keeps indices in bounds) on 1-D C-contiguous arrays:

- ``lanes(a, vec)``, ``vzero(a, vec)``, ``vfill(a, value, vec)``: the lane count, zeros,
  a value in every lane;
- ``load(a, i)``: the scalar ``a[i]`` without the sign test of negative indices;
- ``vload`` / ``vstore``, ``vload_head`` / ``vstore_head`` (the first ``n`` lanes,
  masked), ``vbroadcast`` (``a[i]`` in every lane), ``vload_rows`` / ``vstore_rows``
  (``lanes`` vectors ``stride`` apart: a square tile) and ``vtranspose`` (that tile
  transposed in registers);
- ``vadd``, ``vsub``, ``vfma`` (one rounding, IEEE NaN and inf), ``vsum`` (a fixed
  pairwise tree), ``vdeinterleave`` (even and odd elements), ``vkeep_max`` (one step of a
  running maximum with a tag: larger or NaN wins), ``vstore_offsets_head`` (integer
  indices from per-lane float offsets);
- jitted helpers built on them: ``vcopy``, ``vadd_run`` and ``centred_sums`` (sums in an
  order fixed by the code, so a kernel compiled here and one loaded from Numba's cache
  give the same bits: see :mod:`fastcnn._config`).

A vector wider than the hardware's is legal LLVM (it is split into native ones), so the
kernels run on any x86-64 CPU; :data:`VECTOR_BYTES` is the native width here.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from fastcnn._config import jit

VECTOR_BYTES = 64 if llvm.get_host_cpu_features().get("avx512f", False) else 32


WIDTHS = (16, 32, 64, 128)  # the vector sizes in bytes that the intrinsics accept


def token(nbytes: int) -> tuple:
    """The width argument of the intrinsics for vectors of ``nbytes`` (16, 32, 64 or 128)."""
    if nbytes not in WIDTHS:
        raise ValueError(f"token: nbytes must be one of {WIDTHS}, got {nbytes!r}")
    return (0,) * (nbytes // 16)


class Vector(types.Type):
    """The Numba type of a SIMD vector of ``nbytes`` bytes of ``dtype`` (a Numba float)."""

    def __init__(self, dtype, nbytes):
        self.dtype = dtype
        self.lanes = nbytes // (dtype.bitwidth // 8)
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _check_1d(name, a):
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"):
        raise TypeError(f"{name}: needs a 1-D C-contiguous array, got {a}")


def _check_array(name, a):
    _check_1d(name, a)
    if not isinstance(a.dtype, types.Float):
        raise TypeError(f"{name}: needs a float array, got {a}")


def _vector(name, a, width) -> Vector:
    _check_array(name, a)
    if not (isinstance(width, types.UniTuple) and 16 * width.count in WIDTHS):
        raise TypeError(f"{name}: width must come from token(), got {width}")
    return Vector(a.dtype, 16 * width.count)


def _pointer(context, builder, array_type, array, index, index_type):
    data = context.make_array(array_type)(context, builder, array).data
    index = context.cast(builder, index, index_type, types.intp)
    return builder.gep(data, [index])


@intrinsic
def lanes(typingctx, a, width):
    count = _vector("lanes", a, width).lanes

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, count)

    return types.intp(a, width), codegen


@intrinsic
def vzero(typingctx, a, width):
    vec = _vector("vzero", a, width)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vec), None)  # zeroinitializer

    return vec(a, width), codegen


@intrinsic
def load(typingctx, a, i):
    _check_1d("load", a)
    if not isinstance(i, types.Integer):
        raise TypeError(f"load: needs an integer index, got {i}")

    def codegen(context, builder, sig, args):
        return builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1]))

    return a.dtype(a, i), codegen


@intrinsic
def vload(typingctx, a, i, width):
    vec = _vector("vload", a, width)

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vptr = builder.bitcast(ptr, context.get_value_type(vec).as_pointer())
        return builder.load(vptr, align=a.dtype.bitwidth // 8)

    return vec(a, i, width), codegen


@intrinsic
def vstore(typingctx, a, i, v):
    _check_array("vstore", a)
    if not (isinstance(v, Vector) and v.dtype == a.dtype):
        raise TypeError(f"vstore: needs a vector of {a.dtype}, got {v}")

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vptr = builder.bitcast(ptr, args[2].type.as_pointer())
        builder.store(args[2], vptr, align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(a, i, v), codegen


def _head_mask(builder, n, count):
    """LLVM IR: the ``<count x i1>`` mask of the lanes below ``n`` (an intp)."""
    index = ir.VectorType(ir.IntType(32), count)
    n32 = builder.trunc(n, ir.IntType(32))
    one = builder.insert_element(ir.Constant(index, ir.Undefined), n32, cgutils.int32_t(0))
    zeros = ir.Constant(index, [0] * count)
    splat = builder.shuffle_vector(one, ir.Constant(index, ir.Undefined), zeros)
    return builder.icmp_signed("<", ir.Constant(index, list(range(count))), splat)


def _masked_store(builder, value, vptr, mask, bitwidth, kind="f"):
    """LLVM IR: store the lanes of ``value`` that ``mask`` selects at ``vptr`` (``kind``
    ``"f"``: float lanes, ``"i"``: integer lanes)."""
    align = ir.Constant(ir.IntType(32), bitwidth // 8)
    fnty = ir.FunctionType(ir.VoidType(), [value.type, vptr.type, align.type, mask.type])
    name = f"llvm.masked.store.v{value.type.count}{kind}{bitwidth}.p0"
    store = cgutils.get_or_insert_function(builder.module, fnty, name)
    builder.call(store, [value, vptr, align, mask])


def _row_pointer(context, builder, sig, args, vtype, r):
    """LLVM IR: a ``vtype`` pointer to ``a[i + r*stride]`` for the intrinsics of rows,
    whose first three arguments are ``a, i, stride``."""
    start = context.cast(builder, args[1], sig.args[1], types.intp)
    step = context.cast(builder, args[2], sig.args[2], types.intp)
    index = builder.add(start, builder.mul(step, ir.Constant(step.type, r)))
    ptr = _pointer(context, builder, sig.args[0], args[0], index, types.intp)
    return builder.bitcast(ptr, vtype.as_pointer())


@intrinsic
def vload_head(typingctx, a, i, n, width):
    vec = _vector("vload_head", a, width)

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vtype = context.get_value_type(vec)
        vptr = builder.bitcast(ptr, vtype.as_pointer())
        n = context.cast(builder, args[2], sig.args[2], types.intp)
        mask = _head_mask(builder, n, vec.lanes)
        fnty = ir.FunctionType(vtype, [vptr.type, ir.IntType(32), mask.type, vtype])
        name = f"llvm.masked.load.v{vec.lanes}f{a.dtype.bitwidth}.p0"
        load = cgutils.get_or_insert_function(builder.module, fnty, name)
        align = ir.Constant(ir.IntType(32), a.dtype.bitwidth // 8)
        return builder.call(load, [vptr, align, mask, ir.Constant(vtype, None)])

    return vec(a, i, n, width), codegen


@intrinsic
def vstore_head(typingctx, a, i, v, n):
    _check_array("vstore_head", a)
    if not (isinstance(v, Vector) and v.dtype == a.dtype):
        raise TypeError(f"vstore_head: needs a vector of {a.dtype}, got {v}")

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vtype = args[2].type
        vptr = builder.bitcast(ptr, vtype.as_pointer())
        n = context.cast(builder, args[3], sig.args[3], types.intp)
        _masked_store(builder, args[2], vptr, _head_mask(builder, n, v.lanes), a.dtype.bitwidth)
        return context.get_dummy_value()

    return types.none(a, i, v, n), codegen


@intrinsic
def vstore_offsets_head(typingctx, a, i, v, n, base, step):
    _check_1d("vstore_offsets_head", a)
    if not (isinstance(a.dtype, types.Integer) and isinstance(v, Vector)):
        raise TypeError(f"vstore_offsets_head: needs an integer array and a vector, got {a}, {v}")

    def codegen(context, builder, sig, args):
        itype = context.get_value_type(a.dtype)
        vtype = ir.VectorType(itype, v.lanes)
        start, stride = (context.cast(builder, args[k], sig.args[k], a.dtype) for k in (4, 5))
        ramp = builder.mul(
            ir.Constant(vtype, list(range(v.lanes))), _splat_ir(builder, vtype, stride)
        )
        # Through int32: AVX2 has no float -> int64 vector conversion, and LLVM's direct
        # one took each lane out, converted it and put it back.
        offsets = builder.fptosi(args[2], ir.VectorType(ir.IntType(32), v.lanes))
        if itype.width != 32:
            offsets = (builder.sext if itype.width > 32 else builder.trunc)(offsets, vtype)
        value = builder.add(builder.add(_splat_ir(builder, vtype, start), ramp), offsets)
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vptr = builder.bitcast(ptr, vtype.as_pointer())
        count = context.cast(builder, args[3], sig.args[3], types.intp)
        mask = _head_mask(builder, count, v.lanes)
        _masked_store(builder, value, vptr, mask, a.dtype.bitwidth, "i")
        return context.get_dummy_value()

    return types.none(a, i, v, n, base, step), codegen


def _splat_ir(builder, vtype, scalar):
    """LLVM IR: ``scalar`` in every lane of the LLVM vector type ``vtype``."""
    one = builder.insert_element(ir.Constant(vtype, ir.Undefined), scalar, cgutils.int32_t(0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vtype.count), [0] * vtype.count)
    return builder.shuffle_vector(one, ir.Constant(vtype, ir.Undefined), mask)


def _splat(context, builder, vec, scalar):
    """LLVM IR: ``scalar`` in every lane of a ``vec`` (insert into lane 0, then shuffle)."""
    return _splat_ir(builder, context.get_value_type(vec), scalar)


@intrinsic
def vbroadcast(typingctx, a, i, width):
    vec = _vector("vbroadcast", a, width)

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return _splat(context, builder, vec, builder.load(ptr))

    return vec(a, i, width), codegen


@intrinsic
def vfill(typingctx, a, value, width):
    vec = _vector("vfill", a, width)
    if not isinstance(value, (types.Float, types.Integer)):
        raise TypeError(f"vfill: needs a number, got {value}")

    def codegen(context, builder, sig, args):
        return _splat(context, builder, vec, context.cast(builder, args[1], sig.args[1], a.dtype))

    return vec(a, value, width), codegen


def _lanewise(name, op):
    def typer(typingctx, u, v):
        if not (isinstance(u, Vector) and u == v):
            raise TypeError(f"{name}: needs two vectors of one type, got {u}, {v}")

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return u(u, v), codegen

    typer.__name__ = name
    return intrinsic(typer)


vadd = _lanewise("vadd", "fadd")
vsub = _lanewise("vsub", "fsub")


@intrinsic
def vfma(typingctx, a, b, c):
    if not (isinstance(a, Vector) and a == b == c):
        raise TypeError(f"vfma: needs three vectors of one type, got {a}, {b}, {c}")

    def codegen(context, builder, sig, args):
        vtype = args[0].type
        suffix = f"v{vtype.count}f{a.dtype.bitwidth}"
        fnty = ir.FunctionType(vtype, [vtype] * 3)
        fma = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.{suffix}")
        return builder.call(fma, args)

    return a(a, b, c), codegen


@intrinsic
def vdeinterleave(typingctx, u, v):
    if not (isinstance(u, Vector) and u == v):
        raise TypeError(f"vdeinterleave: needs two vectors of one type, got {u}, {v}")
    n = u.lanes

    def codegen(context, builder, sig, args):
        halves = []
        for first in (0, 1):
            mask = ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(first, 2 * n, 2)))
            halves.append(builder.shuffle_vector(args[0], args[1], mask))
        return context.make_tuple(builder, sig.return_type, halves)

    return types.UniTuple(u, 2)(u, v), codegen


@intrinsic
def vkeep_max(typingctx, m, cm, v, cv):
    if not (isinstance(m, Vector) and m == cm == v == cv):
        raise TypeError(f"vkeep_max: needs four vectors of one type, got {m}, {cm}, {v}, {cv}")

    def codegen(context, builder, sig, args):
        m_, cm_, v_, cv_ = args
        take = builder.or_(builder.fcmp_ordered(">", v_, m_), builder.fcmp_unordered("uno", v_, v_))
        picked = [builder.select(take, v_, m_), builder.select(take, cv_, cm_)]
        return context.make_tuple(builder, sig.return_type, picked)

    return types.UniTuple(m, 2)(m, cm, v, cv), codegen


@intrinsic
def vload_rows(typingctx, a, i, stride, width):
    vec = _vector("vload_rows", a, width)
    tile = types.UniTuple(vec, vec.lanes)

    def codegen(context, builder, sig, args):
        vtype = context.get_value_type(vec)
        align = a.dtype.bitwidth // 8
        rows = [
            builder.load(_row_pointer(context, builder, sig, args, vtype, r), align=align)
            for r in range(vec.lanes)
        ]
        return context.make_tuple(builder, tile, rows)

    return tile(a, i, stride, width), codegen


@intrinsic
def vstore_rows(typingctx, a, i, stride, rows, n):
    _check_array("vstore_rows", a)
    if not (
        isinstance(rows, types.UniTuple)
        and isinstance(rows.dtype, Vector)
        and rows.dtype.dtype == a.dtype
    ):
        raise TypeError(f"vstore_rows: needs a tuple of vectors of {a.dtype}, got {rows}")
    vec = rows.dtype

    def codegen(context, builder, sig, args):
        vtype = context.get_value_type(vec)
        count = context.cast(builder, args[4], sig.args[4], types.intp)
        values = cgutils.unpack_tuple(builder, args[3], rows.count)
        whole = builder.icmp_signed(">=", count, ir.Constant(count.type, vec.lanes))
        with builder.if_else(whole) as (then, otherwise):
            with then:
                for r, value in enumerate(values):
                    vptr = _row_pointer(context, builder, sig, args, vtype, r)
                    builder.store(value, vptr, align=a.dtype.bitwidth // 8)
            with otherwise:
                mask = _head_mask(builder, count, vec.lanes)
                for r, value in enumerate(values):
                    vptr = _row_pointer(context, builder, sig, args, vtype, r)
                    _masked_store(builder, value, vptr, mask, a.dtype.bitwidth)
        return context.get_dummy_value()

    return types.none(a, i, stride, rows, n), codegen


@intrinsic
def vtranspose(typingctx, rows):
    if not (
        isinstance(rows, types.UniTuple)
        and isinstance(rows.dtype, Vector)
        and rows.count == rows.dtype.lanes
    ):
        raise TypeError(f"vtranspose: needs a tuple of as many vectors as lanes, got {rows}")
    n = rows.count

    def codegen(context, builder, sig, args):
        r = cgutils.unpack_tuple(builder, args[0], n)
        half = n // 2
        while half:  # swap the off-diagonal blocks of 2*half rows, half lanes wide
            new = list(r)
            for i in range(n):
                if i & half:
                    continue
                low = [j if not j & half else n + j - half for j in range(n)]
                high = [j + half if not j & half else n + j for j in range(n)]
                for dst, mask in ((i, low), (i + half, high)):
                    const = ir.Constant(ir.VectorType(ir.IntType(32), n), mask)
                    new[dst] = builder.shuffle_vector(r[i], r[i + half], const)
            r = new
            half //= 2
        return context.make_tuple(builder, sig.return_type, r)

    return rows(rows), codegen


@intrinsic
def vsum(typingctx, v):
    if not isinstance(v, Vector):
        raise TypeError(f"vsum: needs a vector, got {v}")

    def codegen(context, builder, sig, args):
        acc, count = args[0], v.lanes
        while count > 1:
            count //= 2
            low = ir.Constant(ir.VectorType(ir.IntType(32), count), list(range(count)))
            high = ir.Constant(ir.VectorType(ir.IntType(32), count), list(range(count, 2 * count)))
            acc = builder.fadd(
                builder.shuffle_vector(acc, acc, low), builder.shuffle_vector(acc, acc, high)
            )
        return builder.extract_element(acc, cgutils.int32_t(0))

    return v.dtype(v), codegen


@jit(inline=True)
def vcopy(src, s, dst, d, n, width):
    """``dst[d : d + n] = src[s : s + n]`` for 1-D C-contiguous arrays of one float dtype:
    whole vectors (the last one overlapping the one before it) where ``n >= lanes``, one
    masked vector below (a slice assignment inside a kernel costs a call per row).
    Unchecked like :func:`vload`; the runs must not overlap."""
    lane = lanes(src, width)
    if n < lane:
        vstore_head(dst, d, vload_head(src, s, n, width), n)
        return
    last = n - lane
    i = 0
    while i < last:
        vstore(dst, d + i, vload(src, s + i, width))
        i += lane
    vstore(dst, d + last, vload(src, s + last, width))


# AVX2's masked stores (vmaskmovps, vpmaskmovq) are microcoded, and slow, on some CPUs;
# AVX-512's are single instructions. Without AVX-512, kernels store the last elements of a
# run one at a time or narrow their vectors (benchmarks/RESULTS.md has the CPUs).
SLOW_MASKED_STORES = VECTOR_BYTES < 64


@jit(inline=True)
def vadd_run(src, s, dst, d, n, width, scalar_tail=SLOW_MASKED_STORES):
    """``dst[d : d + n] += src[s : s + n]`` for 1-D C-contiguous arrays of one float dtype:
    whole vectors, then the last ``n % lanes`` elements in one masked vector, or one by one
    if ``scalar_tail`` (:data:`SLOW_MASKED_STORES`). Unchecked like :func:`vload`; the
    runs must not overlap."""
    lane = lanes(src, width)
    whole = n - n % lane
    for i in range(0, whole, lane):
        vstore(dst, d + i, vadd(vload(dst, d + i, width), vload(src, s + i, width)))
    if scalar_tail:
        for i in range(whole, n):
            dst[d + i] += src[s + i]
    elif whole < n:
        rest = n - whole
        u, v = vload_head(dst, d + whole, rest, width), vload_head(src, s + whole, rest, width)
        vstore_head(dst, d + whole, vadd(u, v), rest)


@jit(inline=True)
def centred_sums(a, ma, b, mb, s, n, width):
    """``(sum(a[q] - ma), sum((a[q] - ma) * (b[q] - mb)))`` over ``q`` in ``[s, s + n)``.

    ``a``, ``b``: 1-D C-contiguous arrays of one float dtype, unchecked like :func:`vload`;
    ``b = None`` stands for ``a`` and ``ma`` (the second sum is then ``sum((a - ma)**2)``,
    for one load and one subtraction per element). ``ma``, ``mb``: numbers, cast to the
    dtype; both sums are in the dtype. The order is fixed: four vector accumulators take
    turns over blocks of four vectors, whole vectors left over go to the first, the four
    are added as ``(0 + 1) + (2 + 3)`` and then their lanes by :func:`vsum`, and the
    elements past the last whole vector are added in order.
    """
    lane = lanes(a, width)
    va, vb = vfill(a, ma, width), vfill(a, mb, width)
    s0 = s1 = s2 = s3 = vzero(a, width)
    p0 = p1 = p2 = p3 = vzero(a, width)
    q, end = s, s + n
    while q + 4 * lane <= end:
        d0, d1 = vsub(vload(a, q, width), va), vsub(vload(a, q + lane, width), va)
        d2, d3 = vsub(vload(a, q + 2 * lane, width), va), vsub(vload(a, q + 3 * lane, width), va)
        if b is None:
            e0, e1, e2, e3 = d0, d1, d2, d3
        else:
            e0, e1 = vsub(vload(b, q, width), vb), vsub(vload(b, q + lane, width), vb)
            e2 = vsub(vload(b, q + 2 * lane, width), vb)
            e3 = vsub(vload(b, q + 3 * lane, width), vb)
        s0, s1, s2, s3 = vadd(s0, d0), vadd(s1, d1), vadd(s2, d2), vadd(s3, d3)
        p0, p1 = vfma(d0, e0, p0), vfma(d1, e1, p1)
        p2, p3 = vfma(d2, e2, p2), vfma(d3, e3, p3)
        q += 4 * lane
    while q + lane <= end:
        d0 = vsub(vload(a, q, width), va)
        e0 = d0 if b is None else vsub(vload(b, q, width), vb)
        s0, p0 = vadd(s0, d0), vfma(d0, e0, p0)
        q += lane
    total = vsum(vadd(vadd(s0, s1), vadd(s2, s3)))
    product = vsum(vadd(vadd(p0, p1), vadd(p2, p3)))
    ma_, mb_ = a.dtype.type(ma), a.dtype.type(mb)
    while q < end:
        d = a[q] - ma_
        total += d
        product += d * (d if b is None else b[q] - mb_)
        q += 1
    return total, product
