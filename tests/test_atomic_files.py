"""Files semsearch writes for the user appear whole or not at all (semsearch/files.py): a
real `semsearch embed --out` process interrupted mid-write leaves the old file as it was
and no temporary file (click's atomic open renamed the part written into place)."""
import os
import signal
import subprocess
import sys
import time

import numpy as np

WAIT = 120  # seconds, at most, for the write to begin


def test_embed_out_interrupted_mid_write_leaves_the_old_file_whole(tmp_path, model_folder):
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"note {i} about the harbour, the tide and the ferry\n" for i in range(60_000)))
    out = tmp_path / "vectors.npy"
    np.save(out, np.arange(6, dtype=np.float32))  # what a user had there before
    before = out.read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "semsearch", "embed", "--file", str(texts), "--format", "npy",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT
        while not [p for p in tmp_path.iterdir() if p.name.startswith(".")]:  # the stand-in, being written
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the write never began"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["texts.txt", "vectors.npy"]
