"""Unit tests: struct member offsets from BTF (plugins/module_utils/bpf/btf.py).

A small BTF blob is built here by hand (the format: the kernel's Documentation/bpf/btf.rst)
so the decoder is checked against known answers; the running kernel's BTF, where present,
is checked against offsets that hold on every kernel (the first member is at 0).
"""
import os
import struct

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.bpf import btf
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError


def _blob():
    """int (id 1); struct inner {int a; int b;} (2); typedef inner_t (3);
    struct outer {int x; union {int u; int v;} (4, anonymous); inner_t in;} (5)."""
    names = b"\0int\0inner\0a\0b\0inner_t\0outer\0x\0u\0v\0in\0"

    def off(name):
        return names.index(name + b"\0")

    types = b""
    types += struct.pack("<III", off(b"int"), 1 << 24, 4) + struct.pack("<I", 32)
    types += struct.pack("<III", off(b"inner"), (4 << 24) | 2, 8)
    types += struct.pack("<III", off(b"a"), 1, 0) + struct.pack("<III", off(b"b"), 1, 32)
    types += struct.pack("<III", off(b"inner_t"), 8 << 24, 2)
    types += struct.pack("<III", 0, (5 << 24) | 2, 4)
    types += struct.pack("<III", off(b"u"), 1, 0) + struct.pack("<III", off(b"v"), 1, 0)
    types += struct.pack("<III", off(b"outer"), (4 << 24) | 3, 16)
    types += struct.pack("<III", off(b"x"), 1, 0) + struct.pack("<III", 0, 4, 32)
    types += struct.pack("<III", off(b"in"), 3, 64)
    hdr = struct.pack("<HBBIIIII", btf.MAGIC, 1, 0, 24, 0, len(types), len(types), len(names))
    return hdr + types + names


def test_offsets_through_typedefs_and_anonymous_members():
    b = btf.Btf(_blob())
    assert b.offset("outer", "x") == 0
    assert b.offset("outer", "v") == 4          # inside the anonymous union
    assert b.offset("outer", "in") == 8
    assert b.offset("outer", "in.b") == 12      # through the typedef
    assert b.offset("outer", "nosuch") is None
    assert b.offset("outer", "x.y") is None     # x is no struct
    assert b.size("outer") == 16


@pytest.mark.parametrize("data", [b"", b"\0" * 40, b"\x9f\xeb" + b"\0" * 22])
def test_damaged_blobs_are_refused_naming_btf(data):
    with pytest.raises(NetstackError) as e:
        btf.Btf(data)
    assert e.value.field == "btf"


def test_unknown_struct_is_refused_naming_btf():
    with pytest.raises(NetstackError) as e:
        btf.Btf(_blob()).offset("nosuch", "x")
    assert e.value.field == "btf"


@pytest.mark.skipif(not os.path.exists(btf.VMLINUX), reason="this kernel publishes no BTF")
def test_running_kernel():
    b = btf.vmlinux()
    assert b.offset("sock", "__sk_common") == 0
    assert b.offset("tcp_sock", "inet_conn") == 0
    assert 0 < b.offset("sock", "sk_rcvbuf") < b.size("sock")
    assert btf.vmlinux() is b                   # read once per process
