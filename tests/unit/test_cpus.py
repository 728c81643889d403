# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CPU list <-> mask conversions, against the forms the kernel reads and prints."""

import os

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.core.cpus import (
    cpulist_to_mask, cpus_to_mask, format_cpulist, mask_to_cpulist, mask_to_cpus, parse_cpulist)


@pytest.mark.parametrize("text,cpus", [
    ("", []),
    ("0", [0]),
    ("0-3,8", [0, 1, 2, 3, 8]),
    (" 8,0-1 ,1\n", [0, 1, 8]),
    ("0-7:2/4", [0, 1, 4, 5]),  # stride form: of each 4, the first 2
    ("62-65", [62, 63, 64, 65]),
])
def test_parse_cpulist(text, cpus):
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize("bad", ["a", "3-1", "1--2", "0-7:3/2", "0-7:1/0", "-1"])
def test_parse_cpulist_rejects(bad):
    with pytest.raises(ValueError, match="bad CPU list"):
        parse_cpulist(bad)


@pytest.mark.parametrize("cpus,text", [([], ""), ([3], "3"), ([0, 1, 2, 3, 8], "0-3,8"),
                                       ([5, 1, 2, 2, 9, 10], "1-2,5,9-10")])
def test_format_cpulist(cpus, text):
    assert format_cpulist(cpus) == text


@pytest.mark.parametrize("mask,cpus", [
    ("0", []),
    ("", []),
    ("3", [0, 1]),
    ("0x5", [0, 2]),
    ("00000000,00000003", [0, 1]),
    ("ff,00000001", [0] + list(range(32, 40))),
    ("80000000,00000000,00000000", [95]),
    ("1,1", [0, 32]),  # the kernel reads every word as 32 bits, even a short one
])
def test_mask_to_cpus(mask, cpus):
    assert mask_to_cpus(mask) == cpus


@pytest.mark.parametrize("bad", ["g", "1,,2", "123456789", "0x1,"])
def test_mask_rejects(bad):
    with pytest.raises(ValueError, match="bad CPU mask"):
        mask_to_cpus(bad)


def test_cpus_to_mask_kernel_width():
    assert cpus_to_mask([]) == "0"
    assert cpus_to_mask([0, 1]) == "3"
    assert cpus_to_mask([0, 1], 2) == "3"
    assert cpus_to_mask([0, 1], 64) == "00000000,00000003"
    assert cpus_to_mask([0, 32, 33, 34, 35, 36, 37, 38, 39]) == "ff,00000001"
    assert cpus_to_mask([4], 12) == "010"  # 12 CPUs: three hex digits, as the kernel prints
    with pytest.raises(ValueError, match="out of range"):
        cpus_to_mask([64], 64)
    with pytest.raises(ValueError, match="negative"):
        cpus_to_mask([-1])


@pytest.mark.parametrize("cpus", [[0], [1, 3], list(range(0, 130, 7)), [31, 32, 63, 64]])
def test_roundtrip(cpus):
    assert mask_to_cpus(cpus_to_mask(cpus)) == cpus
    assert parse_cpulist(format_cpulist(cpus)) == cpus
    assert mask_to_cpulist(cpulist_to_mask(format_cpulist(cpus), 192)) == format_cpulist(cpus)


def test_this_hosts_masks_agree_with_its_lists():
    """The kernel prints the same IRQ affinity as a list and as a mask: both parsers agree."""
    with open("/sys/devices/system/cpu/possible") as f:
        nr_cpu_ids = max(parse_cpulist(f.read())) + 1  # the kernel pads masks to this width
    checked = 0
    for irq in sorted(os.listdir("/proc/irq")):
        d = os.path.join("/proc/irq", irq)
        try:
            with open(os.path.join(d, "smp_affinity")) as f:
                mask = f.read().strip()
            with open(os.path.join(d, "smp_affinity_list")) as f:
                text = f.read().strip()
        except (IOError, OSError):
            continue
        assert mask_to_cpus(mask) == parse_cpulist(text), irq
        assert cpus_to_mask(parse_cpulist(text), nr_cpu_ids) == mask, irq
        checked += 1
    if not checked:
        pytest.skip("no readable /proc/irq/*/smp_affinity here")
