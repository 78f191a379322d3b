#!/usr/bin/env bash
# Packs the Python packages that the device runs need and the GPU machines' image lacks into one
# archive, .device_site.tar.gz in the repository root (git-ignored), for a device call to carry.
#
#   bash benchmarks/device/pack_site.sh          # here, where PyPI is reachable (~1 min, ~11 MB)
#
# then, in the device call (carry: [".device_site.tar.gz"]), start the command with
#
#   source benchmarks/device/site.sh && <command>
#
# which unpacks it into jaxlab_site in the temporary directory and puts that on PYTHONPATH (every
# subprocess inherits it).
#
# The image (Python 3.12, jax 0.11.2, flax, optax, orbax, chex, numpy, transformers, torch, ...;
# the list in the device tool's KINDS.md) has no MuJoCo, MJX, Playground, Brax, gymnax,
# ml_collections or tensorboardX. The versions are pyproject.toml's pins. Parts of the wheels that
# no run here uses are left out so that the archive and the working tree fit a call's 64 MiB:
# MuJoCo's experimental studio / GUI and renderer libraries, MJX's test data, Playground's
# locomotion and manipulation meshes and textures (its dm_control_suite models stay), and the
# packages' tests. brax, gymnasium and mediapy come whole; what each run imports is checked on
# the CPU in a Python 3.12 environment with only the image's packages (benchmarks/device/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PACKAGES=(
  ml-collections==1.1.0 brax==0.14.2 mujoco==3.17.0 mujoco-mjx==3.17.0 playground==0.2.0
  gymnax==1.0.1 gymnasium==1.3.0 farama-notifications==0.0.6 tensorboardX==2.6.5
  trimesh==5.2.0 glfw==2.11.0 jaxopt==0.8.5 mediapy==1.2.7
)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SITE=$WORK/jaxlab_site
python3 -m pip install -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --target "$SITE" \
  "${PACKAGES[@]}"
rm -rf "$SITE"/mujoco/experimental "$SITE"/mujoco/_render_filament* "$SITE"/mujoco/mjx/test_data \
  "$SITE"/bin "$SITE"/learning
# Playground: keep every .py and the DM Control suite's files; drop the other suites' assets.
find "$SITE"/mujoco_playground/_src/locomotion "$SITE"/mujoco_playground/_src/manipulation \
  -type f ! -name '*.py' -delete
find "$SITE" -type d \( -name tests -o -name __pycache__ \) -prune -exec rm -rf {} +
tar -czf .device_site.tar.gz -C "$WORK" jaxlab_site
echo "wrote .device_site.tar.gz ($(du -h .device_site.tar.gz | cut -f1)," \
  "$(du -sh "$SITE" | cut -f1) unpacked)"
