#!/usr/bin/env python3
"""Server CPU per QIDO-RS request with traces off and on (issue 16 item 3).

Usage: python3 benches/telemetry_overhead.py [BINARY]   (default target/release/beeldbrug)
Starts `beeldbrug serve` on an empty store, alternately without and with
`[telemetry] otlp_endpoint` (tests/otlp/receiver.py as the collector), three times each;
2,000 QIDO-RS searches on one keep-alive connection per run after 50 to warm up. Prints the
server's CPU time (utime + stime from /proc, 10 ms ticks) and wall time per request.
"""
import http.client, os, subprocess, sys, time, tempfile
HERE = os.path.dirname(os.path.abspath(__file__))
RECEIVER = os.path.join(HERE, "..", "tests", "otlp", "receiver.py")
SPANS = os.path.join(tempfile.mkdtemp(), "spans.jsonl")
BIN=sys.argv[1] if len(sys.argv) > 1 else "target/release/beeldbrug"
def ticks(pid):
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return int(f[11])+int(f[12])
def run(otlp, n=2000):
    d=tempfile.mkdtemp()
    cfg=os.path.join(d,"c.toml")
    extra=f'[telemetry]\notlp_endpoint = "http://127.0.0.1:{otlp}"\n' if otlp else ""
    open(cfg,"w").write(f'[dimse]\nlisten="127.0.0.1:0"\n[http]\nlisten="127.0.0.1:0"\n[storage]\ndata_dir="{d}/data"\n'+extra)
    env=dict(os.environ); env.pop("BEELDBRUG_LOG",None)
    p=subprocess.Popen([BIN,"serve","--config",cfg],stdout=subprocess.PIPE,stderr=subprocess.DEVNULL,env=env,text=True)
    line=p.stdout.readline(); port=int(line.split("HTTP on ")[1].strip().rsplit(":",1)[1])
    c=http.client.HTTPConnection("127.0.0.1",port)
    for _ in range(50):
        c.request("GET","/dicomweb/studies?PatientID=X"); c.getresponse().read()
    t0=ticks(p.pid); w0=time.time()
    for _ in range(n):
        c.request("GET","/dicomweb/studies?PatientID=X"); c.getresponse().read()
    t1=ticks(p.pid); w1=time.time()
    p.terminate(); p.wait()
    return (t1-t0)*10/n, (w1-w0)*1000/n
rec=subprocess.Popen(["python3",RECEIVER,SPANS],stdout=subprocess.PIPE,text=True)
port=int(rec.stdout.readline())
res={"off":[], "on":[]}
for i in range(3):
    for mode in ("off","on"):
        res[mode].append(run(port if mode=="on" else None))
rec.terminate()
for m,v in res.items():
    print(m, "cpu ms/req:", [round(a,3) for a,_ in v], "wall ms/req:", [round(b,3) for _,b in v])
print("spans exported:", sum(1 for _ in open(SPANS)))
