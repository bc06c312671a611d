"""LLVM IR pieces our Numba intrinsics share (prefill_products.py's tiles, decode_attention.py's tiles, row_max.py):
16-float vectors (one AVX-512 register), the FMA intrinsic, register sums, a broadcast, row strides."""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba.core import cgutils

LANES = 16  # float32 values per AVX-512 register
F32 = ir.FloatType()
VEC = ir.VectorType(F32, LANES)
I32 = ir.IntType(32)
INDICES = ir.VectorType(I32, LANES)  # shuffle masks


def row_stride(builder: Any, array: Any, itemsize: int) -> Any:
    """An array's first stride in elements, from its byte stride: views of a wider buffer work too."""
    return builder.sdiv(builder.extract_value(array.strides, 0), ir.Constant(array.strides.type.element, itemsize))


def fma(builder: Any) -> Any:
    """llvm.fma.v16f32 in the builder's module."""
    return cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]  # Numba's helpers are untyped
        builder.module, ir.FunctionType(VEC, [VEC] * 3), "llvm.fma.v16f32")


def zeroed_sums(builder: Any, rows: int, columns: int) -> list[list[Any]]:
    """rows x columns vector slots, zero. Allocas in the entry block, which LLVM promotes to registers; zeroed
    here too, where the intrinsic runs, since it may run in a loop."""
    zero = ir.Constant(VEC, [0.0] * LANES)
    sums = [[cgutils.alloca_once_value(builder, zero)  # type: ignore[no-untyped-call]
             for _ in range(columns)] for _ in range(rows)]
    for row in sums:
        for total in row:
            builder.store(zero, total)
    return sums


def broadcast(builder: Any, scalar: Any) -> Any:
    """A float in every lane."""
    undefined = ir.Constant(VEC, ir.Undefined)
    return builder.shuffle_vector(builder.insert_element(undefined, scalar, ir.Constant(I32, 0)), undefined,
                                  ir.Constant(INDICES, [0] * LANES))
