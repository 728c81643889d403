"""Test-VM only: cache the bytecode of modules imported from zip files.

Ansible runs every module as an AnsiballZ zip whose module_utils Python compiles from
source on each import (zipimport writes no .pyc).  Under software emulation (TCG) that
compile is about 40 % of every task's time.  This caches the compiled code in
/var/cache/netstack-zipimport, keyed by the source text and the interpreter's magic
number, so the result is exactly what compiling again would give; tracebacks still name
the file being imported.  Loaded at interpreter start by netstack_zipimport_cache.pth.
Installed by tests/vm/build-image.sh into the test image only, never on real hosts.
"""
import hashlib
import importlib.util
import marshal
import os
import zipimport

_DIR = "/var/cache/netstack-zipimport"
_compile = zipimport._compile_source
_CODE = type(compile("", "", "exec"))


def _retag(code, filename):
    consts = tuple(_retag(c, filename) if isinstance(c, _CODE) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _compile_source(pathname, source):
    key = hashlib.sha256(importlib.util.MAGIC_NUMBER + source).hexdigest()
    path = os.path.join(_DIR, key)
    try:
        with open(path, "rb") as f:
            return _retag(marshal.load(f), pathname)
    except (OSError, ValueError, EOFError, TypeError):
        pass
    code = _compile(pathname, source)
    try:
        os.makedirs(_DIR, mode=0o700, exist_ok=True)
        tmp = "%s.%d" % (path, os.getpid())
        with open(tmp, "wb") as f:
            marshal.dump(code, f)
        os.replace(tmp, path)
    except OSError:
        pass
    return code


zipimport._compile_source = _compile_source
