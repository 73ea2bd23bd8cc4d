#!/bin/bash
# Further STDB epochs from chain.sh's checkpoints (results/stdb_more.sh in runs/cifar10-vgg9-qcfs-l8-bf16), each on
# the whole training set: usage: stdb_more.sh T FROM NAME LR SEED   e.g. stdb_more.sh 4 stdb_T4 stdb2_T4 1e-4 1
RUN=runs/cifar10-vgg9-qcfs-l8-bf16 exec "$(dirname "$0")/../stdb_more.sh" "$@"
