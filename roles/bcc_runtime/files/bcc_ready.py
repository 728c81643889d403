"""Is this host's bcc toolchain already proven? One cheap look instead of a full install pass.

Usage: bcc_ready.py STATE_DIR SMOKE_DIGEST

Prints one JSON object. "ready" is true only when every one of these holds:
  * bcc imports, with the version recorded by the last successful smoke compile;
  * the running kernel is the recorded one, and its headers (build/.../version.h) exist,
    reached through the same tree as then (links resolved);
  * the smoke program is the same (its digest).
Headers that link to another kernel's tree count as they do in the full pass: used where
they are (reported as "fallback"); bcc_runtime_headers_fallback only governs making them.
Otherwise "why" says what differs, and the role runs its full pass (install, headers,
smoke compile), which rewrites the record. Reads only; never fails on a missing piece.
"""
import json
import os
import sys

RECORD = "bcc_runtime_ready.json"


def look(state_dir, digest):
    kernel = os.uname().release
    build = "/lib/modules/%s/build" % kernel
    out = {"ready": False, "kernel": kernel, "bcc_version": None, "headers": None,
           "build": None, "why": ""}
    try:
        import bcc  # pylint: disable=import-outside-toplevel
        out["bcc_version"] = getattr(bcc, "__version__", "unknown")
    except Exception as e:  # any import failure means "install bcc"
        out["why"] = "bcc does not import: %s" % e
        return out
    if not os.path.exists(os.path.join(build, "include/generated/uapi/linux/version.h")):
        out["why"] = "no headers for kernel %s" % kernel
        return out
    out["build"] = os.path.realpath(build)
    out["headers"] = "exact" if kernel in out["build"] else "fallback"
    try:
        with open(os.path.join(state_dir, RECORD)) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        out["why"] = "no record of a smoke compile"
        return out
    want = {"kernel": kernel, "bcc_version": out["bcc_version"], "build": out["build"],
            "smoke_digest": digest}
    diff = sorted(k for k, v in want.items() if rec.get(k) != v)
    if diff:
        out["why"] = "changed since the last smoke compile: %s" % ", ".join(diff)
        return out
    out["ready"] = True
    out["why"] = "bcc %s compiled the smoke program against these headers before" % out["bcc_version"]
    return out


if __name__ == "__main__":
    print(json.dumps(look(sys.argv[1], sys.argv[2])))
