#!/usr/bin/env bash
# Real pixels for the real-mini experiment (sweeps/real-mini.yaml, docs/DATA.md "Real pixels"):
# a head CT, a T1 MRI with its atlas and twelve photographs, taken from three Debian packages by
# name with apt-get download, unpacked one file at a time, checked against the sha256 sums below
# and put in the data cache: $SPECTRAL_RAY_CACHE/real-mini (default ~/.cache/spectral-ray/real-mini;
# the folder is spectral_ray.data.real.minidata.data_dir(), asked of Python so the rule lives in
# one place). Rerunning is a no-op when every file is there with its checksum.
#
#   bash scripts/real-mini-data.sh            # into the data cache
#   bash scripts/real-mini-data.sh DIR        # into DIR instead (then pass DIR to the datasets)
#
# Needs apt-get and dpkg-deb (Debian/Ubuntu). Root is only needed when the package lists are
# missing: the script then runs `apt-get update` once and tries again.
set -euo pipefail

# package | file in the package | name in the data folder | sha256 of that file
MANIFEST='
invesalius-examples|./usr/share/doc/invesalius-examples/examples/Cranium.inv3|ct/Cranium.inv3|3b34f11f7c4f557f4c65cd6543c412a2f6ceb0cfecfd9c41184420e02d9b7e2a
mricron-data|./usr/share/mricron/templates/ch2.nii.gz|mri/ch2.nii.gz|a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309
mricron-data|./usr/share/mricron/templates/aal.nii.gz|mri/aal.nii.gz|b512dcd3f36b77f56be7a9a038134096e66314b7e8c31d25875b96bcf6991454
mricron-data|./usr/share/mricron/templates/aal.nii.txt|mri/aal.nii.txt|1788d6556a9ec056de9867b2382cf1ce1b51b87ae4cfd9cd25de48ae4dde709e
mate-backgrounds|./usr/share/backgrounds/mate/nature/Aqua.jpg|photos/Aqua.jpg|5c30118205982da441bf7e6a1ada636a8a0be879408140b3148280c665ed6bce
mate-backgrounds|./usr/share/backgrounds/mate/nature/Blinds.jpg|photos/Blinds.jpg|f7aac0dcc2e06d0491643e84df3da1d9db7c4610f58806a880d56e074799f600
mate-backgrounds|./usr/share/backgrounds/mate/nature/Dune.jpg|photos/Dune.jpg|8a67c2cb0be8c46b70c237311a4fa4d2b4ac7d39568135384787801fa5cc9a91
mate-backgrounds|./usr/share/backgrounds/mate/nature/FreshFlower.jpg|photos/FreshFlower.jpg|972b0a0c4e5e3fa93f4f244fc84bc64b121a5eac3aaa5856f1308c1f38a02f8e
mate-backgrounds|./usr/share/backgrounds/mate/nature/Garden.jpg|photos/Garden.jpg|d3095ee09d425ef23d27155412136cf14fc3c9af76ca58b452f55e23da324e78
mate-backgrounds|./usr/share/backgrounds/mate/nature/GreenMeadow.jpg|photos/GreenMeadow.jpg|8fa0de0aa4089f7319c9fb7a6d006d4cab6023e8c8853731557cff53567b4832
mate-backgrounds|./usr/share/backgrounds/mate/nature/LadyBird.jpg|photos/LadyBird.jpg|e35a9a4126ef969c90b29c038058c5a575a20eadd84106a37bf1fa9931e7b61d
mate-backgrounds|./usr/share/backgrounds/mate/nature/RainDrops.jpg|photos/RainDrops.jpg|3e4ea9671c28c90a86cf67b3db9daf18c4741587c596333a7529ca589aaa0c16
mate-backgrounds|./usr/share/backgrounds/mate/nature/Storm.jpg|photos/Storm.jpg|77ca53077831d3237f73393a91fc879158abc046d852941c26e90de336356957
mate-backgrounds|./usr/share/backgrounds/mate/nature/TwoWings.jpg|photos/TwoWings.jpg|665e5abf8a5399070a91a9a8e455fe071e5b61697ff78fdeda4e9843ef545aeb
mate-backgrounds|./usr/share/backgrounds/mate/nature/Wood.jpg|photos/Wood.jpg|19c78500ac00a622e19907ab9cc7d06d46fe08c4a6142759a84195696150ec07
mate-backgrounds|./usr/share/backgrounds/mate/nature/YellowFlower.jpg|photos/YellowFlower.jpg|254da96256acb7add685679775a04d1e4a5bc8cd13e5a5a3d61351ce198a5306
'
# each package's copyright file goes to licenses/<package>.copyright (attribution; not checksummed:
# it changes with the packaging revision, the data do not)

