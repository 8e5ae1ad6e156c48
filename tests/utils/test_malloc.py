"""keep_freed_memory (issue 22): large freed buffers are reused instead of page-faulted in again."""

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from sdgas.utils.malloc import keep_freed_memory
    assert keep_freed_memory()
torch.ones(16 << 20).sum()  # first 64 MiB block: faulted in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 << 20).sum()  # allocate, touch and free 64 MiB, as a training step does with its activations
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def minor_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    """Ten 64 MiB allocations: glibc's defaults map fresh pages for each (16384 faults apiece); with
    keep_freed_memory the freed block is reused, and at most two of the ten fault in again (one did, once, when the
    whole suite ran beside other work)."""
    default, kept = minor_faults("default"), minor_faults("keep")
    assert default > 10 * 16000
    assert kept <= 2 * 16384 + 512
