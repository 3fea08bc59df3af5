#!/usr/bin/env python3
"""bench_roshi_ir.py - instructions per roshi request of crdtd binaries (callgrind), noise-free.

  bench/bench_roshi_ir.py CRDTD [CRDTD...]      env: N=1000 TUPLES=10 KEYS=100 LIMIT=50
                                                     MAX_SIZE=  (crdtd's --timeline-max-size)

A binary named bare_lws* (bench/bare_lws) is run as the transport's ceiling instead: the same
requests answered with canned replies, so its figures are libwebsockets' own cost per request.

For each binary, three runs under valgrind --tool=callgrind (--fsync everysec, a fresh data
directory, the roshi listener): no requests; N inserts of TUPLES tuples (bench_roshi.lua's shape:
keys tl%07d, increasing scores, new members); the same N inserts then N newest-LIMIT selects of
one key. One keep-alive client, requests in sequence, so the runs are deterministic. Prints the
instructions per insert ((B - A) / N) and per select ((C - B) / N), and each binary against the
first.
"""
import base64, http.client, json, os, re, shutil, subprocess, sys, tempfile, time

N = int(os.environ.get("N", "1000"))
TUPLES = int(os.environ.get("TUPLES", "10"))
KEYS = int(os.environ.get("KEYS", "100"))
LIMIT = int(os.environ.get("LIMIT", "50"))

def b64(s):
    return base64.b64encode(s.encode()).decode()

def run(binary, inserts, selects):
    tmp = tempfile.mkdtemp(prefix="roshi_ir.", dir=os.environ.get("TMPDIR"))
    out = os.path.join(tmp, "cg.out")
    bare = os.path.basename(binary).startswith("bare_lws")
    if bare:
        args, ready = [binary, "0", str(LIMIT)], r"listening on http://[^:]*:(\d+)"
    else:
        args = [binary, "--listen", "127.0.0.1:0", "--roshi-listen", "127.0.0.1:0",
                "--data-dir", os.path.join(tmp, "data"), "--fsync", "everysec"]
        if os.environ.get("MAX_SIZE"):
            args += ["--timeline-max-size", os.environ["MAX_SIZE"]]
        ready = r"roshi API listening on http://[^:]*:(\d+)"
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + args,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = None
    deadline = time.time() + 60
    while port is None and time.time() < deadline:
        line = p.stdout.readline()
        m = re.search(ready, line)
        if m:
            port = int(m.group(1))
    if port is None:
        p.kill()
        sys.exit("%s did not start" % binary)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    score = 0
    for i in range(inserts):
        ts = []
        for t in range(TUPLES):
            score += 1
            ts.append({"key": b64("tl%07d" % ((i * TUPLES + t) % KEYS)), "score": score,
                       "member": b64("m%09d" % score)})
        c.request("POST", "/", body=json.dumps(ts, separators=(",", ":")),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
    for i in range(selects):
        c.request("GET", "/?limit=%d" % LIMIT, body='["%s"]' % b64("tl%07d" % (i % KEYS)))
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
    c.close()
    p.terminate()
    p.wait(timeout=120)
    total = None
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    shutil.rmtree(tmp)
    return total

base = None
for binary in sys.argv[1:]:
    a, b, c = run(binary, 0, 0), run(binary, N, 0), run(binary, N, N)
    ins, sel = (b - a) / N, (c - b) / N
    if base is None:
        base = (ins, sel)
    print("%-50s insert %9.0f Ir  select %9.0f Ir  (vs first: %.3f / %.3f)"
          % (binary, ins, sel, ins / base[0], sel / base[1]), flush=True)
