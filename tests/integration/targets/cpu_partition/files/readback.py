# Read the keys a cpu_partition result names straight from procfs/sysfs/cgroupfs (not
# through the engine) and compare them with the expected values.
# Usage: python3 readback.py EXPECTED.json  -> prints {"mismatch": {...}, "checked": N}
import json
import os
import sys


def raw(key):
    if key.startswith("/sys/fs/cgroup/"):
        if not os.path.isdir(key):
            return None
        pre = "cpuset." if os.path.exists(os.path.join(key, "cpuset.cpus")) else ""
        with open(os.path.join(key, pre + "cpus")) as f:
            cpus = f.read().strip()
        with open(os.path.join(key, pre + "mems")) as f:
            mems = f.read().strip()
        return "cpus=%s mems=%s" % (cpus, mems)
    if key.startswith("/"):
        path = key
    else:
        path = "/proc/sys/" + key.replace(".", "/")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    return text if path.startswith("/etc/") else text.strip()


def same(key, want, have):
    if want is None or have is None:
        return want == have
    if key.endswith(("rps_cpus", "xps_cpus")):  # masks: compare the bits, not the padding
        return int(want.replace(",", ""), 16) == int(have.replace(",", ""), 16)
    return " ".join(str(want).split()) == " ".join(str(have).split()) if not key.startswith("/etc/") else want == have


def main():
    with open(sys.argv[1]) as f:
        expected = json.load(f)
    bad = {}
    for key, want in expected.items():
        have = raw(key)
        if not same(key, want, have):
            bad[key] = {"want": want, "have": have}
    print(json.dumps({"mismatch": bad, "checked": len(expected)}))


main()
