"""Load cost of notebooks and Maildir: a 500-cell notebook vs its text as .txt; a
5,000-message Maildir vs the same messages as one .mbox; a notebook of outputs' peak memory
(`outputs DIR N`: N pictures, or -N epochs of log lines; then `plainjson DIR`: the same
parse keeping the outputs). Run from the repository root (it uses the tests' writers):

    nice -n 19 .venv/bin/python benchmarks/formats_load.py notebook /tmp/nb
    nice -n 19 .venv/bin/python benchmarks/formats_load.py maildir /tmp/md
"""
import json, mailbox, os, random, resource, sys, time
sys.path.insert(0, "tests")  # run from the repository root
from semsearch.loaders import list_files, load_file, Document

WORDS = "orbit satellite rocket bread dough oven cats purr mice garden tomato water region revenue plot model train loss".split()
rnd = random.Random(1)
def sentence(n): return " ".join(rnd.choice(WORDS) for _ in range(n)) + "."

def consume(paths):
    n = chars = 0
    for p in paths:
        for d in load_file(p, as_text=True):
            if isinstance(d, Document):
                n += 1; chars += sum(len(s) for s in d.segments())
    return n, chars

def timed(label, f, reps=3):
    best = None
    for _ in range(reps):
        t = time.perf_counter(); out = f(); dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    print(f"| {label} | {best*1000:.1f} ms | {out} |")

kind, root = sys.argv[1], sys.argv[2]
os.makedirs(root, exist_ok=True)
if kind == "notebook":
    from test_notebook import markdown, code, stream, write
    cells = []
    for i in range(250):
        cells.append(markdown(f"## Step {i}\n\n" + sentence(40)))
        cells.append(code(f"x{i} = compute({i})\nprint(x{i})\n", stream(sentence(20) + "\n"), count=i + 1))
    nb = write(__import__("pathlib").Path(root) / "nb.ipynb", cells)
    (doc,) = load_file(nb)
    txt = os.path.join(root, "nb.txt"); open(txt, "w").write("".join(doc.segments()))
    print(f"notebook {os.path.getsize(nb)/1e6:.2f} MB, its text {os.path.getsize(txt)/1e6:.2f} MB")
    timed("500-cell .ipynb (load_file + segments)", lambda: consume([nb]), 10)
    timed("its text as .txt", lambda: consume([txt]), 10)
elif kind == "maildir":
    from test_mail import message
    box = mailbox.Maildir(os.path.join(root, "Maildir"), create=True)
    mb = mailbox.mbox(os.path.join(root, "all.mbox"))
    if not len(box):
        for i in range(5000):
            m = message(f"Subject {i} " + sentence(4), sentence(120), f"<m{i}@x>")
            box.add(m); mb.add(m)
        mb.flush()
    mb.close()
    md = os.path.join(root, "Maildir")
    print(f"Maildir {sum(os.path.getsize(os.path.join(md,'new',f)) for f in os.listdir(os.path.join(md,'new')))/1e6:.2f} MB in 5000 files; mbox {os.path.getsize(os.path.join(root,'all.mbox'))/1e6:.2f} MB")
    timed("walk the Maildir (list_files)", lambda: len(list_files([md])), 3)
    files = list_files([md])
    timed("5,000-message Maildir (load_file each + segments)", lambda: consume(files), 3)
    timed("the same as one .mbox", lambda: consume([os.path.join(root, "all.mbox")]), 3)
elif kind == "outputs":
    from test_notebook import markdown, code, picture, stream, write
    nb = os.path.join(root, "plots.ipynb")
    if not os.path.exists(nb):  # written by one process, read by the next
        n = int(sys.argv[3])
        outputs = [picture() for _ in range(n)] if n > 0 else \
            [stream("".join(f"epoch {e} step {i} loss 0.{i:04d} acc 0.9{i % 10}\n" for i in range(1000))) for e in range(-n)]
        write(__import__("pathlib").Path(nb), [markdown("# Plots"), code("show()", *outputs)])
        sys.exit()
    size = os.path.getsize(nb)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    print(os.path.getsize(nb) / 1e6, "MB", consume([nb]), f"{time.perf_counter()-t:.2f}s")
    print("maxrss before", base // 1024, "MB after", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "MB")
elif kind == "plainjson":  # the same file parsed without the hook: what keeping outputs would hold
    from semsearch.loaders import decode_text
    nb = os.path.join(root, "plots.ipynb")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = open(nb, "rb").read(); text, _ = decode_text(data); del data
    obj = json.loads(text)
    print("maxrss before", base // 1024, "MB after", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "MB")
