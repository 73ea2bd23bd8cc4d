#!/bin/bash
# The low-latency measurement of this run (results/measure_low_latency.sh); its ANN:
# python -m trainer ann --dataset cifar10 --arch vgg9 --batch-norm --quant-levels 4 ... (RESULTS.md)
exec "$(dirname "$0")/../measure_low_latency.sh" runs/cifar10-vgg9-qcfs2
