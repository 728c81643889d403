# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's one raw-syscall layer: syscall numbers per architecture, ``syscall`` and ``sys_bpf``.

Every bpf(2) call of the engine (``bpf/program.py``, the ``traffic`` collector through it, the
``bpf`` probe of ``core/facts.py``) and the io_uring probe go through here, so there is one
table of numbers and one way errors come back: ``OSError(errno, "EINVAL: Invalid argument")``.

It lives in ``core/`` rather than ``bpf/`` because ``core/facts.py`` uses it and modules that
ship facts (``cpu_partition`` through ``amp/``) must not ship ``bpf/`` (tests/unit/test_layout.py).

Plain Python, standard library only (ctypes): this runs on managed hosts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import os

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.core.nsutil import errno_text, libc

# ``os.uname().machine`` -> {syscall: number}.  Syscalls added since Linux 5.1 (io_uring's
# among them) have the same number on every architecture but alpha.
_IO_URING = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}
SYSCALLS = {
    "x86_64": dict(_IO_URING, bpf=321),
    "aarch64": dict(_IO_URING, bpf=280),
    "riscv64": dict(_IO_URING, bpf=280),
    "ppc64le": dict(_IO_URING, bpf=361),
    "ppc64": dict(_IO_URING, bpf=361),
    "s390x": dict(_IO_URING, bpf=351),
}


def machine():
    return os.uname()[4]


def syscall_nr(name):
    """The number of syscall ``name`` on this machine; OSError(ENOSYS) when it is not known."""
    nr = SYSCALLS.get(machine(), {}).get(name)
    if nr is None:
        raise OSError(errno.ENOSYS, "ENOSYS: no %s syscall number for %s" % (name, machine()))
    return nr


def syscall(name, *args):
    """Call syscall ``name`` with ctypes ``args``; return its result or raise OSError with the kernel's errno."""
    ret = libc().syscall(ctypes.c_long(syscall_nr(name)), *args)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, errno_text(err))
    return ret


def sys_bpf(cmd, attr):
    """bpf(cmd, attr); ``attr`` is a ctypes buffer (its whole size is passed).

    Returns the result (an fd for the commands that make one) or raises OSError; a machine
    with no known bpf(2) number is a NetstackError.
    """
    if "bpf" not in SYSCALLS.get(machine(), {}):
        raise NetstackError("bpf(2) syscall number unknown for %s" % machine())
    return syscall("bpf", ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
