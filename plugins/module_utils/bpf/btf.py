# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Struct member offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux).

bcc compiles against whatever headers the host has (bcc_runtime's fallback gives Debian's,
which need not match a custom kernel), so a program that must read a kernel structure gets
the offsets of the running kernel as -D flags instead: ``offset("sock", "sk_rcvbuf")``.
Nested members are written with dots (``"sock", "__sk_common.skc_cookie"``); anonymous
structs and unions are searched through.  Only what offsets need is decoded (the BTF format:
the kernel's Documentation/bpf/btf.rst).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

VMLINUX = "/sys/kernel/btf/vmlinux"
MAGIC = 0xEB9F

# kind -> bytes that follow struct btf_type: a fixed part, and per vlen item
_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_PER_ITEM = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
STRUCT, UNION, TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG = 4, 5, 8, 9, 10, 11, 18
_QUALIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


class Btf(object):
    """The types of one BTF blob; members of structs and unions are decoded on demand."""

    def __init__(self, data):
        if len(data) < 24:
            raise NetstackError("BTF blob too short (%d bytes)" % len(data), field="btf")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != MAGIC:
            raise NetstackError("not BTF (magic %#x)" % magic, field="btf")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        if hdr_len < 24 or hdr_len + max(type_off + type_len, str_off + str_len) > len(data):
            raise NetstackError("BTF header out of bounds (header %d, types %d+%d, strings %d+%d, blob %d)"
                                % (hdr_len, type_off, type_len, str_off, str_len, len(data)), field="btf")
        self._data = data
        self._strings = hdr_len + str_off
        self._str_end = self._strings + str_len
        self._types = [None]  # type id 0 is void
        self._by_name = {}
        try:
            self._index(hdr_len + type_off, hdr_len + type_off + type_len)
        except (struct.error, ValueError, IndexError) as e:
            raise NetstackError("damaged BTF: %s" % e, field="btf")

    def _index(self, pos, end):
        data = self._data
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            body = pos + 12
            self._types.append((kind, name_off, info, size_or_type, body, vlen))
            if kind in (STRUCT, UNION) and name_off:
                self._by_name.setdefault((kind, self._name(name_off)), len(self._types) - 1)
            pos = body + _FIXED.get(kind, 0) + _PER_ITEM.get(kind, 0) * vlen

    def _name(self, off):
        start = self._strings + off
        stop = self._data.index(b"\0", start, self._str_end)
        return self._data[start:stop].decode("ascii", "replace")

    def _resolve(self, type_id):
        """Skip typedefs and qualifiers."""
        for _hop in range(32):
            t = self._types[type_id]
            if t is None or t[0] not in _QUALIFIERS:
                return type_id
            type_id = t[3]
        return type_id

    def _members(self, type_id):
        kind, _n, info, _s, body, vlen = self._types[type_id]
        kflag = info >> 31
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._data, body + 12 * i)
            bits = moff & 0xFFFFFF if kflag else moff
            yield (self._name(name_off) if name_off else ""), mtype, bits

    def _find(self, type_id, name):
        """(bit offset, type id) of member `name` in a struct/union, searching anonymous
        members; None when absent."""
        for mname, mtype, bits in self._members(type_id):
            if mname == name:
                return bits, mtype
            if not mname:
                inner = self._resolve(mtype)
                if self._types[inner] and self._types[inner][0] in (STRUCT, UNION):
                    hit = self._find(inner, name)
                    if hit:
                        return bits + hit[0], hit[1]
        return None

    def struct_id(self, name):
        tid = self._by_name.get((STRUCT, name)) or self._by_name.get((UNION, name))
        if tid is None:
            raise NetstackError("the kernel's BTF has no struct %s" % name, field="btf")
        return tid

    def offset(self, struct_name, path):
        """Byte offset of `path` (dotted members) in struct `struct_name`, or None when a
        member does not exist in this kernel."""
        tid = self.struct_id(struct_name)
        try:
            return self._offset(struct_name, tid, path)
        except (struct.error, ValueError, IndexError, TypeError) as e:
            raise NetstackError("damaged BTF at struct %s: %s" % (struct_name, e), field="btf")

    def _offset(self, struct_name, tid, path):
        bits = 0
        for part in path.split("."):
            kind = self._types[tid][0]
            if kind not in (STRUCT, UNION):
                return None
            hit = self._find(tid, part)
            if hit is None:
                return None
            bits += hit[0]
            tid = self._resolve(hit[1])
        if bits % 8:
            raise NetstackError("%s.%s is a bit field" % (struct_name, path), field="btf")
        return bits // 8

    def size(self, struct_name):
        return self._types[self.struct_id(struct_name)][3]


_CACHE = {}


def vmlinux(path=VMLINUX):
    """The running kernel's BTF, read once per process."""
    if path not in _CACHE:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (IOError, OSError) as e:
            raise NetstackError("the kernel's BTF is not readable (%s): %s" % (path, e), field="btf")
        _CACHE[path] = Btf(data)
    return _CACHE[path]