die() { echo "real-mini-data: $*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $# -gt 1 ]]; then die "usage: $0 [DIR]"; fi
if [[ $# -eq 1 ]]; then
  dest=$1
else
  py=${PYTHON:-}
  if [[ -z $py ]]; then
    if [[ -x $repo/.venv/bin/python ]]; then py=$repo/.venv/bin/python; else py=python3; fi
  fi
  dest=$("$py" -c 'from spectral_ray.data.real.minidata import data_dir; print(data_dir())') \
    || die "cannot ask $py for the data folder (is spectral-ray installed? bash scripts/venv.sh); or pass DIR"
fi

sha_ok() { [[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$2" ]]; }

todo=()  # manifest lines whose file is absent or wrong
while IFS='|' read -r pkg member name sum; do
  [[ -z $pkg ]] && continue
  sha_ok "$dest/$name" "$sum" || todo+=("$pkg|$member|$name|$sum")
done <<<"$MANIFEST"
if [[ ${#todo[@]} -eq 0 ]]; then
  echo "real-mini-data: all files present and verified in $dest (nothing to do)"
  exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: this script fetches Debian packages (invesalius-examples, mricron-data, mate-backgrounds)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian's dpkg package)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"

updated=0
fetch() {  # fetch PACKAGE: its .deb into $work (apt-get update once if the lists lack it)
  local pkg=$1
  compgen -G "$work/${pkg}_*.deb" >/dev/null && return 0
  if ! (cd "$work" && apt-get download "$pkg" >"$work/apt.log" 2>&1); then
    if [[ $updated -eq 0 ]]; then
      echo "real-mini-data: apt-get download $pkg failed; running apt-get update once"
      updated=1
      apt-get update >"$work/update.log" 2>&1 || die "apt-get update failed (root needed?): $(tail -3 "$work/update.log")"
      fetch "$pkg"; return
    fi
    die "package '$pkg' could not be downloaded with apt-get download: $(grep -E '^E:' "$work/apt.log" | head -3)"
  fi
}

for line in "${todo[@]}"; do
  IFS='|' read -r pkg member name sum <<<"$line"
  fetch "$pkg"
  deb=$(compgen -G "$work/${pkg}_*.deb" | head -1)
  out="$work/unpacked/$pkg"
  mkdir -p "$out"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$out" "$member" 2>/dev/null \
    || die "$pkg ($(basename "$deb")) has no file $member"
  got=$(sha256sum "$out/$member" | cut -d' ' -f1)
  [[ $got == "$sum" ]] || die "checksum mismatch for $member from $(basename "$deb"): expected $sum, got $got"
  mkdir -p "$dest/$(dirname "$name")"
  cp "$out/$member" "$dest/$name.part.$$" && mv -f "$dest/$name.part.$$" "$dest/$name"
  echo "real-mini-data: $name <- $pkg (sha256 ok)"
  copyright="./usr/share/doc/$pkg/copyright"
  if [[ ! -f $dest/licenses/$pkg.copyright ]] && dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$out" "$copyright" 2>/dev/null; then
    mkdir -p "$dest/licenses" && cp "$out/$copyright" "$dest/licenses/$pkg.copyright"
  fi
done
echo "real-mini-data: done; ${#todo[@]} file(s) written to $dest"
