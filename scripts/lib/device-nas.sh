# Shared by the scripts that run `nas eval` on the GPU machine (sourced).
#
# The GPU machine has torch (in /opt/torch/.venv, its `python3`) but no Rust
# toolchain and no network, so the `nas` binary, the training worker and the
# prepared Fashion-MNIST travel with the checkout, compressed to fit what the
# device tool carries (64 MiB).

# device_pack DIR: here, after `cargo build --release -p nas-host --bin nas`
# and `cargo build --release -p nas-eval-tch-worker` (in CARGO_TARGET_DIR
# when set), with Fashion-MNIST prepared (`nas data fetch fashion-mnist`).
device_pack() {
  local pack=$1 home_dir=${NAS_HOME:-$HOME/.cache/nas} prepared
  prepared=$(ls -d "$home_dir"/data/prepared/fashion-mnist-*/ 2>/dev/null | head -1)
  [ -n "$prepared" ] && [ -f "$prepared/manifest.json" ] || {
    echo "no prepared Fashion-MNIST under $home_dir/data/prepared: run 'nas data fetch fashion-mnist'" >&2
    return 2
  }
  rm -rf "$pack" && mkdir -p "$pack"
  local bin=${CARGO_TARGET_DIR:-target}/release
  strip -o "$pack/nas" "$bin/nas"
  strip -o "$pack/nas-eval-worker" "$bin/nas-eval-worker"
  xz -T0 -6 "$pack/nas"
  tar -C "$(dirname "$prepared")" -cJf "$pack/fashion-mnist.tar.xz" "$(basename "$prepared")"
}

# device_unpack DIR WORK: there. Puts `nas` and the worker in WORK, the
# dataset under WORK/home, and exports NAS_HOME, LD_LIBRARY_PATH (torch's
# libraries), NAS_PYTHON and NAS_EVAL_WORKER; sets PYTHON when unset.
device_unpack() {
  local pack=$1 work=$2
  [ -f "$pack/nas.xz" ] || { echo "no $pack: run the script's 'prepare' here and carry it" >&2; return 2; }
  if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ -x /opt/torch/.venv/bin/python3 ] && PYTHON=/opt/torch/.venv/bin/python3
  fi
  xz -dc "$pack/nas.xz" > "$work/nas" && chmod +x "$work/nas"
  cp "$pack/nas-eval-worker" "$work/" && chmod +x "$work/nas-eval-worker"
  export NAS_HOME=$work/home
  mkdir -p "$NAS_HOME/data/prepared"
  tar -C "$NAS_HOME/data/prepared" -xJf "$pack/fashion-mnist.tar.xz"
  local torch_lib
  torch_lib=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export LD_LIBRARY_PATH=$torch_lib:${LD_LIBRARY_PATH:-}
  export NAS_PYTHON=$PYTHON NAS_EVAL_WORKER=$work/nas-eval-worker
}

# device_designs DIR: the designs the device benchmarks score, as DIR/NAME.py
# (with DIR/designs.json): the grid of scripts/ceiling-designs.py within
# 200 MFLOPs (the first LIMIT of it when set), the hand-written references
# (ref-NAME) and the best design of each kept embedded run (loop-RUN); only
# those ONLY names (space-separated) when it is set.
device_designs() {
  local d=$1 f rel name
  "$PYTHON" scripts/ceiling-designs.py "$d" --max-mflops 200
  if [ -n "${LIMIT:-}" ]; then
    ls "$d"/*.py | tail -n +"$((LIMIT + 1))" | xargs -r rm
  fi
  for f in docs/results/embedded-run/references/*.py; do cp "$f" "$d/ref-$(basename "$f")"; done
  for f in $(find docs/results/embedded-run -name best.py | sort); do
    rel=${f#docs/results/embedded-run/}
    name=$(dirname "$rel" | tr / -)
    [ "$name" = . ] && name=run-50p
    cp "$f" "$d/loop-$name.py"
  done
  if [ -n "${ONLY:-}" ]; then
    for f in "$d"/*.py; do
      case " $ONLY " in *" $(basename "$f" .py) "*) ;; *) rm "$f" ;; esac
    done
    [ -n "$(ls "$d" | grep '\.py$')" ] || { echo "ONLY names no design: $ONLY" >&2; return 2; }
  fi
}

# device_machine: the GPU's name, memory and driver, or the CPU's.
device_machine() {
  local m
  m=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
  [ -n "$m" ] || m="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, no GPU"
  echo "$m"
}

# device_diagnose: what a failed CUDA start needs to be read (device files,
# the driver libraries, the mounts they come from), on stderr.
device_diagnose() {
  {
    echo "--- the GPU machine, as the sandbox's parent sees it"
    ls -la /dev/nvidia* 2>&1 | head -20
    ls -la /usr/lib/x86_64-linux-gnu/libcuda.so* 2>&1 | head -5
    grep -E 'nvidia|cuda' /proc/self/mountinfo 2>&1 | head -20
    id
  } >&2
}
