#!/usr/bin/env bash
# Every case of experiments/device_fit.md: designs by cooptim's DSE, each node evaluated by the
# fpgaconvnet-model 0.1.4.2 wheel (hls backend) in its own environment, and the tables.
#     bash experiments/regenerate_device_fit.sh OUT_DIR [PEER_PYTHON]
# PEER_PYTHON: the wheel's environment (default /tmp/peer/bin/python; benchmarks/peer_fpgaconvnet.py
# says how to build it). Prints every table and each partition search's seconds; writes the
# designs and the peer's figures to OUT_DIR. About 10 minutes on 2 cores.
set -euo pipefail
out=${1:?usage: regenerate_device_fit.sh OUT_DIR [PEER_PYTHON]}
peer_python=${2:-/tmp/peer/bin/python}
here=$(dirname "$0")
experiment="$here/resnet18_vs_fpgaconvnet.py"
peer="$here/../benchmarks/peer_fpgaconvnet.py"
mkdir -p "$out"

wheel() {  # design.json -> design.hls.json
    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python "$peer_python" "$peer" --network "$1" "${1%.json}.hls.json" >/dev/null
}

echo "## ResNet-18, whole designs"
for spec in "u250 pooled 1.0 resnet18 lutram" "u250 on_chip 1.0 resnet18 lutram" "u250 on_chip 0.85 resnet18 lutram" \
            "u250 on_chip 1.0 resnet18 hls" "zcu102 streamed 1.0 resnet18 lutram" "zcu102 streamed 0.85 resnet18 lutram"; do
    set -- $spec
    design="$out/design_$1_$2_$3_$5.json"
    python "$experiment" design "$design" "$@" 2>/dev/null
    wheel "$design"
    echo; echo "### $spec"; echo
    python "$experiment" fit "$design" "${design%.json}.hls.json"
done

echo; echo "## The zoo, memory: streamed, limit 1.0"
for network in resnet18 resnet50 mobilenet_v2 vgg16; do
    for device in u250 zcu102; do
        design="$out/zoo_${network}_${device}.json"
        if python "$experiment" design "$design" "$device" streamed 1.0 "$network" 2>"$out/zoo_${network}_${device}.err"; then
            wheel "$design"
            python "$experiment" zoo_row "$design" "${design%.json}.hls.json"
        else
            echo "| $network | $device | $(tail -1 "$out/zoo_${network}_${device}.err" | sed 's/^[A-Za-z_.]*Error: //') |"
        fi
    done
done

echo; echo "## Partitions"
for spec in "resnet18 u250 on_chip" "resnet18 zcu102 streamed" "mobilenet_v2 zcu102 streamed" \
            "resnet50 zcu102 streamed" "vgg16 u250 streamed"; do
    set -- $spec
    prefix="$out/part_$1_$2"
    start=$(date +%s)
    python "$experiment" partitions "$prefix" "$2" "$3" "$1" 256 2>/dev/null
    echo; echo "### $spec: search $(( $(date +%s) - start )) s"; echo
    for f in "$prefix".*[0-9].json; do wheel "$f"; done
    python "$experiment" fit_partitions "$prefix"
done
