#!/bin/bash
# Issue #8: CP2K polarizability labels of ML-MD snapshots for the candidates the demo screens.
#
#   scripts/build_md_datasets.sh [WORK=runs/pol8] [NAMES...]
#
# For each dataset: NVT ML-MD of the label cell at 300, 600 and 900 K (2 ps after 0.5 ps,
# frames every 10 fs), N snapshots by farthest-point sampling in descriptor space
# (`ionraman select`), CP2K labels (`ionraman label --engine cp2k`, the defaults: PBE, GTH,
# DZVP-MOLOPT, 300 Ry, Γ, Berry-phase dipole, Na q1), then scripts/ship_labels.py adds the
# finished labels to src/ionraman/data/datasets/. Every stage resumes: rerun the same command
# after an interruption (finished MD runs and labels are kept). The first 17 shipped cubic
# Na3SbS4 snapshots came from the teacher MD of `ionraman distill Na3SbS4-cubic --teacher auto
# --temperatures 300,600,900 --md-time 0.6 --frame-every 30` (session 5); later ones come from
# the plain NVT pools below, like every other dataset.
# CP2K cost on 2 cores: ≈ 45 s per 16-atom Na3SbS4/Na3PS4 frame.
# The label counts are totals of ML-MD labels: a dataset that already ships some is topped up
# (session 14: Na3PS4 50 → 110, the 60 new picks farthest from the shipped frames).
# Each SCF starts from the previous frame's wavefunction (--chain-guess: one composition, serial),
# which shortens the SCF part and leaves the label unchanged to the SCF tolerance.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs/pol8}
I=${IONRAMAN:-.venv/bin/ionraman}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 HDF5_USE_FILE_LOCKING=FALSE
mkdir -p "$WORK/md"

# name | structure | extra md args | force field | labels   (built in this order)
TABLE="
Na3SbS4-cubic|Na3SbS4-cubic|-|finetuned:Na3SbS4-cubic|85
Na3SbS4-tetragonal|Na3SbS4-tetragonal|-|finetuned:Na3SbS4-cubic|60
Na3SbS4-cubic-W0.5|$WORK/md/W0.5.extxyz|-|finetuned:Na3SbS4-cubic|50
Na3PS4-tetragonal|Na3PS4-tetragonal|-|chgnet|110
NaCl|NaCl|--supercell 2x2x2|chgnet|50
AgI-alpha|AgI-alpha|--supercell 2x2x2|chgnet|50
"
# the doped label cell is the cubic 16-atom cell with one W (Na5SbWS8): CP2K's Γ-point Berry-phase
# polarizability of an elongated cell (the 1x2x1 W0.25 cell) carries a large spurious anisotropy
# along its long axis (docs/physics/reference-labels.md, "Convergence: results")
test -f "$WORK/md/W0.5.extxyz" || $I build Na3SbS4-cubic --substitute Sb:W:0.5 --seed 3 -o "$WORK/md/W0.5.extxyz"
want=" $* "
# the table is read on fd 3: mpirun and python inside the loop read stdin and would swallow
# the remaining lines (only the first requested dataset was built)
while IFS='|' read -r name structure extra ff n <&3; do
  [ -z "$name" ] && continue
  [ $# -gt 0 ] && [[ "$want" != *" $name "* ]] && continue
  pool=()
  for T in 300 600 900; do
    f=$WORK/md/${name}_${T}K.h5
    if [ ! -f "$f.done" ]; then
      # shellcheck disable=SC2086
      $I md "$structure" -o "$f" -T $T --time 2 --equilibrate 0.5 --timestep 2 --sample-every 5 \
        --forcefield "$ff" --seed $T $( [ "$extra" = "-" ] || echo $extra ) && touch "$f.done"
    fi
    pool+=("$f")
  done
  # a dataset that already ships ML-MD labels is extended: the new picks are farthest from every
  # shipped frame (`select --labelled`), and only the missing n - shipped are labelled
  shipped=src/ionraman/data/datasets/${name}.xyz
  if [ ! -f "$WORK/${name}_snapshots.xyz" ]; then
    if [ -f "$shipped" ]; then
      have=$($PY -c "import sys, ase.io; print(sum(str(a.info.get('snapshot_method', '')).startswith('ML-MD') for a in ase.io.read(sys.argv[1], ':')))" "$shipped")
      if [ "$have" -lt "$n" ]; then
        $I select "${pool[@]}" -n $((n - have)) --labelled "$shipped" -o "$WORK/${name}_snapshots.xyz"
      else
        echo "$name: $have ML-MD labels shipped, $n wanted; nothing to add"; continue
      fi
    else
      $I select "${pool[@]}" -n "$n" -o "$WORK/${name}_snapshots.xyz"
    fi
  fi
  $I label "$WORK/${name}_snapshots.xyz" --engine cp2k -o "$WORK/${name}.xyz" --workers 1 --chain-guess --workdir "$WORK/cp2k_${name}" --no-progress || true
  $PY scripts/ship_labels.py "$WORK/${name}.xyz" --dataset "$name" --candidate "$name" --forcefield "$ff"
done 3<<< "$TABLE"
