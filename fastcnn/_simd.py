"""Explicit SIMD vectors for Numba kernels: a register-sized vector type and five intrinsics.

LLVM's auto-vectoriser works on one innermost loop and keeps its accumulators in memory,
so a convolution written as plain loops runs at a fraction of the FMA rate. A
register-blocked micro-kernel needs a dozen vector accumulators that live in registers
across a reduction loop; these intrinsics give Numba code such values (an LLVM
``<lanes x float>``), which LLVM's mem2reg then keeps in registers.

- :func:`lanes` ``(a)``: how many elements of ``a``'s dtype one vector holds (a compile-time
  constant: 64 bytes where the CPU has AVX-512, else 32);
- :func:`vzero` ``(a)``: a vector of zeros of ``a``'s dtype;
- :func:`vload` ``(a, i)`` / :func:`vstore` ``(a, i, v)``: ``a[i : i + lanes]`` of a 1-D
  C-contiguous array, unaligned, *unchecked* (the caller keeps ``i + lanes <= a.size``);
- :func:`vbroadcast` ``(a, i)``: ``a[i]`` in every lane (unchecked);
- :func:`vfma` ``(a, b, c)``: ``a * b + c`` lane by lane, one rounding (IEEE ``fma``: NaN and
  inf as in ``a * b + c``).

A vector wider than the hardware's is legal LLVM: it is split into native vectors, so the
kernels stay correct on any CPU; :data:`VECTOR_BYTES` only picks the width that fits.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

VECTOR_BYTES = 64 if llvm.get_host_cpu_features().get("avx512f", False) else 32


class Vector(types.Type):
    """The Numba type of a SIMD vector of ``lanes`` elements of ``dtype`` (a Numba float)."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = VECTOR_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _check_array(name, a):
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"):
        raise TypeError(f"{name}: needs a 1-D C-contiguous array, got {a}")
    if not isinstance(a.dtype, types.Float):
        raise TypeError(f"{name}: needs a float array, got {a}")


def _pointer(context, builder, array_type, array, index, index_type):
    data = context.make_array(array_type)(context, builder, array).data
    index = context.cast(builder, index, index_type, types.intp)
    return builder.gep(data, [index])


@intrinsic
def lanes(typingctx, a):
    _check_array("lanes", a)
    count = Vector(a.dtype).lanes

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, count)

    return types.intp(a), codegen


@intrinsic
def vzero(typingctx, a):
    _check_array("vzero", a)
    vec = Vector(a.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vec), None)  # zeroinitializer

    return vec(a), codegen


@intrinsic
def vload(typingctx, a, i):
    _check_array("vload", a)
    vec = Vector(a.dtype)

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vptr = builder.bitcast(ptr, context.get_value_type(vec).as_pointer())
        return builder.load(vptr, align=a.dtype.bitwidth // 8)

    return vec(a, i), codegen


@intrinsic
def vstore(typingctx, a, i, v):
    _check_array("vstore", a)
    if v != Vector(a.dtype):
        raise TypeError(f"vstore: needs a {Vector(a.dtype)}, got {v}")

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vptr = builder.bitcast(ptr, args[2].type.as_pointer())
        builder.store(args[2], vptr, align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(a, i, v), codegen


@intrinsic
def vbroadcast(typingctx, a, i):
    _check_array("vbroadcast", a)
    vec = Vector(a.dtype)

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        scalar = builder.load(ptr)
        vtype = context.get_value_type(vec)
        one = builder.insert_element(ir.Constant(vtype, ir.Undefined), scalar, cgutils.int32_t(0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vec.lanes), [0] * vec.lanes)
        return builder.shuffle_vector(one, ir.Constant(vtype, ir.Undefined), mask)

    return vec(a, i), codegen


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
