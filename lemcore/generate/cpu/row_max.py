"""The largest value of a float32 row, vectorised, for our Numba kernels' softmaxes (softmax_rows.py, the decoding
attention, the sampler).

Written as `top = max(top, row[t])`, the loop stayed scalar: Numba's max keeps NaN's semantics, so LLVM does not
treat it as a reduction, and each step waits for the last (2.2 G values/s on one core here, 47 us of a 64 x 1.6K
block whose exp2 pass takes 8 us; the prefill softmax spent most of its time there). This intrinsic keeps four
16-wide running maxima (llvm.maxnum) and reduces them at the end: 28 G values/s on the same block.

Numba's on-disk cache records only the file of the function it compiled: after editing this file, delete the
`*.nbi`/`*.nbc` files beside the kernels (or in the user's cache folder) so that they compile again.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from lemcore.generate.cpu.vector_ir import F32 as _F32
from lemcore.generate.cpu.vector_ir import LANES as _LANES
from lemcore.generate.cpu.vector_ir import VEC as _VEC

_UNROLL = 4  # running maxima: independent chains, so each step need not wait for the last
_LOWEST = -3.0e38  # below any score or logit; what an empty row gives


@intrinsic
def row_max(typingctx: Any, row: Any, end: Any) -> Any:  # pragma: no cover - runs inside Numba's compiler
    """max(row[:end]) of a 1-D float32 array (-3e38 when end <= 0). Rows with unit stride go 16 x 4 values at
    a time, the rest one by one; other strides one by one."""
    if not (isinstance(row, types.Array) and row.ndim == 1 and row.dtype == types.float32
            and isinstance(end, types.Integer)):
        return None
    signature = types.float32(row, types.intp)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        array = context.make_array(sig.args[0])(context, builder, args[0])
        end = context.cast(builder, args[1], sig.args[1], types.intp)
        intp = end.type
        stride = builder.extract_value(array.strides, 0)
        per_block = ir.Constant(intp, _LANES * _UNROLL)
        unit = builder.icmp_signed("==", stride, ir.Constant(intp, 4))
        positive = builder.icmp_signed(">", end, ir.Constant(intp, 0))
        blocks = builder.select(builder.and_(unit, positive), builder.sdiv(end, per_block), ir.Constant(intp, 0))
        maxnum = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]  # Numba's helpers are untyped
            builder.module, ir.FunctionType(_VEC, [_VEC, _VEC]), "llvm.maxnum.v16f32")
        reduce = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, ir.FunctionType(_F32, [_VEC]), "llvm.vector.reduce.fmax.v16f32")
        lowest = ir.Constant(_VEC, [_LOWEST] * _LANES)
        running = [cgutils.alloca_once_value(builder, lowest)  # type: ignore[no-untyped-call]
                   for _ in range(_UNROLL)]
        for value in running:
            builder.store(lowest, value)  # the intrinsic may run in a loop: start low each time
        with cgutils.for_range(builder, blocks) as loop:
            base = builder.mul(loop.index, per_block)
            for i, value in enumerate(running):
                place = builder.gep(array.data, [builder.add(base, ir.Constant(intp, _LANES * i))])
                loaded = builder.load(builder.bitcast(place, _VEC.as_pointer()), align=4)
                builder.store(builder.call(maxnum, [builder.load(value), loaded]), value)
        pair = [builder.call(maxnum, [builder.load(running[i]), builder.load(running[i + 1])])
                for i in range(0, _UNROLL, 2)]
        top = cgutils.alloca_once_value(  # type: ignore[no-untyped-call]
            builder, builder.call(reduce, [builder.call(maxnum, pair)]))
        done = builder.mul(blocks, per_block)
        rest = builder.select(builder.icmp_signed(">", end, done), builder.sub(end, done), ir.Constant(intp, 0))
        raw = builder.bitcast(array.data, ir.IntType(8).as_pointer())
        with cgutils.for_range(builder, rest) as loop:
            at = builder.mul(builder.add(done, loop.index), stride)
            value = builder.load(builder.bitcast(builder.gep(raw, [at]), _F32.as_pointer()))
            current = builder.load(top)
            builder.store(builder.select(builder.fcmp_ordered(">", value, current), value, current), top)
        return builder.load(top)

    return signature, codegen
