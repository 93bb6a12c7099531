# fsync/fdatasync latency of the ingest shapes on one file system (issue 16 section 5;
# docs/performance.md, "An ingest journal ..."): python3 benches/fsync_latency.py DIR [N]
import os, sys, time, threading, statistics
base = sys.argv[1]; N = int(sys.argv[2]) if len(sys.argv) > 2 else 60
SIZE = 525_000
data = os.urandom(SIZE)
d = os.path.join(base, "fsl"); os.makedirs(d, exist_ok=True)
def med(xs): return "%.2f ms (p10 %.2f, p90 %.2f)" % (statistics.median(xs)*1e3, sorted(xs)[len(xs)//10]*1e3, sorted(xs)[len(xs)*9//10]*1e3)
def new_file(i):
    p = os.path.join(d, "f%d" % i); fd = os.open(p, os.O_CREAT|os.O_WRONLY|os.O_TRUNC, 0o644); os.write(fd, data); return p, fd
res = {}
# 1 fsync new file
t=[]; 
for i in range(N):
    p, fd = new_file(i); a=time.perf_counter(); os.fsync(fd); t.append(time.perf_counter()-a); os.close(fd)
res["new file 525KB fsync"] = t
t=[]
for i in range(N):
    p, fd = new_file(1000+i); a=time.perf_counter(); os.fdatasync(fd); t.append(time.perf_counter()-a); os.close(fd)
res["new file 525KB fdatasync"] = t
# dir fsync after rename
t=[]; dfd = os.open(d, os.O_RDONLY)
for i in range(N):
    p, fd = new_file(2000+i); os.fsync(fd); os.close(fd); os.rename(p, p+".r"); a=time.perf_counter(); os.fsync(dfd); t.append(time.perf_counter()-a)
res["dir fsync after rename"] = t
# file fsync then dir fsync serial (total)
t=[]
for i in range(N):
    p, fd = new_file(3000+i); a=time.perf_counter(); os.fsync(fd); os.rename(p, p+".r"); os.fsync(dfd); t.append(time.perf_counter()-a); os.close(fd)
res["file fsync + rename + dir fsync, serial"] = t
# rename first then file fdatasync + dir fsync concurrently
def both(fd):
    th = threading.Thread(target=os.fsync, args=(dfd,)); th.start(); os.fdatasync(fd); th.join()
t=[]
for i in range(N):
    p, fd = new_file(4000+i); os.rename(p, p+".r"); a=time.perf_counter(); both(fd); t.append(time.perf_counter()-a); os.close(fd)
res["rename, then file fdatasync || dir fsync"] = t
# WAL-like: small append to a preallocated file + fdatasync
wp = os.path.join(d, "wal"); wfd = os.open(wp, os.O_CREAT|os.O_RDWR, 0o644); os.posix_fallocate(wfd, 0, 64<<20); os.fsync(wfd)
# write zeros to make extents initialized
os.pwrite(wfd, b"\0"*(64<<20), 0); os.fsync(wfd)
t=[]; off=0
for i in range(N):
    os.pwrite(wfd, os.urandom(8192), off); off += 8192; a=time.perf_counter(); os.fdatasync(wfd); t.append(time.perf_counter()-a)
res["8KB overwrite in preallocated file, fdatasync"] = t
t=[]; off=0
for i in range(N):
    os.pwrite(wfd, data, off); off += SIZE; a=time.perf_counter(); os.fdatasync(wfd); t.append(time.perf_counter()-a)
res["525KB overwrite in preallocated file, fdatasync"] = t
# three at once: file fdatasync, dir fsync, wal 8k fdatasync
t=[]; off=0
for i in range(N):
    p, fd = new_file(5000+i); os.rename(p, p+".r"); os.pwrite(wfd, os.urandom(8192), off); off+=8192
    a=time.perf_counter()
    th1 = threading.Thread(target=os.fsync, args=(dfd,)); th2 = threading.Thread(target=os.fdatasync, args=(wfd,)); th1.start(); th2.start(); os.fdatasync(fd); th1.join(); th2.join()
    t.append(time.perf_counter()-a); os.close(fd)
res["file fdatasync || dir fsync || 8KB wal fdatasync"] = t
# serial: file+dir concurrently, then wal
t=[]; off=0
for i in range(N):
    p, fd = new_file(6000+i); os.rename(p, p+".r"); os.pwrite(wfd, os.urandom(8192), off); off+=8192
    a=time.perf_counter(); both(fd); os.fdatasync(wfd); t.append(time.perf_counter()-a); os.close(fd)
res["(file || dir) then wal fdatasync  [today's shape]"] = t
for k,v in res.items(): print("%-55s %s" % (k, med(v)))
import shutil
shutil.rmtree(d)
