#!/usr/bin/env bash
# System (Debian) packages ionraman needs. Idempotent: installs only what is missing.
# MD and transport need none (HDF5 comes with the h5py wheel); the ab initio
# polarizability labels (ionraman.polarizability.reference_cp2k) need CP2K
# (cp2k.psmp + mpirun) and its basis-set/pseudopotential files (cp2k-data).
set -euo pipefail
APT_PACKAGES=(cp2k cp2k-data)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi
