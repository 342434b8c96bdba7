"""Run a command; print how long until its first byte on stdout, how long in all, and its
peak RSS. For `semsearch embed`, whose JSONL used to come out only once every text was
embedded (benchmarks/README.md, "Embedding from the command line").

    python benchmarks/first_byte.py semsearch embed --file texts.txt --variant int8
"""
import resource
import subprocess
import sys
import time


def main() -> int:
    started = time.monotonic()
    proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = None
    while proc.stdout.read(1 << 16):
        first = first if first is not None else time.monotonic() - started
    proc.wait()
    total = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    shown = "none" if first is None else f"{first:.1f} s"
    print(f"first byte {shown}, total {total:.1f} s, peak RSS {peak:.0f} MB, exit {proc.returncode}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
