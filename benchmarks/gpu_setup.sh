#!/usr/bin/env bash
# Wheels the Humanoid GPU run needs on a machine that already has Python 3.12 and jax (cuda) but no
# network.  Two steps:
#   bash benchmarks/gpu_setup.sh download   # here (has PyPI): cp312 manylinux x86_64 wheels -> wheelhouse/ (~48 MB)
#   bash benchmarks/gpu_setup.sh install    # there: installs, without dependencies, only what is not importable
# The wheels are the `rl` extra's run-time closure minus jax and what jax itself brings (numpy, scipy,
# ml_dtypes, opt_einsum); versions as in constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# "requirement import-name" pairs
PKGS=(
  "brax==0.14.2 brax" "mujoco==3.17.0 mujoco" "mujoco-mjx==3.17.0 mujoco.mjx" "flax==0.12.8 flax"
  "optax==0.2.8 optax" "jaxopt==0.8.5 jaxopt" "trimesh==5.2.0 trimesh" "etils==1.15.0 etils"
  "absl-py==2.5.1 absl" "glfw==2.11.0 glfw" "PyOpenGL==3.1.10 OpenGL" "pillow==13.0.0 PIL"
  "msgpack==1.2.4 msgpack" "rich==15.0.0 rich" "Pygments==2.21.0 pygments" "markdown-it-py==4.3.0 markdown_it"
  "mdurl==0.1.2 mdurl" "typing_extensions==4.16.0 typing_extensions" "PyYAML==6.0.3 yaml"
  "treescope==0.1.10 treescope" "tqdm==4.70.1 tqdm" "ml_collections==1.1.0 ml_collections"
)
case "${1:-}" in
  download)
    mkdir -p wheelhouse
    reqs=(); for p in "${PKGS[@]}"; do reqs+=("${p%% *}"); done
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d wheelhouse "${reqs[@]}"
    du -sh wheelhouse ;;
  install)
    need=()
    for p in "${PKGS[@]}"; do
      $PY -c "import ${p##* }" 2>/dev/null || need+=("${p%% *}")
    done
    if [ ${#need[@]} -gt 0 ]; then
      $PY -m pip install -q --no-index --find-links wheelhouse --no-deps "${need[@]}"
    fi
    $PY -c "import brax, mujoco.mjx, flax, optax, jax; print('ready: jax', jax.__version__, jax.devices())" ;;
  *) echo "usage: $0 download|install" >&2; exit 2 ;;
esac
