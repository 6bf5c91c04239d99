#!/usr/bin/env python3
"""Embedding files without numpy: read a safetensors F32 matrix, write and read .npy, cosines.

Usage: vecio.py subset IN.safetensors OUT.npy ROWS   first ROWS rows of IN's only tensor -> OUT
       vecio.py cosine A B                           smallest row cosine (.npy or .safetensors)
Stdlib only, so it runs where the remote script's glue runs (and here, where python has no numpy).
"""
import array
import ast
import json
import math
import struct
import sys


def _floats(raw):
    a = array.array("f")
    a.frombytes(raw)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def read_safetensors(path, name=None):
    """(rows, cols, flat floats) of one F32 2-D tensor: `name`, else the file's only tensor."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        if name is None:
            if len(header) != 1:
                raise ValueError(f"{path}: {len(header)} tensors, name one of {sorted(header)}")
            name = next(iter(header))
        t = header[name]
        if t["dtype"] != "F32" or len(t["shape"]) != 2:
            raise ValueError(f"{path}: {name} is {t['dtype']} {t['shape']}, expected a F32 matrix")
        start, end = t["data_offsets"]
        f.seek(8 + n + start)
        rows, cols = t["shape"]
        return rows, cols, _floats(f.read(end - start))


def write_npy(path, rows, cols, flat):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, cols)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    data = array.array("f", flat[: rows * cols])
    if sys.byteorder != "little":
        data.byteswap()
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(data.tobytes())


def read_npy(path):
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise ValueError(f"{path}: not a .npy file")
        major = f.read(2)[0]
        (n,) = struct.unpack("<H" if major == 1 else "<I", f.read(2 if major == 1 else 4))
        h = ast.literal_eval(f.read(n).decode("latin1"))
        if h["descr"] != "<f4" or h["fortran_order"] or len(h["shape"]) != 2:
            raise ValueError(f"{path}: {h}, expected a little-endian f32 C-order matrix")
        rows, cols = h["shape"]
        return rows, cols, _floats(f.read(rows * cols * 4))


def read_any(path):
    return read_npy(path) if path.endswith(".npy") else read_safetensors(path)


def min_cosine(a, b):
    """(smallest row cosine, rows compared) of two (rows, cols, flat) matrices: their common rows."""
    ra, ca, fa = a
    rb, cb, fb = b
    if ca != cb:
        raise ValueError(f"widths differ: {ca} vs {cb}")
    rows = min(ra, rb)
    worst = math.inf
    for r in range(rows):
        u, v = fa[r * ca:(r + 1) * ca], fb[r * ca:(r + 1) * ca]
        dot = sum(x * y for x, y in zip(u, v))
        norm = math.sqrt(sum(x * x for x in u) * sum(y * y for y in v))
        worst = min(worst, dot / norm if norm > 0 else (1.0 if dot == 0 else 0.0))
    return worst, rows


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "subset":
        rows, cols, flat = read_any(sys.argv[2])
        n = min(rows, int(sys.argv[4]))
        write_npy(sys.argv[3], n, cols, flat)
        print(f"{sys.argv[3]}: {n} x {cols}")
    elif len(sys.argv) == 4 and sys.argv[1] == "cosine":
        c, n = min_cosine(read_any(sys.argv[2]), read_any(sys.argv[3]))
        print(f"{n} rows, min cosine {c:.9f}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
