#!/usr/bin/env python3
"""Per-thread CPU time and context switches of a process, grouped by thread name (for
benches/proxy_ab.sh THREADS=1: which of beeldbrug's threads a cache miss costs).
  thread_stats.py watch PID BEFORE.json AFTER.json   sample every 50 ms until AFTER.json.stop
                                                    exists (a thread that ends keeps its last sample)
  thread_stats.py snap PID > FILE.json
  thread_stats.py diff BEFORE.json AFTER.json"""
import os, sys, json
def snap(pid):
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{t}/comm").read().strip()
            st = open(f"/proc/{pid}/task/{t}/stat").read()
            f = st[st.rindex(")")+2:].split()
            cpu = int(f[11]) + int(f[12])
            v = nv = 0
            for line in open(f"/proc/{pid}/task/{t}/status"):
                if line.startswith("voluntary_ctxt_switches"): v = int(line.split()[1])
                if line.startswith("nonvoluntary_ctxt_switches"): nv = int(line.split()[1])
            out[t] = [comm, cpu, v, nv]
        except FileNotFoundError:
            pass
    return out
if sys.argv[1] == "watch":
    # watch PID OUT_BEFORE OUT_AFTER: snapshot now, then keep the latest values of every thread
    # (threads that exit keep their last sample) until the file STOP appears
    import time
    pid = sys.argv[2]
    first = snap(pid); json.dump(first, open(sys.argv[3], "w"))
    last = dict(first)
    while not os.path.exists(sys.argv[4] + ".stop"):
        try:
            last.update(snap(pid))
        except FileNotFoundError:
            break
        time.sleep(0.05)
    last.update(snap(pid)); json.dump(last, open(sys.argv[4], "w"))
    sys.exit(0)
if sys.argv[1] == "snap":
    json.dump(snap(sys.argv[2]), sys.stdout)
else:
    a = json.load(open(sys.argv[2])); b = json.load(open(sys.argv[3]))
    groups = {}
    for t, (comm, cpu, v, nv) in b.items():
        c0, v0, nv0 = (a[t][1], a[t][2], a[t][3]) if t in a else (0, 0, 0)
        g = groups.setdefault(comm, [0, 0, 0, 0])
        g[0] += 1; g[1] += cpu - c0; g[2] += v - v0; g[3] += nv - nv0
    hz = os.sysconf("SC_CLK_TCK")
    tot = [0, 0, 0]
    for comm, (n, cpu, v, nv) in sorted(groups.items(), key=lambda x: -x[1][1]):
        if cpu or v or nv:
            print(f"{comm:28s} threads {n:3d}  cpu {cpu/hz:6.2f}s  vol {v:7d}  invol {nv:6d}")
        tot[0] += cpu; tot[1] += v; tot[2] += nv
    print(f"{'TOTAL':28s}              cpu {tot[0]/hz:6.2f}s  vol {tot[1]:7d}  invol {tot[2]:6d}")
