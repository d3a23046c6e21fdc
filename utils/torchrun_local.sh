#!/usr/bin/env bash
# Usage: utils/torchrun_local.sh NPROC torchrun-args...
# torchrun on this one machine, its rendezvous on the loopback address and a free port.
# Why not `torchrun --standalone`: that publishes the machine's host name as MASTER_ADDR, and where the
# host name does not resolve (containers, CI sandboxes) every rank retries it forever and the job hangs.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "Usage: $0 NPROC torchrun-args... (e.g. $0 2 -m qnet.bin.train --exp-dir exp/x)" >&2
  exit 1
fi
nproc=$1; shift
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# gloo (CPU) would otherwise look the host name up too before falling back to loopback
export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}
exec torchrun --nnodes 1 --nproc_per_node "$nproc" --master_addr 127.0.0.1 --master_port "$port" "$@"
