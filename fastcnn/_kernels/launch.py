"""Run a serial kernel on parts of its work at once, on Numba's thread pool.

Every fastcnn kernel is a serial function ``kernel(part, start, stop, *args)`` over a
range of its work (images, planes, channels, elements); ``part`` picks its rows of
scratch. :func:`launch` calls it for ``parts`` contiguous parts of ``range(n)`` through
the threading layer's ``numba_parallel_for`` (the entry point Numba's own parallel loops
use), with a trampoline of a few LLVM instructions that reads a part's index and calls
the kernel's compiled code by address; one part runs on the calling thread, without
waking the pool.

Why not ``prange`` in each kernel: Numba's parallel-loop passes compile a kernel's body
two to three times over, which made the first call of a convolution cost many seconds.
Here each kernel compiles once, serially, and :func:`launch` compiles once per argument
signature, in a fraction of a second. The trampoline calls the kernel's native code, so
a kernel needs neither of Numba's entry points (a Python wrapper that unboxes its
arguments, a C wrapper), each of which would carry a copy of the kernel's body into
LLVM. A launch costs a few microseconds, as a parallel loop does: the OpenMP workers
wait, spinning, for the next one.
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import _dispatcher, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.ufunc import parallel as _parallel

from fastcnn._config import jit

_I64 = ir.IntType(64)
_BYTES = ir.IntType(8).as_pointer()


def start_threads() -> None:
    """Load Numba's threading layer, which defines ``numba_parallel_for`` (before any
    launcher is compiled or loaded from the cache)."""
    _parallel._launch_threads()


def _trampoline(context, module, frame_type, argtypes):
    """``void part(char **args, intp *dims, intp *steps, void *frame)``: run one part.

    ``numba_parallel_for`` calls it once for each index ``r`` of the loop, with
    ``args[0] = NULL + r`` (one "array" of step 1 from address 0: the index itself), and
    ``frame`` pointing to ``{kernel address, parts, n, args}``.
    """
    name = f"fastcnn_part_{abs(hash(str(frame_type))):x}"
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(ir.VoidType(), [_BYTES.as_pointer(), _I64.as_pointer(),
                                           _I64.as_pointer(), _BYTES])  # fmt: skip
    fn = ir.Function(module, fnty, name=name)
    fn.linkage = "internal"
    builder = ir.IRBuilder(fn.append_basic_block())
    args, _, _, frame = fn.args
    part = builder.ptrtoint(builder.load(args), _I64)
    values = builder.load(builder.bitcast(frame, frame_type.as_pointer()))
    address, parts, n, kernel_args = (builder.extract_value(values, i) for i in range(4))
    start = builder.sdiv(builder.mul(part, n), parts)
    stop = builder.sdiv(builder.mul(builder.add(part, _I64(1)), n), parts)
    rest = [builder.extract_value(kernel_args, i) for i in range(len(argtypes))]
    signature = [types.int64] * 3 + list(argtypes)
    kernel_type = context.call_conv.get_function_type(types.none, signature)
    kernel = builder.inttoptr(address, kernel_type.as_pointer())
    # A kernel raises nothing (no bounds checks, NumPy's error model): no status to read.
    context.call_conv.call_function(
        builder, kernel, types.none, signature, [part, start, stop, *rest]
    )
    builder.ret_void()
    return fn


@intrinsic
def _parallel_for(typingctx, address, parts, n, args, threads):
    if not isinstance(args, types.BaseTuple):
        return None
    argtypes = list(args)

    def codegen(context, builder, sig, llargs):
        address, parts, n, kernel_args, threads = llargs
        frame_type = ir.LiteralStructType([_I64, _I64, _I64, kernel_args.type])
        frame = cgutils.alloca_once(builder, frame_type)
        value = ir.Constant(frame_type, ir.Undefined)
        for i, v in enumerate((address, parts, n, kernel_args)):
            value = builder.insert_value(value, v, i)
        builder.store(value, frame)
        trampoline = _trampoline(context, builder.module, frame_type, argtypes)
        index = cgutils.alloca_once_value(builder, ir.Constant(_BYTES, None))
        dims = cgutils.alloca_once_value(builder, parts)
        steps = cgutils.alloca_once_value(builder, _I64(1))
        fnty = ir.FunctionType(ir.VoidType(), [_BYTES] * 5 + [_I64] * 3)
        parallel_for = cgutils.get_or_insert_function(builder.module, fnty, "numba_parallel_for")
        with builder.if_else(builder.icmp_signed("==", parts, _I64(1))) as (one, many):
            with one:  # part 0 (index NULL + 0) on this thread
                builder.call(trampoline, [index, dims, steps, builder.bitcast(frame, _BYTES)])
            with many:
                pointers = [trampoline, index, dims, steps, frame]
                builder.call(
                    parallel_for,
                    [builder.bitcast(p, _BYTES) for p in pointers] + [_I64(0), _I64(1), threads],
                )
        return context.get_dummy_value()

    return types.none(address, parts, n, args, threads), codegen


@jit(python=True)
def _launch(address, parts, n, args, threads):
    _parallel_for(address, parts, n, args, threads)


_launchers: dict = {}


def _compile(kernel, args: tuple, key) -> tuple:
    """``kernel``'s launcher for the types of ``args``, kept in ``_launchers[key]``: the
    Python entry point of :func:`_launch` for them and the address of ``kernel``'s native
    code for ``(part, start, stop, *args)``, each compiled or loaded from Numba's cache."""
    sig = (types.int64,) * 3 + tuple(numba.typeof(a) for a in args)
    kernel.compile(sig)
    result = kernel.overloads[sig]
    address = result.library.get_pointer_to_function(result.fndesc.llvm_func_name)
    launcher = (types.int64,) * 3 + (numba.typeof(args), types.int64)
    _launch.compile(launcher)
    found = _launchers[key] = (_launch.overloads[launcher].entry_point, address)
    return found


def launch(kernel, parts: int, n: int, args: tuple, threads: int) -> None:
    """Call ``kernel(part, start, stop, *args)`` for ``parts`` contiguous parts of
    ``range(n)``, on up to ``threads`` threads of Numba's pool (one part: on this thread);
    returns when all are done."""
    # The fingerprint is what Numba's dispatchers key their own type lookups on: the
    # types of the arguments, in a fraction of a microsecond. With it, the launcher's
    # entry point is called directly, without the dispatcher's second lookup of the types.
    key = (kernel, _dispatcher.compute_fingerprint(args))
    entry, address = _launchers.get(key) or _compile(kernel, args, key)
    entry(address, parts, n, args, threads)
